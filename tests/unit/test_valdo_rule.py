"""The VALDO rule on the edges where the challenge's evaluation code differs from a one-to-one count.

The semantics are those of ``valdo-eval-2021`` (``pairwise_measures.py``:
``assign_tp_fp_distance`` and ``f1_count_element``; ``aggregate_summarise.py``:
quantiles 0.25 / 0.5 / 0.75 per measure), worked out by hand on toy volumes:
a strict distance threshold, both claimants counted as true positives on an
exact tie (FN: the references no prediction matched), F1 NaN without
reference and 0 without prediction, and medians rather than means in the
aggregate. The paper's rule is checked beside it to
stay as it was (inclusive, one-to-one).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmbstudy.evaluation import evaluate_volume
from cmbstudy.evaluation.matching import match_paper, match_valdo
from cmbstudy.evaluation.scores import summarize_valdo

SHAPE = (21, 22, 23)  # uneven, so that an axis mix-up moves a centroid


def _blob(volume: np.ndarray, centre: tuple[int, int, int], value: float = 1.0) -> None:
    x, y, z = centre
    volume[x, y, z] = value  # one-voxel components: their centre of mass is the voxel itself


def _evaluate(pred_centres, ref_centres, distance: float, unit: str = "voxels", rule: str = "valdo"):
    prob, ref = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.uint8)
    for c in pred_centres:
        _blob(prob, c, 0.9)
    for c in ref_centres:
        _blob(ref, c)
    return evaluate_volume(prob, ref, np.eye(4), rule=rule, distance=distance, threshold=0.5,
                           distance_unit=unit).row


def test_strict_threshold_at_exactly_the_distance() -> None:
    # one reference at (10,10,10), one prediction 3 voxels away along z
    valdo = _evaluate([(10, 10, 13)], [(10, 10, 10)], distance=3.0)
    assert (valdo["n_tp"], valdo["n_fp"], valdo["n_fn"]) == (0, 1, 1)  # 3 < 3 is false
    assert valdo["f1"] == 0.0
    paper = _evaluate([(10, 10, 13)], [(10, 10, 10)], distance=3.0, rule="paper")
    assert (paper["n_tp"], paper["n_fp"], paper["n_fn"]) == (1, 0, 0)  # the paper's rule is inclusive
    assert _evaluate([(10, 10, 13)], [(10, 10, 10)], distance=3.01)["n_tp"] == 1


def test_an_exact_tie_counts_both_claimants() -> None:
    # reference R at (10,10,10); predictions 2 voxels away on either side: an exact tie
    row = _evaluate([(10, 10, 8), (10, 10, 12)], [(10, 10, 10)], distance=5.0)
    assert (row["n_tp"], row["n_fp"], row["n_fn"]) == (2, 0, 0)  # both TP, the reference is matched
    assert row["f1"] == pytest.approx(1.0)  # 2*2 / (2*2 + 0 + 0)
    paper = _evaluate([(10, 10, 8), (10, 10, 12)], [(10, 10, 10)], distance=5.0, rule="paper")
    assert (paper["n_tp"], paper["n_fp"], paper["n_fn"]) == (1, 1, 0)


def test_a_near_tie_keeps_one_claimant() -> None:
    match = match_valdo(np.array([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0001]]), np.zeros((1, 3)), 5.0)
    assert (match.n_tp, match.n_fp, match.n_fn) == (1, 1, 0)
    np.testing.assert_array_equal(match.pairs, [[0, 0]])


def test_the_loser_of_a_claim_is_fp_though_another_reference_is_in_range() -> None:
    # R0=(0,0,0), R1=(0,0,4); p0=(0,0,1.5) and p1=(0,0,0.5) both nearest R0 -> p1 TP, p0 FP, R1 FN
    ref = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    pred = np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 0.5]])
    valdo = match_valdo(pred, ref, 5.0)
    assert (valdo.n_tp, valdo.n_fp, valdo.n_fn) == (1, 1, 1)
    assert match_paper(pred, ref, 4.0).n_tp == 2


def test_empty_reference_and_empty_prediction() -> None:
    no_ref = _evaluate([(5, 5, 5)], [], distance=5.0)
    assert (no_ref["n_tp"], no_ref["n_fp"], no_ref["n_fn"]) == (0, 1, 0) and math.isnan(no_ref["f1"])
    no_pred = _evaluate([], [(5, 5, 5), (15, 15, 15)], distance=5.0)
    assert (no_pred["n_tp"], no_pred["n_fp"], no_pred["n_fn"]) == (0, 0, 2) and no_pred["f1"] == 0.0
    assert no_pred["abs_count_difference"] == 2


def test_mm_and_voxel_distances_differ_on_anisotropic_voxels() -> None:
    # 1 slice apart at 0.5 x 0.5 x 3 mm voxels: 1 voxel, 3 mm; distance 2: a match in voxels only
    prob, ref = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.uint8)
    prob[10, 10, 11], ref[10, 10, 10] = 0.9, 1
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    voxels = evaluate_volume(prob, ref, affine, rule="valdo", distance=2.0, distance_unit="voxels").row
    mm = evaluate_volume(prob, ref, affine, rule="valdo", distance=2.0, distance_unit="mm").row
    assert (voxels["n_tp"], mm["n_tp"]) == (1, 0)


def test_aggregate_is_the_median_and_quartiles() -> None:
    # per-subject F1 0.2, 0.4, 1.0 and NaN (no reference); |count difference| 0, 1, 1, 10
    out = summarize_valdo([0.2, 0.4, 1.0, float("nan")], [1, 3, 4, 10], [1, 2, 5, 0])
    assert out["median_f1"] == pytest.approx(0.4) and out["n_subjects_with_f1"] == 3
    assert out["iqr_f1"] == pytest.approx((0.3, 0.7))  # linear interpolation, as pandas' quantile
    assert out["median_abs_count_difference"] == pytest.approx(1.0)  # the mean would be 3.0
    assert out["iqr_abs_count_difference"] == pytest.approx((0.75, 3.25))
    assert out["mean_abs_count_difference"] == pytest.approx(3.0)
