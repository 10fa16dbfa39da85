"""Beyond the paper (notebook 12): what the false positives are, results per site and modality,
the VALDO rule beside the paper's, bootstrap intervals, inference times, and the time of the build.

The false positives are named after the synthetic cohort's mimic labels
(``sub-<id>_label-mimic_dseg``: 1 vein, 2 calcification, 3 air-tissue artefact,
4 deep-nuclei iron). The subjects and slices the figures show come from
:mod:`cmbstudy.study.examples`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ...config import Profile
from ...data.datasets import Subject, load_subjects
from ...data.prediction_folder import PREDICTION_INFO
from ...data.run_folder import RESULT
from ...errors import InputError
from ...evaluation.scores import DETECTION_METRICS, summarize_detection
from ...formatting import as_float
from ...synth.phantom import MIMIC_LABELS
from ..examples import find_prediction_dir, load_subject_evaluation
from ..paper import INFERENCE_SECONDS, TABLE2
from ..runs import (
    RUNS_DIR,
    TIMINGS_FILE,
    VAL_PREDICTIONS,
    dataset_label,
    load_runs,
    pooled_evaluation,
    run_name,
)
from .format import ComparedRow, compare_with_paper, summary_scores

__all__ = [
    "NO_MIMIC",
    "RULE_METRICS",
    "classify_false_positives",
    "compute_fp_mimic_table",
    "summarize_fp_mimics",
    "summarize_by_group",
    "load_inference_times",
    "StudyTimings",
    "load_study_timings",
    "BeyondThePaper",
    "summarize_beyond",
]

#: Category of a false positive with no mimic label within the distance.
NO_MIMIC = "other (no mimic nearby)"
#: The rows of the rule table: pooled scores, then the VALDO aggregates.
RULE_METRICS: tuple[str, ...] = (*DETECTION_METRICS, "median_f1", "f1_q1", "f1_q3", "mean_abs_count_difference")
_PAPER_HARDWARE = "paper (RTX A5000 Ada)"


def classify_false_positives(
    pred_labels: np.ndarray,
    fp: Sequence[int],
    mimic: np.ndarray,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    max_distance_mm: float = 3.0,
    names: Mapping[int, str] = MIMIC_LABELS,
) -> pd.DataFrame:
    """Name the mimic each false-positive component lies on or next to.

    A component overlapping mimic voxels takes the label most of its overlapping
    voxels carry; otherwise the label of the mimic voxel nearest to any of its
    voxels (Euclidean, in mm) when that is within ``max_distance_mm``; otherwise
    :data:`NO_MIMIC`.

    Args:
        pred_labels: (X, Y, Z) predicted instance labels, 1..n (``VolumeEvaluation.pred.labels``).
        fp: 0-based indices of the false-positive components (``Match.fp``).
        mimic: (X, Y, Z) mimic label map (0 none), same grid.
        spacing_mm: voxel size along X, Y, Z (mm).
        max_distance_mm: farthest a mimic may lie from a component that is named after it.
        names: mimic label -> name.

    Returns:
        One row per false positive: lesion (label), n_voxels, mimic (name), overlap
        (fraction of the component's voxels on that mimic), distance_mm (0 when overlapping,
        NaN when no mimic was found).

    Raises:
        InputError: shapes differ, or an index names no component.
    """
    labels, mim = np.asarray(pred_labels), np.asarray(mimic).astype(np.int64)
    if labels.shape != mim.shape or labels.ndim != 3:
        raise InputError(f"predicted labels {labels.shape} and mimic map {mim.shape} must be 3D on one grid")
    n = int(labels.max(initial=0))
    bad = [int(i) for i in fp if not 0 <= int(i) < n]
    if bad:
        raise InputError(f"false-positive indices {bad} name no component (the prediction has {n})")
    columns = ["lesion", "n_voxels", "mimic", "overlap", "distance_mm"]
    if not len(fp):
        return pd.DataFrame(columns=columns)
    if mim.any():
        distance, nearest = ndimage.distance_transform_edt(mim == 0, sampling=spacing_mm, return_indices=True)
        nearest_label = mim[tuple(nearest)]
    rows = []
    for index in (int(i) for i in fp):
        voxels = labels == index + 1
        on = mim[voxels]
        name, overlap, dist = NO_MIMIC, 0.0, float("nan")
        if (on > 0).any():
            values, counts = np.unique(on[on > 0], return_counts=True)
            best = int(values[np.argmax(counts)])
            name, overlap, dist = names.get(best, f"label {best}"), float(counts.max() / on.size), 0.0
        elif mim.any():
            d = distance[voxels]
            closest = int(np.argmin(d))
            if d[closest] <= max_distance_mm:
                best = int(nearest_label[voxels][closest])
                name, dist = names.get(best, f"label {best}"), float(d[closest])
        rows.append({"lesion": index + 1, "n_voxels": int(voxels.sum()), "mimic": name, "overlap": overlap,
                     "distance_mm": dist})
    return pd.DataFrame(rows, columns=columns)


def compute_fp_mimic_table(
    pred_dirs: Sequence[Path], data_root: Path, max_distance_mm: float = 3.0, rule: str = "paper"
) -> pd.DataFrame:
    """Every false positive of the predicted subjects, named after the nearest mimic (synthetic cohort).

    Args:
        pred_dirs: prediction folders (e.g. every fold's ``pred-val``); a subject is read from the
            first folder that holds it; subjects with no prediction are skipped.
        data_root: the reference dataset.
        max_distance_mm: see :func:`classify_false_positives`.
        rule: matching rule deciding which components are false positives.

    Returns:
        :func:`classify_false_positives` rows with subject_id, site and modality; subjects
        without a mimic map contribute rows with mimic "unknown (no mimic labels)".

    Raises:
        InputError: as :func:`cmbstudy.study.examples.load_subject_evaluation`.
    """
    frames = []
    for subject in load_subjects(Path(data_root)):
        folder = find_prediction_dir(subject.subject_id, pred_dirs)
        if folder is None or subject.mask_path is None:
            continue
        _, evaluation, mimic = load_subject_evaluation(subject, folder, rule)
        if mimic is None:
            table = pd.DataFrame({"lesion": evaluation.match.fp + 1, "mimic": "unknown (no mimic labels)"})
        else:
            spacing = nib.as_closest_canonical(nib.load(subject.image_path)).header.get_zooms()[:3]
            table = classify_false_positives(evaluation.pred.labels, evaluation.match.fp, mimic, spacing,
                                             max_distance_mm)
        frames.append(table.assign(subject_id=subject.subject_id, site=subject.site, modality=subject.modality))
    columns = ["subject_id", "site", "modality", "lesion", "n_voxels", "mimic", "overlap", "distance_mm"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)


def summarize_fp_mimics(table: pd.DataFrame, n_subjects: int) -> pd.DataFrame:
    """False positives per mimic type: count, share of all false positives, per subject.

    Args:
        table: :func:`compute_fp_mimic_table` rows.
        n_subjects: subjects evaluated (for the per-subject rate).

    Returns:
        Index every mimic name of :data:`MIMIC_LABELS` (but "none") and :data:`NO_MIMIC`,
        plus any other name found; columns false_positives, share, per_subject.

    Raises:
        InputError: ``n_subjects`` < 1 or no ``mimic`` column.
    """
    if n_subjects < 1 or "mimic" not in table.columns:
        raise InputError(f"need a mimic column and at least one subject (got {n_subjects})")
    order = [name for label, name in sorted(MIMIC_LABELS.items()) if label > 0] + [NO_MIMIC]
    order += [name for name in table["mimic"].unique() if name not in order]
    counts = table["mimic"].value_counts().reindex(order, fill_value=0).astype(int)
    total = int(counts.sum())
    return pd.DataFrame({
        "false_positives": counts,
        "share": counts / total if total else np.nan,
        "per_subject": counts / n_subjects,
    }).rename_axis("mimic")


def summarize_by_group(per_subject: pd.DataFrame, subjects: Sequence[Subject], by: str) -> pd.DataFrame:
    """Pooled precision, recall, F1 and FP per subject within each site or modality.

    Args:
        per_subject: one row per subject with subject_id, n_tp, n_fp, n_fn, n_ref
            (``EvaluationReport.per_subject``).
        subjects: the dataset's subjects (their ``site`` and ``modality``).
        by: "site" or "modality".

    Returns:
        One row per group (sorted): n_subjects, n_ref, n_tp, n_fp, n_fn, precision, recall, f1, fp_per_subject.

    Raises:
        InputError: ``by`` is not an attribute, or a subject of ``per_subject`` is not in ``subjects``.
    """
    if by not in ("site", "modality"):
        raise InputError(f"group by {by!r}: use 'site' or 'modality'")
    attribute = {s.subject_id: getattr(s, by) for s in subjects}
    rows = pd.DataFrame(per_subject)
    unknown = sorted(set(rows["subject_id"]) - set(attribute))
    if unknown:
        raise InputError(f"subjects {unknown[:5]} are not in the dataset: evaluate against the same data root")
    out = []
    for group, part in rows.groupby(rows["subject_id"].map(attribute), sort=True):
        summary = summarize_detection(part[["n_tp", "n_fp", "n_fn"]].to_numpy())
        out.append({by: group, "n_subjects": summary["n_subjects"], "n_ref": int(part["n_ref"].sum()),
                    **{k: summary[k] for k in ("n_tp", "n_fp", "n_fn", "precision", "recall", "f1",
                                               "fp_per_subject")}})
    return pd.DataFrame(out).set_index(by)


def load_inference_times(results_dir: Path) -> pd.DataFrame:
    """Inference time of every run's validation predictions, the paper's figure last.

    Reads ``RESULTS/runs/<run>/pred-val/prediction.json`` (model + post-processing per
    subject, preprocessing excluded, and the device) and ``result.json`` (parameters).

    Returns:
        One row per run (sorted by name): run, model, device, n_subjects, seconds_per_subject,
        n_params; then the paper's row (``INFERENCE_SECONDS`` on an RTX A5000 Ada).
        The device column tells which rows may be compared.

    Raises:
        InputError: a prediction.json that is not JSON.
    """
    rows = []
    for info in sorted(Path(results_dir, RUNS_DIR).glob(f"*/{VAL_PREDICTIONS}/{PREDICTION_INFO}")):
        run = info.parent.parent
        try:
            data = json.loads(info.read_text())
            result = json.loads((run / RESULT).read_text()) if (run / RESULT).is_file() else {}
        except json.JSONDecodeError as exc:
            raise InputError(f"{info} or its run's result.json is not JSON ({exc}): rerun that step") from exc
        rows.append({"run": run.name, "model": data.get("model"), "device": data.get("device"),
                     "n_subjects": data.get("n_subjects"),
                     "seconds_per_subject": as_float(data.get("seconds_per_subject")),
                     "n_params": result.get("n_params")})
    rows.append({"run": _PAPER_HARDWARE, "model": "rlk_unet_cbam", "device": "RTX A5000 Ada (paper)",
                 "n_subjects": 72, "seconds_per_subject": INFERENCE_SECONDS, "n_params": None})
    return pd.DataFrame(rows).set_index("run")


@dataclass(frozen=True)
class StudyTimings:
    """The runner's ``RESULTS/study_timings.tsv``: the seconds of the latest run of each step.

    Attributes:
        table: per step, how many runs it made and their seconds; note: markdown when there is no file.
        training_minutes, study_minutes: the training step's minutes and all steps' minutes.
    """

    table: pd.DataFrame
    training_minutes: float
    study_minutes: float
    note: str


def load_study_timings(results_dir: Path | str) -> StudyTimings:
    """The timings of the study's steps (empty, with a note, when the notebooks ran outside the runner)."""
    path = Path(results_dir) / TIMINGS_FILE
    timings = (pd.read_csv(path, sep="\t") if path.is_file()
               else pd.DataFrame(columns=["step", "instance", "seconds"]))
    steps = timings[timings["step"] != "total"]
    table = steps.groupby("step", sort=False)["seconds"].agg(["count", "sum"]).rename(
        columns={"count": "runs", "sum": "seconds"}).round(1)
    note = "**No timings**: this notebook was run outside `cmbstudy study`." if timings.empty else ""
    return StudyTimings(table, float(steps.loc[steps["step"] == "03_training", "seconds"].sum()) / 60,
                        float(steps["seconds"].sum()) / 60, note)


def _rule_scores(summary: Mapping[str, Any] | None) -> dict[str, float]:
    summary = summary or {}
    q1, q3 = summary.get("iqr_f1") or (None, None)
    return {**summary_scores(summary), "median_f1": as_float(summary.get("median_f1")),
            "f1_q1": as_float(q1), "f1_q3": as_float(q3),
            "mean_abs_count_difference": as_float(summary.get("mean_abs_count_difference"))}


@dataclass(frozen=True)
class BeyondThePaper:
    """What notebook 12 shows, on the cross-validated predictions of the main network.

    Attributes:
        notes: markdown on missing runs and on a dataset without mimic labels ("" when neither).
        n_subjects: subjects evaluated; scores: pooled paper-rule :func:`summary_scores`.
        fp: every false positive named after its mimic; fp_summary: per mimic type; fp_share_vein:
            the share on veins (NaN without false positives on a labelled cohort).
        by_site, by_modality: pooled scores per group (None without runs).
        valdo: the VALDO-rule aggregates (:data:`RULE_METRICS`); rule_table: both rules beside the paper;
            ci_table: our pooled scores with their intervals beside the paper's.
        times: inference seconds of every run; main_seconds, main_device: the main network's.
        timings: the runner's step timings.
    """

    dataset: str
    notes: str
    n_subjects: int
    scores: Mapping[str, float]
    fp: pd.DataFrame
    fp_summary: pd.DataFrame
    fp_share_vein: float
    by_site: pd.DataFrame | None
    by_modality: pd.DataFrame | None
    valdo: Mapping[str, float]
    rule_table: pd.DataFrame
    ci_table: pd.DataFrame
    times: pd.DataFrame
    main_seconds: float
    main_device: str
    timings: StudyTimings


def summarize_beyond(results_dir: Path | str, data_root: Path | str, profile: Profile) -> BeyondThePaper:
    """Everything notebook 12 shows, from the main network's runs on ``study.cv_folds``."""
    main = profile.study.main
    folds = [f for f in profile.study.cv_folds if f < profile.train.n_folds]
    runs, missing = load_runs(results_dir, [run_name(main, f) for f in folds])
    found = sorted(r.fold for r in runs.values())
    report = pooled_evaluation(results_dir, main, found, data_root) if runs else None
    valdo = pooled_evaluation(results_dir, main, found, data_root, rule="valdo") if runs else None
    per_subject = pd.DataFrame(report.per_subject if report else [],
                               columns=["subject_id", "n_ref", "n_tp", "n_fp", "n_fn"])
    subjects = load_subjects(Path(data_root))
    notes = []
    if missing:
        notes.append(f"**Runs not found** (not trained by this profile, or notebook 03 not run): {', '.join(missing)}.")
    has_mimics = any("mimic" in s.extra_paths for s in subjects)
    if not has_mimics:
        notes.append(f"**No mimic labels** in {data_root}: a real dataset does not say what its false positives "
                     "are; the breakdown below is empty.")
    fp = (compute_fp_mimic_table([runs[n].run_dir / VAL_PREDICTIONS for n in sorted(runs)], data_root)
          if runs and has_mimics else pd.DataFrame(columns=["mimic"]))
    fp_summary = summarize_fp_mimics(fp, max(len(per_subject), 1))
    label, paper_row = dataset_label(data_root), TABLE2.get(main, {})
    ours, ours_valdo = _rule_scores(report.summary if report else None), _rule_scores(valdo.summary if valdo else None)
    times = load_inference_times(results_dir)
    main_times = times[times.index.isin(list(runs))]
    return BeyondThePaper(
        dataset=label, notes="\n\n".join(notes), n_subjects=len(per_subject), scores=summary_scores(report.summary if report else None),
        fp=fp, fp_summary=fp_summary,
        fp_share_vein=float(fp_summary.loc["vein", "share"]) if "vein" in fp_summary.index else math.nan,
        by_site=summarize_by_group(per_subject, subjects, "site").round(3) if len(per_subject) else None,
        by_modality=summarize_by_group(per_subject, subjects, "modality").round(3) if len(per_subject) else None,
        valdo=ours_valdo,
        rule_table=compare_with_paper([ComparedRow("paper rule", ours, paper_row),
                                       ComparedRow("VALDO rule", ours_valdo)], label, RULE_METRICS),
        ci_table=compare_with_paper([ComparedRow("pooled", ours, paper_row)], label),
        times=times.round(3),
        main_seconds=float(main_times["seconds_per_subject"].mean()) if len(main_times) else math.nan,
        main_device=", ".join(sorted(main_times["device"].astype(str).unique())) or "n/a",
        timings=load_study_timings(results_dir),
    )
