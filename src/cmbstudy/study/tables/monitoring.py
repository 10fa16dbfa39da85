"""Monitoring ARIA-H (beyond the paper): new CMBs between a baseline and a follow-up, on synthetic pairs.

The study's main network at the first comparison fold, with its lesion rule
(its second look where it trained one), monitors the profile's follow-up pairs
(:mod:`cmbstudy.synth.follow_up`: ``synth.n_follow_up_pairs`` subjects from the
seed ``synth.test_seed + 1``, a cohort no choice has seen) with
:func:`cmbstudy.inference.monitor.monitor_path`, and
:func:`cmbstudy.evaluation.monitoring.evaluate_monitoring` scores it against
the pairs' lesion tables: the paired decision against the naive one, the
severity per pair, and how both degrade with head motion and a change of site.

Monitoring pairs two scans, so a vein or a calcification that the detector
keeps on both is persistent, not new: its best second-look threshold need not
be the one chosen for a single scan. Where the run has a second look, its
threshold for monitoring is chosen on development pairs of their own seed
(``synth.n_development_pairs`` from ``synth.test_seed + 2``, never the
chapter's pairs): the threshold of the second look's grid with the best pooled
F1 of new CMBs (:func:`cmbstudy.evaluation.monitoring.choose_threshold`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ...config import Profile
from ...evaluation.monitoring import evaluate_monitoring
from ...inference.model_store import DetectionModel, load_detection_model
from ...inference.monitor_files import (PAIR_LESIONS, PAIR_REGISTERED, choose_monitoring_threshold, find_pairs,
                                        monitor_path, monitoring_point)
from ...inference.pipeline import describe_rule
from ...synth.follow_up import SEVERITIES, make_follow_up_cohort
from ..runs import load_runs, monitored_run

__all__ = ["Monitoring", "PairExample", "summarize_monitoring", "follow_up_root", "development_root",
           "MONITORING_DIR"]

#: Where the study writes ``cmbstudy monitor``'s outputs, under the results folder.
MONITORING_DIR = "monitoring"
_ROTATION_BINS = (0.0, 2.0, 4.0, math.inf)  # degrees of the follow-up's head rotation


def follow_up_root(results_dir: Path | str, profile: Profile) -> Path:
    """The study's follow-up pairs: ``RESULTS/data/synthetic-<profile>-followup``."""
    return Path(results_dir) / "data" / f"synthetic-{Path(profile.name).stem}-followup"


def development_root(results_dir: Path | str, profile: Profile) -> Path:
    """The pairs monitoring's threshold is chosen on: ``RESULTS/data/synthetic-<profile>-followup-development``."""
    return follow_up_root(results_dir, profile).with_name(follow_up_root(results_dir, profile).name + "-development")


def _development_choice(model: DetectionModel, results_dir: Path, profile: Profile, device: str
                        ) -> tuple[float | None, pd.DataFrame]:
    """Monitoring's threshold chosen on the profile's development pairs (the module docstring); (None, empty) for
    a model without a second look."""
    if model.second_look is None:
        return None, pd.DataFrame()
    root = development_root(results_dir, profile)
    make_follow_up_cohort(root, profile, n_subjects=profile.synth.n_development_pairs,
                          seed=profile.synth.test_seed + 2, overwrite=True, progress=False)
    return choose_monitoring_threshold(model, root, device, profile.evaluation.match_distance_voxels,
                                       progress=False)


@dataclass(frozen=True)
class PairExample:
    """One new CMB the paired decision found, for the figure: the baseline and the registered follow-up."""

    subject_id: str
    baseline: np.ndarray
    followup: np.ndarray
    rows: list[dict]
    voxel_mm: np.ndarray


@dataclass(frozen=True)
class Monitoring:
    """What the monitoring chapter shows (None / empty where the main run is missing; ``note`` says why)."""

    note: str
    run: str
    method: str
    summary: dict
    scores: pd.DataFrame  # paired and naive: precision, recall, F1 with its interval, false "new" per pair
    false_new: pd.DataFrame  # false "new" per pair by cause, per rule
    severity: pd.DataFrame  # reference severity (rows) x ours (columns), pairs
    by_condition: pd.DataFrame  # per head-motion bin and site change: pairs, recall of new CMBs, false new
    per_pair: pd.DataFrame
    seconds_per_pair: float
    example: PairExample | None
    second_look: float | None = None  # monitoring's second-look threshold (None: one stage)
    single_scan_second_look: float | None = None  # the run's own, chosen for one scan on its validation subjects
    development: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # scores per threshold on them


def _example(out: Path, pairs_root: Path, per_pair: pd.DataFrame) -> PairExample | None:
    pairs = {f"sub-{p.subject_id}": p for p in find_pairs(pairs_root)}
    for subject in per_pair.loc[per_pair["tp"] > 0, "subject_id"]:
        table = pd.read_csv(out / subject / PAIR_LESIONS, sep="\t")
        new = table[table["status"] == "new"]
        if new.empty:
            continue
        pair = pairs[subject]
        image = nib.load(pair.baseline)
        return PairExample(subject, np.asarray(image.dataobj, dtype=np.float32),
                           np.asarray(nib.load(out / subject / PAIR_REGISTERED).dataobj, dtype=np.float32),
                           [dict(r) for _, r in new.head(3).iterrows()],
                           np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0))
    return None


def _by_condition(per_pair: pd.DataFrame) -> pd.DataFrame:
    frame = per_pair.assign(
        motion=pd.cut(per_pair["rotation_deg"], _ROTATION_BINS, right=False,
                      labels=["rotation < 2°", "rotation 2–4°", "rotation ≥ 4°"]),
        site=np.where(per_pair["site_change"], "another site", "same site"),
        right=per_pair["severity"] == per_pair["reference_severity"])
    rows = []
    for column in ("motion", "site"):
        for value, group in frame.groupby(column, observed=True):
            tp, fn = int(group["tp"].sum()), int(group["fn"].sum())
            rows.append({"condition": str(value), "pairs": len(group),
                         "recall of new CMBs": tp / (tp + fn) if tp + fn else float("nan"),
                         "false new per pair": float(group["fp"].mean()),
                         "naive false new per pair": float(group["naive_fp"].mean()),
                         "severity right": float(group["right"].mean())})
    return pd.DataFrame(rows).set_index("condition")


def summarize_monitoring(results_dir: Path | str, profile: Profile, device: str = "auto") -> Monitoring:
    """Write the profile's follow-up pairs, monitor them with the main run and score them (see the module)."""
    results_dir = Path(results_dir)
    name = monitored_run(profile)
    runs, missing = load_runs(results_dir, [name])
    empty = pd.DataFrame()
    if missing:
        return Monitoring(f"**Run not found:** {name} (run notebook 03 for it).", name, "", {}, empty, empty, empty,
                          empty, empty, float("nan"), None)
    model = load_detection_model(runs[name].run_dir)
    threshold, development = _development_choice(model, results_dir, profile, device)
    pairs_root = follow_up_root(results_dir, profile)
    make_follow_up_cohort(pairs_root, profile, overwrite=True, progress=False)
    out = results_dir / MONITORING_DIR
    monitor_path(pairs_root, None, out, model=model, device=device, overwrite=True, progress=False,
                 second_look=threshold)
    scored = evaluate_monitoring(out, pairs_root, distance=profile.evaluation.match_distance_voxels,
                                 n_bootstrap=profile.evaluation.n_bootstrap, seed=profile.seed)
    s, per_pair = scored.summary, scored.per_pair
    scores = pd.DataFrame([
        {"rule": "paired decision", "precision": s["precision"], "recall": s["recall"], "F1": s["f1"],
         "F1 95% CI": f"[{s['f1_ci_low']:.3f}, {s['f1_ci_high']:.3f}]",
         "false new per pair": s["false_new_per_pair"]},
        {"rule": "naive (on the follow-up, not on the baseline)", "precision": s["naive_precision"],
         "recall": s["naive_recall"], "F1": s["naive_f1"],
         "F1 95% CI": f"[{s['naive_f1_ci_low']:.3f}, {s['naive_f1_ci_high']:.3f}]",
         "false new per pair": s["naive_false_new_per_pair"]},
    ]).set_index("rule")
    n = len(per_pair)
    false_new = pd.DataFrame({
        "paired decision": [per_pair["fp_persistent"].sum() / n, per_pair["fp_no_cmb"].sum() / n],
        "naive": [per_pair["naive_fp_persistent"].sum() / n, per_pair["naive_fp_no_cmb"].sum() / n],
    }, index=pd.Index(["on a persistent CMB", "no CMB there"], name="false new per pair"))
    severity = pd.crosstab(pd.Categorical(per_pair["reference_severity"], SEVERITIES),
                           pd.Categorical(per_pair["severity"], SEVERITIES), dropna=False,
                           rownames=["reference"], colnames=["ours"])
    seconds = [json.loads((out / s_id / "monitor.json").read_text())["seconds"]["total"]
               for s_id in per_pair["subject_id"]]
    return Monitoring("", name, describe_rule(monitoring_point(model, second_look=threshold), model.second_look), s, scores, false_new,
                      severity, _by_condition(per_pair), per_pair, float(np.median(seconds)),
                      _example(out, pairs_root, per_pair), threshold,
                      None if model.second_look is None else model.second_look.threshold, development)
