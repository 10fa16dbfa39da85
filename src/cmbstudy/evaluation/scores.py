"""Lesion-wise detection scores: P/R/F1/FP per subject, VALDO aggregates, FROC, ARIA-H confusion.

Pure numpy; no torch and no file I/O. Counts are per subject ``(n_tp, n_fp,
n_fn)`` of one matching rule (:mod:`cmbstudy.evaluation.matching`); pooled
scores sum them over subjects before dividing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.aria_h import ARIA_H_CATEGORIES, aria_h_category
from ..errors import InputError

__all__ = [
    "DETECTION_METRICS",
    "ARIA_H_CATEGORIES",
    "FROC_FP_RATES",
    "FrocCurve",
    "aria_h_category",
    "detection_scores",
    "summarize_detection",
    "summarize_valdo",
    "compute_froc",
    "merge_froc_curves",
    "sensitivity_at_fp_rates",
    "compute_aria_h_confusion",
]

#: Lesion-wise detection scores, in the order every table of the study prints them.
DETECTION_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "fp_per_subject")
#: False positives per subject at which the FROC sensitivity is reported.
FROC_FP_RATES: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
# FP rates equal to a reported rate up to floating-point rounding count as within it.
_RATE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class FrocCurve:
    """Free-response ROC operating points, from the strictest threshold (origin) to the loosest.

    Attributes:
        thresholds: (m,) score thresholds; a lesion is kept when its score >= threshold
            (the first point, +inf, keeps nothing).
        fp_per_subject: (m,) false positives per subject, non-decreasing.
        sensitivity: (m,) true positives / reference lesions, non-decreasing.
    """

    thresholds: np.ndarray
    fp_per_subject: np.ndarray
    sensitivity: np.ndarray


def detection_scores(
    n_tp: int, n_fp: int, n_fn: int, nan_f1_without_reference: bool = False
) -> tuple[float, float, float]:
    """(precision, recall, F1) from counts.

    precision = tp / (tp + fp), NaN with no predictions; recall = tp / (tp + fn),
    NaN with no reference; F1 = 2 tp / (2 tp + fp + fn), NaN when both are empty
    (so F1 = 0 when only false positives or only false negatives exist). With
    ``nan_f1_without_reference`` (VALDO rule) F1 is NaN whenever the reference is empty.
    """
    if min(n_tp, n_fp, n_fn) < 0:
        raise ValueError(f"negative lesion count in (tp, fp, fn) = {(n_tp, n_fp, n_fn)}")
    precision = n_tp / (n_tp + n_fp) if n_tp + n_fp else float("nan")
    recall = n_tp / (n_tp + n_fn) if n_tp + n_fn else float("nan")
    denom = 2 * n_tp + n_fp + n_fn
    f1 = 2 * n_tp / denom if denom else float("nan")
    if nan_f1_without_reference and n_tp + n_fn == 0:
        f1 = float("nan")
    return float(precision), float(recall), float(f1)


def summarize_detection(counts: Sequence[tuple[int, int, int]]) -> dict:
    """Pool per-subject (n_tp, n_fp, n_fn) over lesions.

    Returns:
        dict with precision, recall, f1 (see :func:`detection_scores`, on the summed
        counts), fp_per_subject (summed fp / subjects, NaN with no subjects), n_tp,
        n_fp, n_fn, n_subjects.

    Raises:
        ValueError: a count is negative.
    """
    arr = np.asarray(list(counts), dtype=np.int64).reshape(-1, 3)
    if (arr < 0).any():
        raise ValueError(f"negative lesion count in {arr[(arr < 0).any(axis=1)][0].tolist()}")
    tp, fp, fn = (int(v) for v in arr.sum(axis=0))
    precision, recall, f1 = detection_scores(tp, fp, fn)
    n_subjects = int(arr.shape[0])
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fp_per_subject": fp / n_subjects if n_subjects else float("nan"),
        "n_tp": tp,
        "n_fp": fp,
        "n_fn": fn,
        "n_subjects": n_subjects,
    }


def summarize_valdo(
    f1_per_subject: Sequence[float], n_pred: Sequence[int], n_ref: Sequence[int]
) -> dict:
    """VALDO aggregates: median and quartiles of per-subject F1 (NaN subjects left out) and of |count difference|.

    The challenge's summary (``aggregate_summarise.py`` of ``valdo-eval-2021``) reports
    the 0.25, 0.5 and 0.75 quantiles (linear interpolation) of each per-subject measure;
    the mean |count difference| is kept beside them for Table 6's comparison.

    Returns:
        dict with median_f1, iqr_f1 (q1, q3), n_subjects_with_f1, median_abs_count_difference,
        iqr_abs_count_difference (q1, q3), mean_abs_count_difference.
    """
    f1 = np.asarray(f1_per_subject, dtype=float)
    defined = f1[~np.isnan(f1)]
    diff = np.abs(np.asarray(n_pred, dtype=float) - np.asarray(n_ref, dtype=float))
    nan3 = (float("nan"),) * 3
    q1, median, q3 = (float(v) for v in np.percentile(defined, [25, 50, 75])) if defined.size else nan3
    d1, d_median, d3 = (float(v) for v in np.percentile(diff, [25, 50, 75])) if diff.size else nan3
    return {
        "median_f1": median,
        "iqr_f1": (q1, q3),
        "n_subjects_with_f1": int(defined.size),
        "median_abs_count_difference": d_median,
        "iqr_abs_count_difference": (d1, d3),
        "mean_abs_count_difference": float(diff.mean()) if diff.size else float("nan"),
    }


def compute_froc(
    per_subject_pred_scores: Sequence[np.ndarray],
    per_subject_is_tp: Sequence[np.ndarray],
    n_ref_total: int,
    n_subjects: int,
) -> FrocCurve:
    """FROC: sensitivity against false positives per subject as the lesion-score threshold falls.

    Lesions are matched once (at the detection threshold); each predicted lesion
    keeps its outcome and is counted when its score (max probability) is >= the
    threshold. At the lowest threshold every lesion is kept, so the last point
    equals the pooled recall and FP/subject of the matched predictions.

    Args:
        per_subject_pred_scores: per subject, (n_pred,) scores of predicted lesions.
        per_subject_is_tp: per subject, (n_pred,) bool outcomes (:func:`pred_is_tp`).
        n_ref_total: reference lesions over all subjects (sensitivity denominator).
        n_subjects: subjects evaluated (FP denominator).

    Raises:
        ValueError: lengths differ, or n_ref_total / n_subjects is not positive.
    """
    if len(per_subject_pred_scores) != len(per_subject_is_tp):
        raise ValueError("per-subject scores and outcomes have different lengths")
    if n_ref_total <= 0 or n_subjects <= 0:
        raise ValueError(f"FROC needs n_ref_total > 0 and n_subjects > 0, got {n_ref_total}, {n_subjects}")
    scores = np.concatenate([np.asarray(s, dtype=float).ravel() for s in per_subject_pred_scores] + [np.zeros(0)])
    is_tp = np.concatenate([np.asarray(t, dtype=bool).ravel() for t in per_subject_is_tp] + [np.zeros(0, bool)])
    if scores.shape != is_tp.shape:
        raise ValueError("a subject has different numbers of scores and outcomes")
    thresholds = np.unique(scores)[::-1]
    order = np.argsort(-scores, kind="stable")
    cum_tp = np.cumsum(is_tp[order])
    cum_fp = np.cumsum(~is_tp[order])
    # index of the last lesion with score >= each threshold
    last = np.searchsorted(-scores[order], -thresholds, side="right") - 1
    tps = np.concatenate([[0], cum_tp[last]]) if thresholds.size else np.zeros(1)
    fps = np.concatenate([[0], cum_fp[last]]) if thresholds.size else np.zeros(1)
    return FrocCurve(
        thresholds=np.concatenate([[np.inf], thresholds]),
        fp_per_subject=fps / float(n_subjects),
        sensitivity=tps / float(n_ref_total),
    )


def sensitivity_at_fp_rates(
    curve: FrocCurve, fp_rates: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0)
) -> np.ndarray:
    """Sensitivity at given FP/subject rates: the best operating point with FP/subject <= rate.

    A step function (no interpolation); beyond the curve's last point the last
    sensitivity is kept, since lowering the threshold further adds no lesion.
    """
    rates = np.asarray(fp_rates, dtype=float)
    out = np.empty(rates.shape)
    for i, rate in enumerate(rates):
        ok = curve.fp_per_subject <= rate + _RATE_TOLERANCE
        out[i] = curve.sensitivity[ok].max() if ok.any() else 0.0
    return out


def merge_froc_curves(curves: Sequence[FrocCurve], n_ref: Sequence[int], n_subjects: Sequence[int]) -> FrocCurve:
    """One FROC over disjoint subject sets (e.g. the validation subjects of several folds).

    Each curve is a step function of the score threshold; at every threshold of any
    curve, true positives (sensitivity x reference lesions) and false positives
    (FP/subject x subjects) are summed over curves. Written by hand: no maintained
    library merges FROC curves from their operating points.

    Args:
        curves: FROC curves, each from the strictest threshold (+inf) to the loosest.
        n_ref: reference lesions behind each curve; n_subjects: subjects behind each curve.

    Raises:
        InputError: no curve, or the three sequences differ in length.
    """
    if not curves or not len(curves) == len(n_ref) == len(n_subjects):
        raise InputError(f"merge_froc_curves needs as many curves, n_ref and n_subjects, got "
                         f"{len(curves)}, {len(n_ref)}, {len(n_subjects)}")
    if len(curves) == 1:
        return curves[0]
    grid = np.unique(np.concatenate([np.asarray(c.thresholds, float) for c in curves]))[::-1]
    tp = np.zeros(grid.size)
    fp = np.zeros(grid.size)
    for curve, refs, subjects in zip(curves, n_ref, n_subjects):
        thresholds = np.asarray(curve.thresholds, float)
        # index of the loosest operating point whose threshold is still >= t (thresholds fall along the curve)
        index = np.searchsorted(-thresholds, -grid, side="right") - 1
        tp += np.asarray(curve.sensitivity, float)[index] * refs
        fp += np.asarray(curve.fp_per_subject, float)[index] * subjects
    total_ref, total_subjects = max(int(sum(n_ref)), 1), max(int(sum(n_subjects)), 1)
    return FrocCurve(grid, fp / total_subjects, tp / total_ref)


def compute_aria_h_confusion(true_counts: Sequence[int], pred_counts: Sequence[int]) -> np.ndarray:
    """(4, 4) int confusion of ARIA-H categories: rows reference, columns predicted (paper Table 6).

    Raises:
        ValueError: lengths differ or a count is negative (the message names it).
    """
    true_counts, pred_counts = list(true_counts), list(pred_counts)
    if len(true_counts) != len(pred_counts):
        raise ValueError(f"{len(true_counts)} true counts but {len(pred_counts)} predicted counts")
    index = {name: i for i, name in enumerate(ARIA_H_CATEGORIES)}
    out = np.zeros((4, 4), dtype=np.int64)
    for t, p in zip(true_counts, pred_counts):
        out[index[aria_h_category(t)], index[aria_h_category(p)]] += 1
    return out
