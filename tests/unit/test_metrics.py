"""Hand-computed cases for the lesion-wise metrics (cmbstudy.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmbstudy.data.aria_h import ARIA_H_CATEGORIES, aria_h_category
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.evaluation.lesions import (
    centroids_to_mm,
    equivalent_diameter_mm,
    find_lesions,
)
from cmbstudy.evaluation.matching import match_paper, match_valdo, pred_is_tp
from cmbstudy.evaluation.scores import (
    compute_aria_h_confusion,
    compute_froc,
    detection_scores,
    sensitivity_at_fp_rates,
    summarize_detection,
    summarize_valdo,
)
from cmbstudy.evaluation.subsets import subset_counts

SHAPE = (31, 32, 33)


def _cube(volume: np.ndarray, corner: tuple[int, int, int], size: int = 2, value: float = 1.0) -> None:
    x, y, z = corner
    volume[x : x + size, y : y + size, z : z + size] = value


# ---------------------------------------------------------------- components


def test_find_lesions_centroids_sizes_and_max_prob() -> None:
    # (31, 32, 33) volume: a 2x2x2 cube at (3..4, 5..6, 7..8) -> centroid (3.5, 5.5, 7.5), 8 voxels;
    # a single voxel at (20, 10, 30) -> centroid (20, 10, 30), 1 voxel.
    prob = np.zeros(SHAPE, dtype=np.float32)
    _cube(prob, (3, 5, 7), value=0.7)
    prob[3, 5, 7] = 0.9
    prob[20, 10, 30] = 0.6
    prob[25, 25, 25] = 0.49  # below the 0.5 threshold: not a lesion
    lesions = find_lesions(prob, threshold=0.5)
    assert lesions.n == 2
    assert lesions.labels.shape == SHAPE and lesions.labels.dtype == np.int32
    order = np.argsort(lesions.centroids[:, 0])
    np.testing.assert_allclose(lesions.centroids[order], [[3.5, 5.5, 7.5], [20, 10, 30]])
    np.testing.assert_array_equal(lesions.n_voxels[order], [8, 1])
    np.testing.assert_allclose(lesions.max_prob[order], [0.9, 0.6], rtol=1e-6)


def test_find_lesions_binary_max_prob_is_one_and_threshold_inclusive() -> None:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[0, 0, 0] = 1
    lesions = find_lesions(mask)
    assert lesions.n == 1 and lesions.max_prob[0] == 1.0
    prob = np.zeros(SHAPE)
    prob[4, 4, 4] = 0.5  # exactly at the threshold: foreground (>=)
    assert find_lesions(prob, threshold=0.5).n == 1


def test_connectivity_6_vs_26_on_diagonal_pair() -> None:
    # two voxels touching only at a corner: (5,5,5) and (6,6,6)
    # 26-connectivity -> 1 component; 18 -> 2 (no shared edge); 6 -> 2
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[5, 5, 5] = mask[6, 6, 6] = 1
    assert find_lesions(mask, connectivity=26).n == 1
    assert find_lesions(mask, connectivity=18).n == 2
    assert find_lesions(mask, connectivity=6).n == 2
    # sharing an edge: (10,10,10) and (11,11,10): 18 and 26 join them, 6 does not
    edge = np.zeros(SHAPE, dtype=np.uint8)
    edge[10, 10, 10] = edge[11, 11, 10] = 1
    assert [find_lesions(edge, connectivity=c).n for c in (6, 18, 26)] == [2, 1, 1]


@pytest.mark.parametrize("bad", [4, 8, 27, 0])
def test_bad_connectivity_names_value(bad: int) -> None:
    with pytest.raises(ConfigError, match=f"connectivity {bad}"):
        find_lesions(np.zeros(SHAPE), connectivity=bad)


def test_find_lesions_rejects_2d_and_mismatched_probability() -> None:
    with pytest.raises(InputError, match=r"3D volume, got shape \(4, 5\)"):
        find_lesions(np.zeros((4, 5)))
    with pytest.raises(InputError, match="probability shape"):
        find_lesions(np.zeros(SHAPE), probability=np.zeros((31, 32, 34)))


def test_lesion_touching_border() -> None:
    # cube in the corner at the far end of every axis: voxels 29..30, 30..31, 31..32
    mask = np.zeros(SHAPE, dtype=np.uint8)
    _cube(mask, (29, 30, 31))
    lesions = find_lesions(mask)
    assert lesions.n == 1 and lesions.n_voxels[0] == 8
    np.testing.assert_allclose(lesions.centroids[0], [29.5, 30.5, 31.5])
    ref = find_lesions(mask)
    match = match_paper(lesions.centroids, ref.centroids)
    assert (match.n_tp, match.n_fp, match.n_fn) == (1, 0, 0)


def test_empty_volume_gives_empty_arrays() -> None:
    lesions = find_lesions(np.zeros(SHAPE))
    assert lesions.n == 0 and lesions.centroids.shape == (0, 3)


def test_centroids_to_mm_and_equivalent_diameter() -> None:
    # voxel (1, 2, 3) with spacing (0.5, 0.5, 4) mm and origin (-10, 20, 5) -> (-9.5, 21, 17)
    affine = np.diag([0.5, 0.5, 4.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    np.testing.assert_allclose(centroids_to_mm([[1, 2, 3]], affine), [[-9.5, 21.0, 17.0]])
    # a sphere of diameter 3 mm has volume pi/6 * 27 = 14.137 mm^3
    assert equivalent_diameter_mm(1, math.pi / 6 * 27) == pytest.approx(3.0)
    np.testing.assert_allclose(equivalent_diameter_mm(np.array([8, 1]), 1.0), [(48 / math.pi) ** (1 / 3), (6 / math.pi) ** (1 / 3)])
    with pytest.raises(InputError, match="voxel volume 0"):
        equivalent_diameter_mm(3, 0)


# ---------------------------------------------------------------- paper rule


def test_paper_threshold_is_inclusive_at_4_voxels() -> None:
    ref = np.array([[10.0, 10.0, 10.0]])
    hit = match_paper(np.array([[10.0, 10.0, 14.0]]), ref)  # distance exactly 4.0: TP
    assert (hit.n_tp, hit.n_fp, hit.n_fn) == (1, 0, 0)
    miss = match_paper(np.array([[10.0, 10.0, 14.01]]), ref)  # 4.01: FP + FN
    assert (miss.n_tp, miss.n_fp, miss.n_fn) == (0, 1, 1)
    # a diagonal distance sqrt(16/3 * 3) = 4 also counts
    diag = match_paper(ref + 4 / math.sqrt(3), ref)
    assert diag.n_tp == 1


def test_paper_empty_prediction_reference_both() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [20.0, 20.0, 20.0]])
    no_pred = match_paper(np.zeros((0, 3)), ref)
    assert (no_pred.n_tp, no_pred.n_fp, no_pred.n_fn) == (0, 0, 2)
    np.testing.assert_array_equal(no_pred.fn, [0, 1])
    no_ref = match_paper(ref, np.zeros((0, 3)))
    assert (no_ref.n_tp, no_ref.n_fp, no_ref.n_fn) == (0, 2, 0)
    both = match_paper(np.zeros((0, 3)), np.zeros((0, 3)))
    assert (both.n_tp, both.n_fp, both.n_fn) == (0, 0, 0)
    assert both.pairs.shape == (0, 2)


def test_paper_two_predictions_on_one_lesion() -> None:
    # both predictions within 4 voxels of the single reference: one TP (the closer, 1 voxel), one FP
    ref = np.array([[10.0, 10.0, 10.0]])
    pred = np.array([[10.0, 13.0, 10.0], [10.0, 10.0, 11.0]])
    match = match_paper(pred, ref)
    assert (match.n_tp, match.n_fp, match.n_fn) == (1, 1, 0)
    np.testing.assert_array_equal(match.pairs, [[1, 0]])
    np.testing.assert_array_equal(match.fp, [0])
    np.testing.assert_array_equal(pred_is_tp(match, 2), [False, True])


def test_paper_maximises_matches_before_distance() -> None:
    # refs A=(0,0,0), B=(0,0,6); preds p0=(0,0,3) (3 from A, 3 from B), p1=(0,0,-3.5) (3.5 from A only).
    # Greedy nearest would give p0->A and leave p1 unmatched (1 TP); the optimal assignment
    # gives p1->A and p0->B: 2 TP, total distance 6.5.
    ref = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 6.0]])
    pred = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, -3.5]])
    match = match_paper(pred, ref)
    assert match.n_tp == 2 and match.n_fp == 0 and match.n_fn == 0
    np.testing.assert_array_equal(match.pairs, [[0, 1], [1, 0]])


def test_paper_negative_distance_rejected() -> None:
    with pytest.raises(ConfigError, match="-1"):
        match_paper(np.zeros((1, 3)), np.zeros((1, 3)), max_distance=-1)


# ---------------------------------------------------------------- VALDO rule


def test_valdo_two_claimants_closest_wins() -> None:
    # both predictions' nearest reference is R0 at (0,0,0) mm: distances 2 and 1 mm -> p1 TP, p0 FP
    ref = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 30.0]])
    pred = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    match = match_valdo(pred, ref, max_distance=5.0)
    assert (match.n_tp, match.n_fp, match.n_fn) == (1, 1, 1)
    np.testing.assert_array_equal(match.pairs, [[1, 0]])
    np.testing.assert_array_equal(match.fn, [1])


def test_valdo_loser_is_fp_even_with_other_reference_in_range() -> None:
    # R0=(0,0,0), R1=(0,0,4). p0=(0,0,1.5) nearest R0 (1.5; R1 is 2.5), p1=(0,0,0.5) nearest R0 (0.5).
    # VALDO: p1 TP on R0, p0 FP, R1 FN -> (1, 1, 1); the paper's one-to-one optimum finds 2 TP.
    ref = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    pred = np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 0.5]])
    valdo = match_valdo(pred, ref, 5.0)
    assert (valdo.n_tp, valdo.n_fp, valdo.n_fn) == (1, 1, 1)
    paper = match_paper(pred, ref, 4.0)
    assert (paper.n_tp, paper.n_fp, paper.n_fn) == (2, 0, 0)


def test_valdo_distance_strict_and_empty_cases() -> None:
    ref = np.array([[0.0, 0.0, 0.0]])
    assert match_valdo(np.array([[0.0, 0.0, 4.99]]), ref).n_tp == 1
    assert match_valdo(np.array([[0.0, 0.0, 5.0]]), ref).n_tp == 0  # the challenge code: distance < threshold
    empty = match_valdo(np.zeros((0, 3)), ref)
    assert (empty.n_tp, empty.n_fp, empty.n_fn) == (0, 0, 1)


def test_anisotropic_voxels_paper_and_valdo_disagree() -> None:
    # voxels 0.5 x 0.5 x 5 mm; centroids offset by (0, 1, 1) voxels (one voxel in-plane, one slice):
    # voxel distance sqrt(2) = 1.41 (paper: TP), mm distance sqrt(0.5^2 + 5^2) = 5.025 mm (VALDO 5 mm: not TP).
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    ref_vox = np.array([[10.0, 10.0, 3.0]])
    pred_vox = np.array([[10.0, 11.0, 4.0]])
    assert match_paper(pred_vox, ref_vox).n_tp == 1
    d_mm = np.linalg.norm(centroids_to_mm(pred_vox, affine) - centroids_to_mm(ref_vox, affine))
    assert d_mm == pytest.approx(math.sqrt(0.25 + 25))
    assert match_valdo(centroids_to_mm(pred_vox, affine), centroids_to_mm(ref_vox, affine)).n_tp == 0
    # and the reverse: 6 voxels in-plane = 3 mm: paper FP/FN, VALDO TP
    far_vox = np.array([[16.0, 10.0, 3.0]])
    assert match_paper(far_vox, ref_vox).n_tp == 0
    assert match_valdo(centroids_to_mm(far_vox, affine), centroids_to_mm(ref_vox, affine)).n_tp == 1


# ---------------------------------------------------------------- scores and subsets


def test_detection_scores_nan_conventions() -> None:
    assert detection_scores(3, 1, 2) == pytest.approx((0.75, 0.6, 6 / 9))
    p, r, f = detection_scores(0, 0, 2)  # no predictions: precision NaN, recall 0, F1 0
    assert math.isnan(p) and r == 0 and f == 0
    p, r, f = detection_scores(0, 2, 0)  # no reference: recall NaN, F1 0 (paper) / NaN (VALDO)
    assert p == 0 and math.isnan(r) and f == 0
    assert math.isnan(detection_scores(0, 2, 0, nan_f1_without_reference=True)[2])
    assert all(math.isnan(v) for v in detection_scores(0, 0, 0))
    with pytest.raises(ValueError, match="negative"):
        detection_scores(-1, 0, 0)


def test_summarize_detection_pools_over_lesions() -> None:
    # subjects: (tp, fp, fn) = (2, 1, 0), (0, 0, 0), (1, 2, 3)
    # pooled tp 3, fp 3, fn 3 -> P 0.5, R 0.5, F1 0.5, FP/subject 1.0
    summary = summarize_detection([(2, 1, 0), (0, 0, 0), (1, 2, 3)])
    assert summary == {
        "precision": 0.5, "recall": 0.5, "f1": 0.5, "fp_per_subject": 1.0,
        "n_tp": 3, "n_fp": 3, "n_fn": 3, "n_subjects": 3,
    }
    with pytest.raises(ValueError, match="negative"):
        summarize_detection([(1, -1, 0)])


def test_summarize_valdo_median_iqr_and_count_difference() -> None:
    # F1 per subject 0.2, 0.4, NaN (empty reference), 0.8, 1.0 -> defined [0.2, 0.4, 0.8, 1.0]
    # median 0.6, q1 0.35, q3 0.85 (linear interpolation); |count diff| 1, 0, 2, 0, 2 -> mean 1.0
    out = summarize_valdo([0.2, 0.4, float("nan"), 0.8, 1.0], [3, 2, 2, 4, 0], [2, 2, 0, 4, 2])
    assert out["median_f1"] == pytest.approx(0.6)
    assert out["iqr_f1"] == pytest.approx((0.35, 0.85))
    assert out["n_subjects_with_f1"] == 4
    assert out["mean_abs_count_difference"] == pytest.approx(1.0)


def test_subset_counts_small_lesions() -> None:
    # refs: R0 small, R1 large, R2 small. preds: p0 -> R0 (TP small), p1 -> R1 (TP large),
    # p2 unmatched small, p3 unmatched large; R2 missed (FN small).
    ref = np.array([[0.0, 0, 0], [0, 0, 20], [0, 0, 40]])
    pred = np.array([[0.0, 0, 1], [0, 0, 21], [10, 10, 10], [20, 20, 20]])
    match = match_paper(pred, ref)
    assert (match.n_tp, match.n_fp, match.n_fn) == (2, 2, 1)
    small_ref = np.array([True, False, True])
    small_pred = np.array([False, False, True, False])  # p0's own size does not matter: matched
    assert subset_counts(match, small_ref, small_pred) == (1, 1, 1)
    assert subset_counts(match, ~small_ref, ~small_pred) == (1, 1, 0)


# ---------------------------------------------------------------- FROC


def test_froc_monotone_and_ends_at_pooled_numbers() -> None:
    # subject A: scores 0.9 (TP), 0.6 (FP), 0.55 (TP); subject B: 0.8 (FP), 0.7 (TP); 5 references.
    # thresholds inf, .9, .8, .7, .6, .55 -> TP 0,1,1,2,2,3; FP 0,0,1,1,2,2
    scores = [np.array([0.9, 0.6, 0.55]), np.array([0.8, 0.7])]
    outcomes = [np.array([True, False, True]), np.array([False, True])]
    curve = compute_froc(scores, outcomes, n_ref_total=5, n_subjects=2)
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.6, 0.55])
    np.testing.assert_allclose(curve.sensitivity, [0, 0.2, 0.2, 0.4, 0.4, 0.6])
    np.testing.assert_allclose(curve.fp_per_subject, [0, 0, 0.5, 0.5, 1.0, 1.0])
    assert (np.diff(curve.sensitivity) >= 0).all() and (np.diff(curve.fp_per_subject) >= 0).all()
    pooled = summarize_detection([(2, 1, 1), (1, 1, 1)])  # same outcomes as counts, 5 refs
    assert curve.sensitivity[-1] == pytest.approx(pooled["recall"])
    assert curve.fp_per_subject[-1] == pytest.approx(pooled["fp_per_subject"])
    # step read-out: FP/subject <= 0.25 -> 0.2; <= 0.5 -> 0.4; <= 1, 2 -> 0.6 (flat beyond the end)
    np.testing.assert_allclose(sensitivity_at_fp_rates(curve, [0.25, 0.5, 1, 2]), [0.2, 0.4, 0.6, 0.6])


def test_froc_ties_and_no_predictions() -> None:
    # two lesions with the same score enter together
    curve = compute_froc([np.array([0.7, 0.7])], [np.array([True, False])], 2, 1)
    np.testing.assert_allclose(curve.sensitivity, [0, 0.5])
    np.testing.assert_allclose(curve.fp_per_subject, [0, 1.0])
    empty = compute_froc([np.zeros(0)], [np.zeros(0, bool)], 3, 1)
    np.testing.assert_allclose(empty.sensitivity, [0.0])
    with pytest.raises(ValueError, match="n_ref_total > 0"):
        compute_froc([np.zeros(0)], [np.zeros(0, bool)], 0, 1)


# ---------------------------------------------------------------- ARIA-H


@pytest.mark.parametrize(
    "count, category", [(0, "0"), (1, "1-4"), (4, "1-4"), (5, "5-9"), (9, "5-9"), (10, ">=10"), (57, ">=10")]
)
def test_aria_h_boundaries(count: int, category: str) -> None:
    assert aria_h_category(count) == category


def test_aria_h_confusion_rows_true_cols_pred() -> None:
    true = [0, 0, 3, 7, 12, 4]
    pred = [0, 2, 3, 10, 12, 5]
    # (0,0) (0,1-4) (1-4,1-4) (5-9,>=10) (>=10,>=10) (1-4,5-9)
    expected = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    confusion = compute_aria_h_confusion(true, pred)
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.shape == (4, 4) and confusion.sum() == 6
    assert ARIA_H_CATEGORIES == ("0", "1-4", "5-9", ">=10")
    with pytest.raises(ValueError, match="-3"):
        compute_aria_h_confusion([1, -3], [1, 1])
    with pytest.raises(ValueError, match="2 true counts but 1"):
        compute_aria_h_confusion([1, 2], [1])
