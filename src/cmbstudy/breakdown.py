"""Per-subject and per-run analyses of the study's figure notebooks (08, 12).

Everything here reads what training, ``cmbstudy predict`` and ``cmbstudy evaluate``
wrote (``RESULTS/runs/<run>/``, see :mod:`cmbstudy.results`) and the dataset,
and returns plain tables or arrays that the notebooks print or plot:

- agreement of the ARIA-H confusion (fraction on the diagonal, linear weighted kappa);
- false positives broken down by the synthetic cohort's mimic labels
  (``sub-<id>_label-mimic_dseg``: 1 vein, 2 calcification, 3 air-tissue
  artefact, 4 deep-nuclei iron);
- results per site and per modality, a bootstrap-CI table, the paper rule beside
  the VALDO rule, inference times of every run.

The subjects and slices the figures show, and the arrays behind them, come from
:mod:`cmbstudy.examples`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from .datasets import Subject, load_subjects
from .errors import InputError
from .examples import find_prediction_dir, load_subject_evaluation
from .metrics import DETECTION_METRICS, summarize_detection
from .paper import INFERENCE_SECONDS, PAPER_DATASET_LABEL
from .synth.phantom import MIMIC_LABELS

__all__ = [
    "NO_MIMIC",
    "compute_agreement",
    "classify_false_positives",
    "compute_fp_mimic_table",
    "summarize_fp_mimics",
    "summarize_by_group",
    "format_ci_table",
    "format_rule_table",
    "load_inference_times",
]

#: Category of a false positive with no mimic label within the distance.
NO_MIMIC = "other (no mimic nearby)"
_PAPER_HARDWARE = "paper (RTX A5000 Ada)"


def compute_agreement(confusion: np.ndarray) -> dict[str, float]:
    """Agreement of a k x k confusion of ordered categories (rows reference, columns predicted).

    Args:
        confusion: (k, k) non-negative subject counts, e.g. the ARIA-H confusion (paper Table 6).

    Returns:
        ``n`` subjects, ``agreement`` (fraction on the diagonal) and ``weighted_kappa``
        (Cohen's kappa with linear weights |i - j| / (k - 1), from scikit-learn; NaN
        when scikit-learn is not installed or the kappa is undefined, e.g. one category only).

    Raises:
        InputError: not a square matrix of non-negative counts.
    """
    arr = np.asarray(confusion)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or (arr < 0).any() or not np.all(arr == np.round(arr)):
        raise InputError(f"confusion must be a square matrix of non-negative counts, got {arr.tolist()}")
    n = int(arr.sum())
    out = {"n": float(n), "agreement": float(np.trace(arr)) / n if n else float("nan"), "weighted_kappa": float("nan")}
    try:
        from sklearn.metrics import cohen_kappa_score
    except ImportError:  # optional dependency: the notebook says the kappa needs scikit-learn
        return out
    rows, cols = np.nonzero(arr)
    if n and (len(set(rows)) > 1 or len(set(cols)) > 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            kappa = cohen_kappa_score(
                rows, cols, labels=list(range(arr.shape[0])), weights="linear", sample_weight=arr[rows, cols]
            )
        out["weighted_kappa"] = float(kappa) if np.isfinite(kappa) else float("nan")
    return out


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
        InputError: as :func:`cmbstudy.examples.load_subject_evaluation`.
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


def format_ci_table(summary: Mapping[str, Any], paper: Mapping[str, float], dataset_label: str) -> pd.DataFrame:
    """Pooled metrics with their subject-bootstrap 95% CIs, the paper's figure beside them.

    Args:
        summary: ``EvaluationReport.summary`` (precision, recall, f1, fp_per_subject, ci95).
        paper: the paper's values of the same metrics (e.g. ``paper.TABLE2[...]``).
        dataset_label: our data, e.g. "synthetic cohort".

    Returns:
        Rows precision, recall, f1, fp_per_subject; columns the paper's value, ours, CI low, CI high.
    """
    ours = f"ours ({dataset_label})"
    rows = []
    for metric in DETECTION_METRICS:
        lo, hi = (summary.get("ci95", {}).get(metric) or (None, None))
        rows.append({"metric": metric, PAPER_DATASET_LABEL: paper.get(metric, np.nan),
                     ours: _num(summary.get(metric)), "95% CI low": _num(lo), "95% CI high": _num(hi)})
    return pd.DataFrame(rows).set_index("metric")


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def format_rule_table(
    paper_rule: Mapping[str, Any], valdo_rule: Mapping[str, Any], paper: Mapping[str, float], dataset_label: str
) -> pd.DataFrame:
    """Our results under the paper's matching rule beside the VALDO challenge rule, and the paper's.

    Args:
        paper_rule, valdo_rule: ``EvaluationReport.summary`` of the same predictions under each rule.
        paper: the paper's pooled metrics (paper rule).
        dataset_label: our data, e.g. "synthetic cohort".

    Returns:
        Rows: pooled precision, recall, f1, fp_per_subject, then median per-subject F1,
        its IQR (q1, q3) and the mean absolute count difference; columns: the paper's,
        ours (paper rule: centroids within 4 voxels), ours (VALDO rule: 5 mm).
    """
    metrics = ["precision", "recall", "f1", "fp_per_subject", "median_f1", "f1_q1", "f1_q3",
               "mean_abs_count_difference"]

    def values(summary: Mapping[str, Any]) -> list[float]:
        q1, q3 = summary.get("iqr_f1") or (None, None)
        extra = {"f1_q1": q1, "f1_q3": q3}
        return [_num(extra[m] if m in extra else summary.get(m)) for m in metrics]

    frame = pd.DataFrame({
        PAPER_DATASET_LABEL: [paper.get(m, np.nan) for m in metrics],
        f"ours ({dataset_label}), paper rule": values(paper_rule),
        f"ours ({dataset_label}), VALDO rule": values(valdo_rule),
    }, index=pd.Index(metrics, name="metric"))
    return frame


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
    for info in sorted(Path(results_dir, "runs").glob("*/pred-val/prediction.json")):
        run = info.parent.parent
        try:
            data = json.loads(info.read_text())
            result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
        except json.JSONDecodeError as exc:
            raise InputError(f"{info} or its run's result.json is not JSON ({exc}): rerun that step") from exc
        rows.append({"run": run.name, "model": data.get("model"), "device": data.get("device"),
                     "n_subjects": data.get("n_subjects"), "seconds_per_subject": _num(data.get("seconds_per_subject")),
                     "n_params": result.get("n_params")})
    rows.append({"run": _PAPER_HARDWARE, "model": "rlk_unet_cbam", "device": "RTX A5000 Ada (paper)",
                 "n_subjects": 72, "seconds_per_subject": INFERENCE_SECONDS, "n_params": None})
    return pd.DataFrame(rows).set_index("run")
