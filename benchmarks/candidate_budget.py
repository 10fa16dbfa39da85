"""How many candidates the first look needs: the recall ceiling against the blob detector's budget per volume.

    python benchmarks/candidate_budget.py --run results/runs/rlk_unet_cbam-fold0 \
        --data results/data/synthetic-quick [--budgets 0 25 50 100 200 400]

The second look can only keep a CMB that some candidate lies near. For each
budget (the most blobs per volume, ``second_look.log_candidates``), every
subject of the run's training pool (its training and validation subjects, never
a test subject) is given the run's candidates under that budget
(:func:`cmbstudy.inference.candidates.find_candidates`, on the network's map as
``detect`` computes it, :func:`cmbstudy.inference.pipeline.detect_preprocessed`,
once per subject), and it prints the share of CMBs with a candidate within the
match distance (the recall ceiling), overall and for CMBs of at most 3 mm, and
the candidates per subject. ``--json`` writes the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cmbstudy.data.datasets import load_subjects
from cmbstudy.data.io import load_mask, load_scan
from cmbstudy.data.run_folder import load_run_split
from cmbstudy.evaluation.evaluate import load_lesion_table
from cmbstudy.evaluation.lesions import find_lesions, voxel_volume_mm3
from cmbstudy.evaluation.subsets import SMALL_DIAMETER_MM, compute_reference_diameters
from cmbstudy.inference.candidates import find_candidates
from cmbstudy.inference.model_store import load_detection_model
from cmbstudy.inference.pipeline import detect_preprocessed
from cmbstudy.preprocessing.cache import default_cache_dir, load_preprocessed


def measure(run: Path, data: Path, budgets: list[int], device: torch.device) -> pd.DataFrame:
    """One row per budget: recall ceiling overall and for CMBs <= 3 mm, candidates per subject."""
    model = load_detection_model(run)
    profile, ev = model.profile, model.profile.evaluation
    threshold = (model.second_look.settings if model.second_look is not None else profile.second_look).candidate_threshold
    pool = {s.subject_id: s for s in load_subjects(data)}
    subjects = [pool[i] for i in [*load_run_split(run, "train"), *load_run_split(run, "val")]]
    found = {k: [] for k in budgets}
    counts = {k: [] for k in budgets}
    small = []
    for subject in tqdm(subjects, desc="training pool", unit="subject"):
        volume = load_preprocessed([subject], profile.preprocess, default_cache_dir(run), progress=False)[0]
        mapped = detect_preprocessed(model, volume, [], device)  # the map alone: no rule to apply
        image = np.asarray(load_scan(subject.image_path)[0].dataobj)
        ref = find_lesions(np.asarray(load_mask(subject.mask_path).dataobj), 0.5, ev.connectivity)
        table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
        affine = np.asarray(volume.geometry.original_affine)
        small.append(compute_reference_diameters(ref, voxel_volume_mm3(affine), table) <= SMALL_DIAMETER_MM)
        for budget in budgets:
            c = find_candidates(mapped.probability, image, mapped.brain, mapped.voxel_mm, threshold, budget,
                                ev.connectivity)
            gaps = (np.linalg.norm(c.centres[:, None] - ref.centroids[None], axis=2).min(axis=0)
                    if c.n and ref.n else np.full(ref.n, np.inf))
            found[budget].append(gaps <= ev.match_distance_voxels)
            counts[budget].append(c.n)
    small_all = np.concatenate(small)
    rows = []
    for budget in budgets:
        hit = np.concatenate(found[budget])
        rows.append({"blob budget": budget, "candidates per subject": float(np.mean(counts[budget])),
                     "recall ceiling": float(hit.mean()), "recall ceiling <= 3 mm": float(hit[small_all].mean()),
                     "CMBs": int(hit.size), "CMBs <= 3 mm": int(small_all.sum())})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="the training pool the run was trained on")
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 25, 50, 100, 200, 400])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    table = measure(args.run, args.data, sorted(set(args.budgets)), torch.device(args.device))
    print(table.round(3).to_string(index=False))
    if args.json:
        args.json.write_text(json.dumps(table.to_dict(orient="records"), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
