"""One look or two, measured: a run's network on the test cohort, single-stage and with the second look.

    python benchmarks/second_look.py --run results/runs/rlk_unet_cbam-fold0 \
        --data results/data/synthetic-quick --test results/data/synthetic-quick-test [--refit] [--set k=v]

For each run: its validation subjects (``split.json``) and every test subject
are predicted once; the second look is the run's own (``second_look.joblib``),
or, with ``--refit`` or where the run has none, trained here on the run's
validation subjects exactly as training does (:func:`cmbstudy.training.second_look.fit_second_look`),
never on a test subject. It prints, for one stage and two: pooled P / R / F1 /
FP per subject with 95% bootstrap intervals over test subjects, recall of
CMBs <= 3 mm, Spearman rho of the counts, ARIA-H category agreement; the
candidates' recall ceiling overall and by size and their number per subject, and
both for those past the second look's screen, which it looks at twice;
the false positives by kind (the synthetic cohort's mimic labels, read only to
name errors); and the second look's seconds per subject. ``--json`` writes it all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from cmbstudy.config import apply_overrides
from cmbstudy.data.aria_h import aria_h_category
from cmbstudy.data.datasets import load_subjects
from cmbstudy.data.io import load_magnitude_and_phase, load_mask
from cmbstudy.data.run_folder import load_run_split
from cmbstudy.evaluation.evaluate import load_lesion_table
from cmbstudy.evaluation.lesions import find_lesions, voxel_volume_mm3
from cmbstudy.evaluation.matching import match_paper
from cmbstudy.evaluation.operating_point import choose_operating_point
from cmbstudy.evaluation.stats import bootstrap_detection_ci, spearman_with_ci
from cmbstudy.evaluation.subsets import SMALL_DIAMETER_MM, compute_reference_diameters
from cmbstudy.inference.candidates import find_candidates, keep_best
from cmbstudy.inference.model_store import load_detection_model
from cmbstudy.inference.second_look import candidate_features, find_detections
from cmbstudy.inference.sliding_window import predict_volume
from cmbstudy.preprocessing.cache import default_cache_dir, load_preprocessed
from cmbstudy.study.tables.errors import BRAIN_EDGE, EDGE_VOXELS, SIZE_BINS_MM, classify_false_positives
from cmbstudy.training.second_look import SecondLookCase, fit_second_look


def _probabilities(model, volumes, device):
    out = []
    for volume in volumes:
        prob = predict_volume(model.network, volume, model.profile.train.val_batch_size, device,
                              model.profile.train.patch_size)
        out.append(np.clip(volume.restore(prob, 1), 0, 1).astype(np.float32))
    return out


def _in_plane_edge(brain: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    inside = np.stack([ndimage.distance_transform_edt(brain[:, :, z]) for z in range(brain.shape[2])], axis=2)
    index = np.clip(np.rint(centroids).astype(int), 0, np.array(brain.shape) - 1)
    return inside[tuple(index.T)] if len(index) else np.zeros(0)


def _curve_counts(second, point, candidates, features, ref_centroids, small, distance) -> tuple[int, ...]:
    """(tp, fp, fn, tp of small CMBs) of one test subject under a second look (candidate centres, not regions)."""
    scores = second.score(features)
    kept = keep_best(candidates.centres, scores, point.second_look, distance)
    match = match_paper(candidates.centres[kept], ref_centroids, distance)
    tp_small = int(np.isin(match.pairs[:, 1], np.flatnonzero(small)).sum()) if len(match.pairs) else 0
    return match.n_tp, match.n_fp, match.n_fn, tp_small


def measure(run: Path, data: Path, test: Path, refit: bool, overrides: list[str], device: torch.device,
            curve: list[int] = ()) -> dict:
    model = load_detection_model(run, with_second_look=not refit)  # refitted: the stored one is not read
    profile = apply_overrides(model.profile, overrides)
    ev = profile.evaluation
    cache = default_cache_dir(run)
    pool = {s.subject_id: s for s in load_subjects(data)}
    val_subjects = [pool[i] for i in load_run_split(run, "val")]
    test_subjects = load_subjects(test)
    second, point = model.second_look, model.operating_point
    report = {}
    fits = {}
    if refit or second is None or curve:
        volumes = load_preprocessed(val_subjects, profile.preprocess, cache, progress=False)
        probs = _probabilities(model, volumes, device)
        refs = [np.asarray(load_mask(s.mask_path).dataobj) for s in val_subjects]
        brains = [v.input_brain() for v in volumes]
        single = choose_operating_point(probs, refs, brains, ev.match_distance_voxels, ev.connectivity)
        cases = []
        for p, v, b, r, s in zip(probs, volumes, brains, refs, val_subjects):
            image, phase = load_magnitude_and_phase(s.image_path)
            cases.append(SecondLookCase(p, image, b, v.input_voxel_mm, r, phase))
        train_subjects = [pool[i] for i in load_run_split(run, "train")]
        blobs = []
        for v, s in zip(load_preprocessed(train_subjects, profile.preprocess, cache, progress=False), train_subjects):
            image, phase = load_magnitude_and_phase(s.image_path)
            blobs.append(SecondLookCase(np.zeros(v.geometry.original_shape, np.float32), image, v.input_brain(),
                                        v.input_voxel_mm, np.asarray(load_mask(s.mask_path).dataobj), phase))
        for n in curve:  # the learning curve: the image model on the first n training subjects
            fits[n] = fit_second_look(cases, blobs[:n], profile.second_look, single, ev.match_distance_voxels,
                                      profile.seed)
        if refit or second is None:
            second, point, report = fit_second_look(cases, blobs, profile.second_look, single,
                                                    ev.match_distance_voxels, profile.seed)
            model = dataclasses.replace(model, second_look=second, calibrated=point)
    curve_counts = {n: [] for n in fits}
    rows = {"one stage": [], "two stages": []}
    ceiling, n_candidates, n_looked, seconds_second = [], [], [], []
    fp_kinds = {"one stage": [], "two stages": []}
    for subject in test_subjects:
        volume = load_preprocessed([subject], profile.preprocess, cache, progress=False)[0]
        prob = _probabilities(model, [volume], device)[0]
        brain, (image, phase) = volume.input_brain(), load_magnitude_and_phase(subject.image_path)
        reference = np.asarray(load_mask(subject.mask_path).dataobj)
        affine = np.asarray(volume.geometry.original_affine)
        ref = find_lesions(reference, 0.5, ev.connectivity)
        table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
        diam = compute_reference_diameters(ref, voxel_volume_mm3(affine), table)
        mimic = np.asarray(nib.load(subject.extra_paths["mimic"]).dataobj) if "mimic" in subject.extra_paths else None
        candidates = find_candidates(prob, image, brain, volume.input_voxel_mm, second.settings.candidate_threshold,
                                     second.settings.log_candidates, ev.connectivity)
        features = candidate_features(candidates, prob, brain, volume.input_voxel_mm, phase)
        looked = second.looked_at(features)  # past the screen
        gaps = (np.linalg.norm(candidates.centres[:, None] - ref.centroids[None], axis=2)
                if candidates.n and ref.n else np.full((candidates.n, ref.n), np.inf))
        ceiling.append(pd.DataFrame({
            "found": gaps.min(axis=0, initial=np.inf) <= ev.match_distance_voxels,
            "found past the screen": gaps[looked].min(axis=0, initial=np.inf) <= ev.match_distance_voxels,
            "diameter": diam}))
        n_candidates.append(candidates.n)
        n_looked.append(int(looked.sum()))
        if fits:
            for n, (fitted, fitted_point, _) in fits.items():
                curve_counts[n].append(_curve_counts(fitted, fitted_point, candidates, features, ref.centroids,
                                                     diam <= SMALL_DIAMETER_MM, ev.match_distance_voxels))
        for name, rule in (("one stage", point.single_stage), ("two stages", point)):
            start = time.perf_counter()
            found = find_detections(prob, rule, brain, image, volume.input_voxel_mm, second, phase)
            if name == "two stages":
                seconds_second.append(time.perf_counter() - start)
            match = match_paper(found.lesions.centroids, ref.centroids, ev.match_distance_voxels)
            small = diam <= SMALL_DIAMETER_MM
            tp_small = int(np.isin(match.pairs[:, 1], np.flatnonzero(small)).sum()) if len(match.pairs) else 0
            rows[name].append({"subject": subject.subject_id, "tp": match.n_tp, "fp": match.n_fp, "fn": match.n_fn,
                               "n_ref": ref.n, "n_pred": found.lesions.n, "small": int(small.sum()),
                               "tp_small": tp_small})
            if mimic is not None and match.n_fp:
                kinds = classify_false_positives(found.lesions.labels, match.fp, mimic,
                                                 tuple(float(v) for v in volume.input_voxel_mm))
                edge = _in_plane_edge(brain, found.lesions.centroids[match.fp]) <= EDGE_VOXELS
                kinds.loc[edge, "mimic"] = BRAIN_EDGE
                fp_kinds[name].extend(kinds["mimic"].tolist())
    out = {"run": str(run), "second_look": report or dict(second.validation), "operating_point": point.to_json()}
    n = len(test_subjects)
    for name, per in rows.items():
        frame = pd.DataFrame(per)
        ci = bootstrap_detection_ci(frame[["tp", "fp", "fn"]].to_numpy())
        rho = spearman_with_ci(frame["n_ref"], frame["n_pred"])
        aria = np.mean([aria_h_category(a) == aria_h_category(b) for a, b in zip(frame["n_ref"], frame["n_pred"])])
        out[name] = {**{k: list(v) for k, v in ci.items()}, "recall_small": frame["tp_small"].sum() / max(frame["small"].sum(), 1),
                     "spearman_rho": rho[:3], "aria_h_agreement": float(aria),
                     "fp_by_kind": pd.Series(fp_kinds[name], dtype=object).value_counts().div(n).round(3).to_dict()}
    found = pd.concat(ceiling)
    bins = pd.cut(found["diameter"], SIZE_BINS_MM)
    out["recall_ceiling"] = float(found["found"].mean())
    out["recall_ceiling_small"] = float(found.loc[found["diameter"] <= SMALL_DIAMETER_MM, "found"].mean())
    out["recall_ceiling_by_size"] = {str(k): round(float(v), 3) for k, v in found.groupby(bins, observed=True)["found"].mean().items()}
    out["candidates_per_subject"] = float(np.mean(n_candidates))
    out["looked_at_per_subject"] = float(np.mean(n_looked))
    out["recall_ceiling_past_the_screen"] = float(found["found past the screen"].mean())
    out["recall_ceiling_small_past_the_screen"] = float(
        found.loc[found["diameter"] <= SMALL_DIAMETER_MM, "found past the screen"].mean())
    out["learning_curve"] = {}
    for n, counts in curve_counts.items():
        tp, fp, fn, tp_small = np.asarray(counts).sum(axis=0)
        small_total = sum(int((d <= SMALL_DIAMETER_MM).sum()) for d in [f["diameter"] for f in ceiling])
        out["learning_curve"][n] = {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "precision": tp / max(tp + fp, 1),
                                    "recall": tp / max(tp + fn, 1), "fp_per_subject": fp / len(counts),
                                    "recall_small": tp_small / max(small_total, 1),
                                    "validation_f1": fits[n][2].get("classifiers", {}).get(
                                        fits[n][2].get("chosen"), {}).get("f1", float("nan"))}
    out["second_look_seconds_per_subject"] = float(np.median(seconds_second))
    return out


def _print(result: dict) -> None:
    print(f"\n{result['run']}")
    print(f"  candidates per subject {result['candidates_per_subject']:.1f}; recall ceiling "
          f"{result['recall_ceiling']:.3f} (<= 3 mm: {result['recall_ceiling_small']:.3f}); by size "
          f"{result['recall_ceiling_by_size']}")
    print(f"  past the screen, looked at twice: {result['looked_at_per_subject']:.1f} per subject; recall ceiling "
          f"{result['recall_ceiling_past_the_screen']:.3f} (<= 3 mm: {result['recall_ceiling_small_past_the_screen']:.3f})")
    print(f"  second look: {result['second_look_seconds_per_subject']:.3f} s per subject (median); "
          f"operating point {result['operating_point']['threshold']:g} / {result['operating_point']['min_voxels']} vox"
          f" / second look {result['operating_point']['second_look']}")
    for name in ("one stage", "two stages"):
        r = result[name]
        fmt = lambda k: f"{r[k][0]:.3f} [{r[k][1]:.3f}, {r[k][2]:.3f}]"  # noqa: E731
        print(f"  {name:10s} P {fmt('precision')}  R {fmt('recall')}  F1 {fmt('f1')}  FP/subj {fmt('fp_per_subject')}"
              f"  R<=3mm {r['recall_small']:.3f}  rho {r['spearman_rho'][0]:.3f}  ARIA-H {r['aria_h_agreement']:.3f}")
        print(f"             FP by kind per subject: {r['fp_by_kind']}")
    for n, r in result.get("learning_curve", {}).items():
        print(f"  learning curve: image model on {n:3d} training subjects: test F1 {r['f1']:.3f} (P {r['precision']:.3f},"
              f" R {r['recall']:.3f}, {r['fp_per_subject']:.2f} FP/subject, R<=3mm {r['recall_small']:.3f}); "
              f"out-of-fold validation F1 {r['validation_f1']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="the training pool the runs were trained on")
    parser.add_argument("--test", required=True, type=Path, help="the test cohort")
    parser.add_argument("--refit", action="store_true", help="train the second look here on the run's validation subjects")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--learning-curve", default="", help="training-subject counts of the image model, e.g. "
                        "6,12,24,48: the second look refitted on each (kept candidates' centres are matched)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    curve = [int(n) for n in args.learning_curve.split(",") if n.strip()]
    results = [measure(run, args.data, args.test, args.refit, args.overrides, torch.device("cpu"), curve)
               for run in args.run]
    for result in results:
        _print(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
