"""Lesion-wise detection metrics: components, matching rules, P/R/F1/FPavg, FROC, ARIA-H.

Pure numpy + scipy; no torch and no file I/O. Volumes are 3D arrays indexed
(X, Y, Z) as read from NIfTI; centroids are in voxel index space unless the
name says ``_mm``.

Two matching rules are implemented (see :func:`match_paper`, :func:`match_valdo`):

* **Paper rule** (Cho et al. 2025, Methods, "Evaluation metrics"): 3D
  connected components of the thresholded prediction; a predicted lesion is a
  true positive when its centroid lies within 4 voxels (Euclidean distance in
  voxel index space, inclusive) of a reference lesion's centroid; matching is
  one-to-one.
* **VALDO rule** (Sudre et al. 2024, "Where is VALDO?", Task 2): prediction
  thresholded at 0.5, 3D connected components, centre-of-mass distance in mm;
  each prediction is assigned to its nearest reference, the closest of several
  claimants is the true positive and the others are false positives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .errors import ConfigError, InputError

__all__ = [
    "DETECTION_METRICS",
    "ARIA_H_CATEGORIES",
    "CONNECTIVITIES",
    "Lesions",
    "Match",
    "FrocCurve",
    "find_lesions",
    "centroids_to_mm",
    "equivalent_diameter_mm",
    "match_paper",
    "match_valdo",
    "pred_is_tp",
    "subset_counts",
    "detection_scores",
    "summarize_detection",
    "summarize_valdo",
    "compute_froc",
    "sensitivity_at_fp_rates",
    "aria_h_category",
    "compute_aria_h_confusion",
]

#: Lesion-wise detection scores, in the order every table of the study prints them.
DETECTION_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "fp_per_subject")

ARIA_H_CATEGORIES: tuple[str, ...] = ("0", "1-4", "5-9", ">=10")
CONNECTIVITIES: tuple[int, ...] = (6, 18, 26)
# Distances equal to the threshold up to floating-point rounding count as within it.
_DISTANCE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Lesions:
    """Connected components of one volume.

    Attributes:
        labels: (X, Y, Z) int32 instance labels, 0 background, 1..n lesions.
        centroids: (n, 3) float, unweighted centre of each component in voxel index space.
        n_voxels: (n,) int, voxels per component.
        max_prob: (n,) float, the highest probability inside each component (1.0 for binary input).
    """

    labels: np.ndarray
    centroids: np.ndarray
    n_voxels: np.ndarray
    max_prob: np.ndarray

    @property
    def n(self) -> int:
        """Number of lesions."""
        return int(self.n_voxels.shape[0])


@dataclass(frozen=True)
class Match:
    """Outcome of matching predicted to reference lesions in one volume.

    Attributes:
        pairs: (k, 2) int, rows (pred index, ref index) of true positives, sorted by pred index.
        fp: (n_fp,) int, predicted indices not matched (false positives).
        fn: (n_fn,) int, reference indices not matched (false negatives).
    """

    pairs: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_tp: int
    n_fp: int
    n_fn: int


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


def _structure(connectivity: int) -> np.ndarray:
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity {connectivity!r} is not supported: use 6, 18 or 26")
    rank = {6: 1, 18: 2, 26: 3}[int(connectivity)]
    return ndimage.generate_binary_structure(3, rank)


def find_lesions(
    volume: np.ndarray,
    threshold: float = 0.5,
    connectivity: int = 26,
    probability: np.ndarray | None = None,
) -> Lesions:
    """3D connected components of ``volume >= threshold`` (scipy.ndimage.label).

    Args:
        volume: (X, Y, Z) binary mask or probability map.
        threshold: voxels with ``volume >= threshold`` are foreground.
        connectivity: 6 (faces), 18 (faces + edges) or 26 (faces + edges + corners).
        probability: optional (X, Y, Z) map whose per-component maximum is reported as
            ``max_prob``; defaults to ``volume`` itself (1.0 for a 0/1 mask).

    Returns:
        :class:`Lesions` with labels numbered in scipy's raster order.

    Raises:
        ConfigError: connectivity is not 6, 18 or 26.
        InputError: volume is not 3D, or probability has another shape.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"find_lesions expects a 3D volume, got shape {volume.shape}")
    structure = _structure(connectivity)
    if probability is None:
        probability = volume
    probability = np.asarray(probability)
    if probability.shape != volume.shape:
        raise InputError(
            f"probability shape {probability.shape} differs from volume shape {volume.shape}"
        )
    foreground = volume >= threshold
    labels, n = ndimage.label(foreground, structure=structure)
    labels = labels.astype(np.int32, copy=False)
    if n == 0:
        return Lesions(labels, np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros(0))
    index = np.arange(1, n + 1)
    centroids = np.asarray(ndimage.center_of_mass(foreground, labels, index), dtype=float)
    n_voxels = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64)
    max_prob = np.asarray(ndimage.maximum(probability.astype(float), labels, index), dtype=float)
    return Lesions(labels, centroids.reshape(n, 3), n_voxels, max_prob.reshape(n))


def centroids_to_mm(centroids: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map (n, 3) voxel-index centroids to (n, 3) scanner coordinates in mm with a 4x4 affine."""
    centroids = np.asarray(centroids, dtype=float).reshape(-1, 3)
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise InputError(f"affine must be 4x4, got shape {affine.shape}")
    return centroids @ affine[:3, :3].T + affine[:3, 3]


def equivalent_diameter_mm(n_voxels: np.ndarray | int, voxel_volume_mm3: float) -> np.ndarray:
    """Diameter (mm) of the sphere with the lesion's volume: d = (6 V / pi)^(1/3), V = n_voxels * voxel volume."""
    if voxel_volume_mm3 <= 0:
        raise InputError(f"voxel volume {voxel_volume_mm3!r} mm^3 must be positive")
    volume = np.asarray(n_voxels, dtype=float) * float(voxel_volume_mm3)
    return np.cbrt(6.0 * volume / np.pi)


def _checked_distances(pred: np.ndarray, ref: np.ndarray, max_distance: float, what: str) -> np.ndarray:
    """(n_pred, n_ref) Euclidean distances between (n, 3) centroids, after checking the threshold.

    Raises:
        ConfigError: ``max_distance`` is negative or not finite.
    """
    if not np.isfinite(max_distance) or max_distance < 0:
        raise ConfigError(f"{what} {max_distance!r} must be a finite number >= 0")
    pred = np.asarray(pred, dtype=float).reshape(-1, 3)
    ref = np.asarray(ref, dtype=float).reshape(-1, 3)
    return np.linalg.norm(pred[:, None, :] - ref[None, :, :], axis=-1)


def _make_match(pairs: list[tuple[int, int]], n_pred: int, n_ref: int) -> Match:
    arr = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    fp = np.setdiff1d(np.arange(n_pred), arr[:, 0]).astype(np.int64)
    fn = np.setdiff1d(np.arange(n_ref), arr[:, 1]).astype(np.int64)
    return Match(arr, fp, fn, int(arr.shape[0]), int(fp.size), int(fn.size))


def match_paper(
    pred_centroids: np.ndarray, ref_centroids: np.ndarray, max_distance: float = 4.0
) -> Match:
    """Paper rule: one-to-one matching of centroids within ``max_distance`` voxels.

    A predicted lesion is a true positive when its centroid lies within
    ``max_distance`` voxels (Euclidean, voxel index space, inclusive: a distance of
    exactly 4.0 matches, 4.01 does not) of a reference centroid; each reference
    matches at most one prediction and vice versa (Cho et al. 2025, 4-voxel rule).

    The assignment is optimal: it maximises the number of matched pairs and, among
    assignments with that number, minimises the summed distance. It is solved with
    scipy.optimize.linear_sum_assignment on the distance matrix where pairs beyond
    the threshold cost a constant larger than any sum of allowed distances
    (``(min(n_pred, n_ref) + 1) * max_distance + 1``); such pairs are dropped
    afterwards, so every extra allowed pair outweighs any distance saving.

    Args:
        pred_centroids: (n_pred, 3) voxel coordinates.
        ref_centroids: (n_ref, 3) voxel coordinates.
        max_distance: threshold in voxels.

    Raises:
        ConfigError: max_distance is negative or not finite.
    """
    dist = _checked_distances(pred_centroids, ref_centroids, max_distance, "match distance")
    n_pred, n_ref = dist.shape
    if n_pred == 0 or n_ref == 0:
        return _make_match([], n_pred, n_ref)
    allowed = dist <= max_distance + _DISTANCE_TOLERANCE
    penalty = (min(n_pred, n_ref) + 1) * (max_distance + _DISTANCE_TOLERANCE) + 1.0
    cost = np.where(allowed, dist, penalty)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]
    return _make_match(pairs, n_pred, n_ref)


def match_valdo(
    pred_centroids_mm: np.ndarray, ref_centroids_mm: np.ndarray, max_distance_mm: float = 5.0
) -> Match:
    """VALDO rule: nearest-reference assignment by centre-of-mass distance in mm.

    Each prediction is assigned to its nearest reference (ties: the lower reference
    index). It can be a true positive only when that distance is within
    ``max_distance_mm`` (inclusive). When several predictions are assigned to one
    reference, the closest (ties: lower prediction index) is the true positive and
    the others are false positives, even if another reference lies within the
    distance. References no prediction claims are false negatives.

    Source: the challenge's public evaluation page (valdo.grand-challenge.org/Evaluation)
    lists, for Task 2, detection F1 and absolute count difference on predictions
    binarised at 0.5; the nearest-reference / closest-claimant assignment follows the
    study specification of the challenge rule. The page does not state a distance, so
    the default is this study's choice: 5 mm is about one CMB diameter (most CMBs are 2-5 mm) and one to
    two slice thicknesses of clinical T2*-GRE (3-5 mm), so a detection displaced by
    a slice still counts while one beside the lesion does not.

    Args:
        pred_centroids_mm: (n_pred, 3) scanner coordinates in mm (see :func:`centroids_to_mm`).
        ref_centroids_mm: (n_ref, 3) scanner coordinates in mm.
        max_distance_mm: threshold in mm.

    Raises:
        ConfigError: max_distance_mm is negative or not finite.
    """
    dist = _checked_distances(pred_centroids_mm, ref_centroids_mm, max_distance_mm, "VALDO distance (mm)")
    n_pred, n_ref = dist.shape
    if n_pred == 0 or n_ref == 0:
        return _make_match([], n_pred, n_ref)
    nearest = np.argmin(dist, axis=1)
    nearest_dist = dist[np.arange(n_pred), nearest]
    pairs: list[tuple[int, int]] = []
    for r in range(n_ref):
        claimants = np.flatnonzero(
            (nearest == r) & (nearest_dist <= max_distance_mm + _DISTANCE_TOLERANCE)
        )
        if claimants.size:
            best = claimants[np.argmin(nearest_dist[claimants])]
            pairs.append((int(best), r))
    return _make_match(pairs, n_pred, n_ref)


def pred_is_tp(match: Match, n_pred: int) -> np.ndarray:
    """(n_pred,) bool: which predicted lesions are true positives in ``match``."""
    out = np.zeros(n_pred, dtype=bool)
    out[match.pairs[:, 0]] = True
    return out


def subset_counts(
    match: Match, ref_in_subset: np.ndarray, pred_in_subset: np.ndarray
) -> tuple[int, int, int]:
    """(n_tp, n_fp, n_fn) restricted to a lesion subset (e.g. diameter <= 3 mm, Table 4).

    Rule: a true positive belongs to the subset when its *reference* lesion does; a
    false negative when the missed reference does; a false positive (no reference to
    judge it by) when the *predicted* lesion itself does, e.g. its equivalent-sphere
    diameter is <= 3 mm. Precision on the subset is then tp / (tp + fp) with these counts.

    Args:
        match: the full-volume match.
        ref_in_subset: (n_ref,) bool per reference lesion.
        pred_in_subset: (n_pred,) bool per predicted lesion (used for unmatched ones only).
    """
    ref_in_subset = np.asarray(ref_in_subset, dtype=bool)
    pred_in_subset = np.asarray(pred_in_subset, dtype=bool)
    tp = int(ref_in_subset[match.pairs[:, 1]].sum()) if match.n_tp else 0
    fn = int(ref_in_subset[match.fn].sum()) if match.n_fn else 0
    fp = int(pred_in_subset[match.fp].sum()) if match.n_fp else 0
    return tp, fp, fn


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
    """VALDO aggregates: median and IQR of per-subject F1 (NaN subjects left out), mean |count difference|.

    Returns:
        dict with median_f1, iqr_f1 (q1, q3), n_subjects_with_f1, mean_abs_count_difference.
    """
    f1 = np.asarray(f1_per_subject, dtype=float)
    defined = f1[~np.isnan(f1)]
    diff = np.abs(np.asarray(n_pred, dtype=float) - np.asarray(n_ref, dtype=float))
    if defined.size:
        median = float(np.median(defined))
        q1, q3 = (float(v) for v in np.percentile(defined, [25, 75]))
    else:
        median, q1, q3 = float("nan"), float("nan"), float("nan")
    return {
        "median_f1": median,
        "iqr_f1": (q1, q3),
        "n_subjects_with_f1": int(defined.size),
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
        ok = curve.fp_per_subject <= rate + _DISTANCE_TOLERANCE
        out[i] = curve.sensitivity[ok].max() if ok.any() else 0.0
    return out


def aria_h_category(count: int) -> str:
    """ARIA-H microhaemorrhage category of a CMB count: "0", "1-4", "5-9" or ">=10".

    Raises:
        ValueError: count is negative or not an integer.
    """
    if isinstance(count, bool) or int(count) != count or count < 0:
        raise ValueError(f"CMB count {count!r} must be a non-negative integer")
    count = int(count)
    if count == 0:
        return "0"
    if count <= 4:
        return "1-4"
    if count <= 9:
        return "5-9"
    return ">=10"


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
