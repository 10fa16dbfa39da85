"""The packaged model as a user meets it: `cmbstudy detect` on a fresh synthetic cohort, raw and skull-stripped.

A fresh cohort (its own seed, both modalities, every site; no scan of it was seen
in training or calibration) is written twice: as generated, with its brain masks,
and skull-stripped (the image times its brain mask, as VALDO ships its scans)
without any brain mask, so that detection has to find the brain itself. Both are
run through :func:`cmbstudy.inference.detect.detect_path` with the packaged model at
its calibrated operating point and scored against the reference CMB masks with
the paper's rule: pooled precision, recall, F1 with a bootstrap 95% interval,
false positives per subject, and how many false positives lie within 2 voxels of
the brain's edge (the reference brain mask) against elsewhere.

Writes ``OUT/packaged_model.tsv`` and prints it.

Usage::

    python benchmarks/packaged_model.py --out benchmarks/results/packaged_model
    python benchmarks/packaged_model.py --model runs/packaged --seed 7 --n-subjects 72
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from cmbstudy.config import load_profile
from cmbstudy.data.datasets import load_subjects
from cmbstudy.data.io import load_mask, save_nifti, write_text_atomically
from cmbstudy.evaluation.evaluate import evaluate_volume
from cmbstudy.evaluation.stats import bootstrap_detection_ci
from cmbstudy.inference.detect import detect_path
from cmbstudy.inference.model_store import load_detection_model
from cmbstudy.synth import make_cohort

__all__ = ["skull_strip", "score_detections", "main"]

EDGE_VOXELS = 2.0  # a false positive this close to the brain's edge (in-plane voxels) is an edge one


def skull_strip(root: Path, out: Path) -> Path:
    """A copy of the dataset at ``root`` with every image multiplied by its brain mask and no brain mask file."""
    if (out / "participants.tsv").is_file():
        return out
    shutil.copytree(root, out, ignore=shutil.ignore_patterns("*_label-brain_mask.nii.gz"))
    for subject in load_subjects(root):
        image = nib.load(subject.image_path)
        brain = np.asarray(load_mask(subject.brain_mask_path, what="brain mask").dataobj) > 0
        stripped = np.where(brain, np.asarray(image.dataobj, dtype=np.float32), 0.0)
        save_nifti(stripped, image.affine, out / Path(subject.image_path).relative_to(root), np.float32)
    return out


def _edge_distance(brain: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.distance_transform_edt(brain[:, :, z]) for z in range(brain.shape[2])], axis=2)


def score_detections(reference_root: Path, detections: Path, n_bootstrap: int = 1000) -> dict:
    """Paper-rule scores of ``detect`` outputs against the references, and their false positives by place."""
    counts, edge_fp, inner_fp = [], 0, 0
    for subject in load_subjects(reference_root):
        anat = detections / f"sub-{subject.subject_id}" / "anat"
        summary = json.loads((anat / f"sub-{subject.subject_id}_summary.json").read_text())
        probability = np.asarray(nib.load(anat / f"sub-{subject.subject_id}_desc-cmb_probseg.nii.gz").dataobj)
        reference = load_mask(subject.mask_path, what="reference CMB mask")
        evaluation = evaluate_volume(probability, np.asarray(reference.dataobj), reference.affine, rule="paper",
                                     threshold=summary["threshold"], min_voxels=summary.get("min_voxels", 1))
        counts.append((evaluation.match.n_tp, evaluation.match.n_fp, evaluation.match.n_fn))
        brain = np.asarray(load_mask(subject.brain_mask_path, what="brain mask").dataobj) > 0
        inside = _edge_distance(brain)
        centroids = np.rint(evaluation.pred.centroids[evaluation.match.fp]).astype(int).reshape(-1, 3)
        near = inside[tuple(np.clip(centroids, 0, np.array(brain.shape) - 1).T)] <= EDGE_VOXELS
        edge_fp, inner_fp = edge_fp + int(near.sum()), inner_fp + int((~near).sum())
    ci = bootstrap_detection_ci(np.asarray(counts), n_resamples=n_bootstrap, seed=0)
    row = {m: ci[m][0] for m in ("precision", "recall", "f1", "fp_per_subject")}
    row.update(f1_ci_low=ci["f1"][1], f1_ci_high=ci["f1"][2], n_subjects=len(counts),
               n_tp=int(sum(c[0] for c in counts)), n_fp=int(sum(c[1] for c in counts)),
               n_fn=int(sum(c[2] for c in counts)), fp_at_edge=edge_fp, fp_elsewhere=inner_fp)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="run folder or .pt (default: the packaged model)")
    parser.add_argument("--profile", default="quick", help="synthesis settings of the fresh cohort")
    parser.add_argument("--seed", type=int, default=7, help="master seed of the fresh cohort")
    parser.add_argument("--n-subjects", type=int, default=72)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/packaged_model"))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    raw = out / "cohort"
    if not (raw / "participants.tsv").is_file():
        print(make_cohort(raw, load_profile(args.profile), n_subjects=args.n_subjects, seed=args.seed,
                          label_prefix="fresh"))
    stripped = skull_strip(raw, out / "cohort-skull-stripped")
    model = load_detection_model(args.model)
    print(f"model: {model.name}, operating point {model.operating_point.to_json()}")
    rows = []
    for name, root in (("as generated, brain masks given", raw), ("skull-stripped, no brain mask", stripped)):
        detections = out / f"detect-{root.name}"
        detect_path(root, detections, model=model, overwrite=True, progress=True)
        rows.append({"input": name, **score_detections(raw, detections)})
    table = pd.DataFrame(rows).set_index("input")
    write_text_atomically(out / "packaged_model.tsv", table.to_csv(sep="\t"))
    print(table.round(3).T.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
