"""The second look's learning curve: its image model against the number of subjects it learns from.

    python benchmarks/second_look_curve.py --seed 4 --n-subjects 300 --out benchmarks/results/second_look_curve \
        [--data DIR] [--sizes 30 60 120 240] [--held-out 60] [--repeats 2]

The second look's image model (:mod:`cmbstudy.training.second_look`) learns
from the blob candidates of training subjects, found with the network's map
left empty. This takes a fresh synthetic cohort (its own seed, both
modalities, every site; or ``--data``, any labelled dataset: its brain masks,
else the non-zero voxels, as ``detect`` takes a skull-stripped scan), finds
every subject's blob candidates with their features and labels
(:func:`~cmbstudy.training.second_look.collect_candidates`, the settings of the
profile's ``second_look``), and keeps the first ``--held-out`` subjects for
scoring only. For each size N, ``--repeats`` seeded draws of N other subjects
train the image model as :func:`~cmbstudy.training.second_look.fit_second_look`
does (:func:`~cmbstudy.training.second_look.fit_image_model`). It prints, per
size: the CMBs learnt from; the average precision of the held-out candidates' scores (scikit-learn's, over
candidates that are a CMB or none); and the pooled paper-rule precision,
recall, F1 and FP per subject of the held-out subjects at the score threshold
with the best F1 there (:func:`~cmbstudy.training.second_look.best_threshold`:
an upper bound, since the threshold is chosen where it is scored). Then, for
the largest size's first draw at that threshold, the held-out CMBs that a
candidate reached but the model missed, against those it found: medians of
their contrast, the ring's SD, the blob response and the dark extent across
slices. That is the recall which more subjects do not buy. ``OUT/second_look_curve.tsv``
holds the rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score
from tqdm import tqdm

from cmbstudy.config import SecondLookConfig, load_profile
from cmbstudy.data.datasets import load_subjects
from cmbstudy.data.io import load_mask, load_phase, load_scan, write_text_atomically
from cmbstudy.inference.second_look import FEATURES, IMAGE_COLUMNS
from cmbstudy.synth import make_cohort
from cmbstudy.training.second_look import (CandidateSet, SecondLookCase, best_threshold, collect_candidates,
                                           fit_image_model)

__all__ = ["blob_candidates", "learning_curve", "missed_profile", "main"]

#: Features whose medians describe the CMBs the image model misses against those it finds.
PROFILED = ("contrast", "ring_sd", "blob_response", "z_extent_mm")


def blob_candidates(root: Path, settings: SecondLookConfig, match_distance: float) -> list[CandidateSet]:
    """Per subject of ``root``, its blob candidates (no network) under ``settings``, with features and labels."""
    found = []
    for subject in tqdm(load_subjects(root), desc="blob candidates", unit="subject"):
        if subject.mask_path is None:
            continue
        scan = load_scan(subject.image_path)[0]
        image = np.asarray(scan.dataobj, dtype=np.float32)
        brain = (np.asarray(load_mask(subject.brain_mask_path, what="brain mask").dataobj) > 0
                 if subject.brain_mask_path is not None else image != 0)
        case = SecondLookCase(np.zeros(image.shape, np.float32), image, brain,
                              tuple(float(v) for v in scan.header.get_zooms()[:3]),
                              np.asarray(load_mask(subject.mask_path).dataobj), load_phase(subject.image_path, scan))
        found.append(collect_candidates([case], settings, match_distance))
    return found


def _pooled(sets: list[CandidateSet]) -> CandidateSet:
    """One candidate set of several one-subject sets."""
    return CandidateSet(np.concatenate([s.features for s in sets]), np.concatenate([s.labels for s in sets]),
                        np.concatenate([np.full(len(s.labels), i) for i, s in enumerate(sets)]),
                        [s.centres[0] for s in sets], [s.references[0] for s in sets], float("nan"))


def learning_curve(sets: list[CandidateSet], held_out: int, sizes: list[int], repeats: int, match_distance: float
                   ) -> tuple[pd.DataFrame, dict]:
    """One row per size and draw; and the largest size's first draw: its held-out scores and threshold."""
    scored, pool = _pooled(sets[:held_out]), sets[held_out:]
    known = scored.labels >= 0
    rows, last = [], {}
    for size in sizes:
        if size > len(pool):
            raise SystemExit(f"size {size} exceeds the {len(pool)} subjects left after {held_out} held out")
        for draw in range(repeats):
            chosen = np.random.default_rng(draw).permutation(len(pool))[:size]
            learnt = _pooled([pool[i] for i in chosen])
            model = fit_image_model(learnt, seed=draw)
            scores = model.predict_proba(scored.features[:, IMAGE_COLUMNS])[:, 1]
            threshold, summary = best_threshold(scored, scores, match_distance)
            rows.append({"subjects": size, "draw": draw, "CMBs learnt from": int((learnt.labels == 1).sum()),
                         "average precision": average_precision_score(scored.labels[known] == 1, scores[known]),
                         "threshold": threshold, **summary})
            if size == max(sizes) and draw == 0:
                last = {"scores": scores, "threshold": threshold}
    return pd.DataFrame(rows), {"scored": scored, **last}


def missed_profile(scored: CandidateSet, scores: np.ndarray, threshold: float) -> pd.DataFrame:
    """Medians of :data:`PROFILED` for the CMB candidates scored below ``threshold`` (missed) and at or above it."""
    cmb = scored.labels == 1
    column = {name: i for i, name in enumerate(FEATURES)}
    rows = []
    for name, pick in (("found", cmb & (scores >= threshold)), ("missed", cmb & (scores < threshold)),
                       ("not a CMB, scored >= 0.1", (scored.labels == 0) & (scores >= 0.1))):
        rows.append({"candidates": name, "n": int(pick.sum()),
                     **{f: float(np.nanmedian(scored.features[pick, column[f]])) if pick.any() else float("nan")
                        for f in PROFILED}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a labelled dataset (default: a fresh cohort)")
    parser.add_argument("--profile", default="quick", help="synthesis and second-look settings")
    parser.add_argument("--seed", type=int, default=4, help="master seed of the fresh cohort")
    parser.add_argument("--n-subjects", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=60)
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 60, 120, 240])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/second_look_curve"))
    args = parser.parse_args(argv)
    out, profile = args.out.resolve(), load_profile(args.profile)
    root = args.data
    if root is None:
        root = out / "cohort"
        if not (root / "participants.tsv").is_file():
            print(make_cohort(root, profile, n_subjects=args.n_subjects, seed=args.seed, label_prefix="curve"))
    match_distance = profile.evaluation.match_distance_voxels
    sets = blob_candidates(root, profile.second_look, match_distance)
    table, last = learning_curve(sets, args.held_out, sorted(set(args.sizes)), args.repeats, match_distance)
    reached = last["scored"].labels == 1
    n_cmbs = sum(len(s.references[0]) for s in sets[:args.held_out])
    print(f"held out: {args.held_out} subjects, {n_cmbs} CMBs, {int(reached.sum())} reached by a blob "
          f"(recall ceiling {reached.sum() / max(n_cmbs, 1):.3f})")
    print(table.round(3).to_string(index=False))
    print(f"\nthe held-out CMB candidates at {max(args.sizes)} subjects (draw 0, threshold {last['threshold']:g}):")
    print(missed_profile(last["scored"], last["scores"], last["threshold"]).round(3).to_string(index=False))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "second_look_curve.tsv", table.to_csv(sep="\t", index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
