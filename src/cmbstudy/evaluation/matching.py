"""Matching predicted to reference lesions: the paper's rule and the VALDO challenge's rule.

* **Paper rule** (Cho et al. 2026, Methods, "Evaluation metrics"): 3D
  connected components of the thresholded prediction; a predicted lesion is a
  true positive when its centroid lies within 4 voxels (Euclidean distance in
  voxel index space, inclusive) of a reference lesion's centroid; matching is
  one-to-one (:func:`match_paper`).
* **VALDO rule** (Sudre et al. 2024, "Where is VALDO?", Task 2), as the
  challenge's evaluation code (``valdo-eval-2021``,
  ``evaluation_comparison/pairwise_measures.py``) computes it: prediction
  thresholded at 0.5 (inclusive), 3D connected components, centre-of-mass
  distance strictly below the threshold; each prediction is assigned to its
  nearest reference; of several claimants of one reference, every one at the
  smallest distance is a true positive (an exact tie gives two) and the others
  are false positives; false negatives are the references no prediction
  matched (:func:`match_valdo`).

Where the two rules differ: the paper's is inclusive (a distance of exactly
the threshold matches), one-to-one and optimal over the whole volume, in voxel
index units; VALDO's is strict, greedy per prediction (nearest reference only),
counts every tied claimant, and is measured in mm here (the official code
measures centres of mass in voxel indices, which ``distance_unit="voxels"``
of :func:`cmbstudy.evaluation.evaluate.evaluate_volume` reproduces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import ConfigError

__all__ = ["Match", "VALDO_CODE_DEFAULT_DISTANCE", "match_paper", "match_valdo", "pred_is_tp"]

#: The default threshold of the challenge's own evaluation code (voxel indices), which almost nothing
#: meets; the study measures in mm instead (``evaluation.valdo_distance_mm``).
VALDO_CODE_DEFAULT_DISTANCE = 0.1

# Distances equal to the threshold up to floating-point rounding count as within it.
_DISTANCE_TOLERANCE = 1e-9


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
    """Pairs -> Match: FP are predictions without a pair, FN references without one."""
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
    matches at most one prediction and vice versa (Cho et al. 2026, 4-voxel rule).

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
    pred_centroids: np.ndarray, ref_centroids: np.ndarray, max_distance: float = 5.0
) -> Match:
    """VALDO rule, with the semantics of the challenge's evaluation code.

    Each prediction is assigned to its nearest reference (ties: the lower
    reference index) when that distance is strictly below ``max_distance``;
    otherwise it is a false positive. Of the predictions assigned to one
    reference, every one at the smallest distance is a true positive (so an
    exact tie makes two) and the others are false positives, even if another
    reference lies within the distance. References no prediction matched are
    false negatives (the official F1 counts them so; its ``n_ref - n_tp``,
    which a tie makes smaller, is only printed as a check).

    Source: ``valdo-eval-2021``, ``evaluation_comparison/pairwise_measures.py``
    (``assign_tp_fp_distance``, ``f1_count_element``), read for its semantics;
    this is not its code. Its default threshold (:data:`VALDO_CODE_DEFAULT_DISTANCE`, in voxel indices) matches
    almost nothing; the study's default, 5 mm, is this study's choice: about
    one CMB diameter (most CMBs are 2-5 mm) and one to two slice thicknesses
    of clinical T2*-GRE (3-5 mm).

    Args:
        pred_centroids: (n_pred, 3) centres of mass (scanner mm, or voxel indices).
        ref_centroids: (n_ref, 3) in the same unit.
        max_distance: threshold in that unit (a pair matches when its distance is below it).

    Raises:
        ConfigError: max_distance is negative or not finite.
    """
    dist = _checked_distances(pred_centroids, ref_centroids, max_distance, "VALDO distance")
    n_pred, n_ref = dist.shape
    if n_pred == 0 or n_ref == 0:
        return _make_match([], n_pred, n_ref)
    nearest = np.argmin(dist, axis=1)
    nearest_dist = dist[np.arange(n_pred), nearest]
    claims = nearest_dist < max_distance
    pairs: list[tuple[int, int]] = []
    for r in range(n_ref):
        claimants = np.flatnonzero(claims & (nearest == r))
        if claimants.size:
            closest = nearest_dist[claimants].min()
            pairs.extend((int(p), r) for p in claimants if nearest_dist[p] == closest)
    return _make_match(pairs, n_pred, n_ref)


def pred_is_tp(match: Match, n_pred: int) -> np.ndarray:
    """(n_pred,) bool: which predicted lesions are true positives in ``match``."""
    out = np.zeros(n_pred, dtype=bool)
    out[match.pairs[:, 0]] = True
    return out
