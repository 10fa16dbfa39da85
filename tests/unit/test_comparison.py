"""Tables 2 and 4 (cmbstudy.study.tables), FROC merging and recall by size (cmbstudy.evaluation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from cmbstudy.errors import ConfigError, InputError
from cmbstudy.evaluation.scores import FrocCurve, merge_froc_curves
from cmbstudy.evaluation.stats import bootstrap_detection_ci
from cmbstudy.evaluation.subsets import compute_recall_by_size
from cmbstudy.figures.froc import plot_froc
from cmbstudy.study.paper import PAPER_DATASET_LABEL, TABLE2, TABLE4
from cmbstudy.study.tables.classical_floor import compute_classical_result
from cmbstudy.study.tables.comparison import _missing_note
from cmbstudy.study.tables.format import CLASSICAL, METHOD_LABELS
from cmbstudy.study.tables.methods import (
    MethodResult,
    compute_method_table,
    find_best_baseline,
    format_method_table,
    make_method_result,
    method_froc_curves,
)
from cmbstudy.training.classical import DetectionCase


def _row(sid: str, tp: int, fp: int, fn: int, small: tuple[int, int, int] = (0, 0, 0)) -> dict:
    return {"subject_id": sid, "n_ref": tp + fn, "n_tp": tp, "n_fp": fp, "n_fn": fn,
            "n_tp_small": small[0], "n_fp_small": small[1], "n_fn_small": small[2]}


def _evaluation(rows: list[dict], froc: dict | None = None) -> dict:
    n_ref = sum(r["n_ref"] for r in rows)
    return {"settings": {"n_bootstrap": 200, "seed": 3}, "per_subject": rows,
            "summary": {"n_ref": n_ref, "n_subjects": len(rows)}, "froc_curve": froc}


# three subjects, (tp, fp, fn) = (2, 1, 0), (1, 0, 1), (0, 2, 0): P 3/6, R 3/4, F1 6/10, FP/subject 1
ROWS = [_row("a", 2, 1, 0, (1, 0, 0)), _row("b", 1, 0, 1, (0, 0, 1)), _row("c", 0, 2, 0, (0, 1, 0))]


def test_table_pools_counts_and_puts_the_paper_beside() -> None:
    result = make_method_result("rlk_unet_cbam", [_evaluation(ROWS)], [0], 1234, [0.5])
    table = compute_method_table({"rlk_unet_cbam": result}, TABLE2)
    row = table.loc[METHOD_LABELS["rlk_unet_cbam"]]
    assert row["precision"] == pytest.approx(0.5)
    assert row["recall"] == pytest.approx(0.75)
    assert row["f1"] == pytest.approx(0.6)
    assert row["fp_per_subject"] == pytest.approx(1.0)
    assert row["f1_paper"] == pytest.approx(0.887)
    assert row["n_params"] == 1234 and row["seconds_per_subject"] == pytest.approx(0.5)
    # the CI is the evaluation's: same counts, same resamples and seed
    expected = bootstrap_detection_ci([(2, 1, 0), (1, 0, 1), (0, 2, 0)], n_resamples=200, seed=3)
    assert (row["f1_ci_low"], row["f1_ci_high"]) == pytest.approx(expected["f1"][1:])


def test_small_subset_uses_small_counts_and_table4() -> None:
    result = make_method_result("fan2022", [_evaluation(ROWS)], [0], 10, [1.0])
    row = compute_method_table({"fan2022": result}, TABLE4, subset="small").iloc[0]
    # small counts pooled: tp 1, fp 1, fn 1 -> P 0.5, R 0.5, F1 0.5, FP/subject 1/3
    assert row["f1"] == pytest.approx(0.5)
    assert row["fp_per_subject"] == pytest.approx(1 / 3)
    assert row["f1_paper"] == pytest.approx(0.763)


def test_folds_pool_subjects_and_average_speed() -> None:
    result = make_method_result("wei2022", [_evaluation(ROWS[:2]), _evaluation(ROWS[2:])], [0, 1], 5, [1.0, 3.0])
    row = compute_method_table({"wei2022": result}, TABLE2).iloc[0]
    assert row["n_subjects"] == 3 and row["f1"] == pytest.approx(0.6)
    assert row["seconds_per_subject"] == pytest.approx(2.0)
    assert result.folds == (0, 1)


def test_methods_without_paper_row_or_runs_say_so() -> None:
    nnunet = make_method_result("nnunet", [_evaluation(ROWS)], [0], 5, [1.0])
    table = compute_method_table({"nnunet": nnunet}, TABLE2, missing={"dou2016": ["dou2016-fold0"]})
    assert np.isnan(table.loc[METHOD_LABELS["nnunet"], "f1_paper"])
    assert "not in the paper" in table.loc[METHOD_LABELS["nnunet"], "note"]
    dou = table.loc[METHOD_LABELS["dou2016"]]
    assert np.isnan(dou["f1"]) and dou["f1_paper"] == pytest.approx(0.611)
    assert dou["note"] == "runs missing: dou2016-fold0"


def test_a_method_that_detected_nothing_is_named_in_the_note() -> None:
    silent = make_method_result("dou2016", [_evaluation([_row("a", 0, 0, 2), _row("b", 0, 0, 1)])], [0], 5, [1.0])
    found = make_method_result("nnunet", [_evaluation(ROWS)], [0], 5, [1.0])
    note = _missing_note({}, {"dou2016": silent, "nnunet": found})
    assert "Every method of the comparison has its runs." in note
    assert f"**{METHOD_LABELS['dou2016']}** detected nothing on the test set" in note
    assert METHOD_LABELS["nnunet"] not in note


def test_format_labels_columns_by_dataset() -> None:
    result = make_method_result("rlk_unet_cbam", [_evaluation(ROWS)], [0], 1234, [0.5])
    shown = format_method_table(compute_method_table({"rlk_unet_cbam": result}, TABLE2), "synthetic cohort")
    assert shown.loc[METHOD_LABELS["rlk_unet_cbam"], ("F1", "ours (synthetic cohort)")] == "0.600"
    assert shown.loc[METHOD_LABELS["rlk_unet_cbam"], ("F1", PAPER_DATASET_LABEL)] == "0.887"
    assert shown.loc[METHOD_LABELS["rlk_unet_cbam"], ("", "parameters")] == "1,234"
    with pytest.raises(InputError, match="dataset label must name"):
        format_method_table(compute_method_table({"rlk_unet_cbam": result}, TABLE2), " ")


def test_best_baseline_skips_ours_and_the_classical_floor() -> None:
    table = pd.DataFrame({"f1": [0.9, 0.95, 0.4, 0.7, np.nan]},
                         index=[METHOD_LABELS["rlk_unet_cbam"], METHOD_LABELS[CLASSICAL], "A", "B", "C"])
    assert find_best_baseline(table, METHOD_LABELS["rlk_unet_cbam"]) == "B"
    assert find_best_baseline(table.iloc[:2], METHOD_LABELS["rlk_unet_cbam"]) is None


def test_unknown_subset_and_empty_evaluation_raise() -> None:
    result = make_method_result("nnunet", [_evaluation(ROWS)], [0], 5, [1.0])
    with pytest.raises(ConfigError, match="unknown lesion subset 'tiny'"):
        compute_method_table({"nnunet": result}, TABLE2, subset="tiny")
    with pytest.raises(InputError, match="has no evaluation"):
        make_method_result("nnunet", [], [0], 5, [1.0])
    with pytest.raises(InputError, match="no per_subject rows"):
        make_method_result("nnunet", [_evaluation([])], [0], 5, [1.0])


def test_merge_froc_sums_tp_and_fp_over_folds() -> None:
    inf = np.inf
    # fold A: 2 refs, 1 subject: score 0.9 TP, 0.5 FP; fold B: 2 refs, 1 subject: 0.7 TP
    a = FrocCurve(np.array([inf, 0.9, 0.5]), np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.5, 0.5]))
    b = FrocCurve(np.array([inf, 0.7]), np.array([0.0, 0.0]), np.array([0.0, 0.5]))
    merged = merge_froc_curves([a, b], [2, 2], [1, 1])
    np.testing.assert_allclose(merged.thresholds, [inf, 0.9, 0.7, 0.5])
    np.testing.assert_allclose(merged.sensitivity, [0.0, 0.25, 0.5, 0.5])
    np.testing.assert_allclose(merged.fp_per_subject, [0.0, 0.0, 0.0, 0.5])
    with pytest.raises(InputError, match="as many curves"):
        merge_froc_curves([a], [2, 2], [1])


def test_froc_plot_has_one_line_per_method_with_a_curve() -> None:
    froc = {"thresholds": [None, 0.8], "fp_per_subject": [0.0, 0.5], "sensitivity": [0.0, 0.4]}
    with_curve = make_method_result("rlk_unet_cbam", [_evaluation(ROWS, froc)], [0], 1, [1.0])
    without = make_method_result("nnunet", [_evaluation(ROWS)], [0], 1, [1.0])
    curves = method_froc_curves({"rlk_unet_cbam": with_curve, "nnunet": without})
    assert list(curves) == [with_curve.label]
    fig = plot_froc(curves)
    assert isinstance(fig, Figure)
    assert [line.get_gid() for line in fig.axes[0].get_lines() if line.get_gid()] == [with_curve.label]
    assert method_froc_curves({"nnunet": without}) == {}
    with pytest.raises(InputError, match="at least one FROC curve"):
        plot_froc({})


def test_recall_by_size_bins_are_right_closed() -> None:
    lesions = pd.DataFrame({"diameter_mm": [1.5, 2.5, 3.0, 3.5, 7.0], "detected": [True, False, True, True, False]})
    table = compute_recall_by_size({"ours": lesions}, edges_mm=(0, 2, 3, 4, np.inf))
    assert list(table.index) == ["(0, 2] mm", "(2, 3] mm", "(3, 4] mm", "> 4 mm"]
    assert list(table["lesions"]) == [1, 2, 1, 1]
    np.testing.assert_allclose(table["ours"], [1.0, 0.5, 1.0, 0.0])
    with pytest.raises(ConfigError, match="must be at least two increasing"):
        compute_recall_by_size({"ours": lesions}, edges_mm=(3, 2))


def _case(rng: np.random.Generator, centres: list[tuple[int, int, int]]) -> DetectionCase:
    # (X, Y, Z) = (40, 41, 9) bright brain with dark 3x3 in-plane dots, 1 mm in-plane, 3 mm slices
    image = 100 + rng.normal(0, 1, (40, 41, 9))
    brain = np.zeros(image.shape, bool)
    brain[4:36, 4:37, :] = True
    for x, y, z in centres:
        image[x - 1:x + 2, y - 1:y + 2, z] = 20.0
    return DetectionCase(image.astype(np.float32), brain, (1.0, 1.0, 3.0), np.array(centres, float))


def test_classical_is_tuned_on_validation_and_scored_on_the_test_set(rng: np.random.Generator) -> None:
    cases = [_case(rng, [(12, 12, 4), (25, 28, 3)]), _case(rng, [(20, 15, 5)])]
    test = [_case(rng, [(14, 26, 4), (27, 12, 6)])]
    diameters = {"x": np.array([2.5, 5.0])}
    split = {0: {"train": ["t1"], "val": ["v1"]}}
    result, lesions = compute_classical_result(cases, ["t1", "v1"], split, test, ["x"], diameters)
    assert [r["subject_id"] for r in result.per_subject] == ["x"]  # scored on the test set only
    counts = result.counts()
    assert counts[0, 0] == 2 and counts[0, 2] == 0  # both dots found
    assert result.counts("small")[0, 0] == 1  # only the 2.5 mm dot is <= 3 mm
    assert list(lesions["detected"]) == [True, True]
    assert result.n_params is None and "tuned on 1 validation subjects" in result.note
    assert result.froc is not None and result.froc.sensitivity[-1] == pytest.approx(1.0)
    with pytest.raises(InputError, match="fold 1: 0 validation and 1 test"):
        compute_classical_result(cases, ["t1", "v1"], {1: {"train": ["t1"], "val": ["nobody"]}}, test, ["x"],
                                 diameters)
    with pytest.raises(InputError, match="at least one fold split"):
        compute_classical_result(cases, ["t1", "v1"], {}, test, ["x"], diameters)


def test_method_result_label_falls_back_to_the_name() -> None:
    result = MethodResult("custom", (), None, None, 0.0, (0,))
    assert result.label == "custom" and result.counts().shape == (0, 3)
