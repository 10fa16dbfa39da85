"""Per-subject analyses of the figure notebooks: agreement, false positives by mimic, groups, tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmbstudy.data.datasets import Subject
from cmbstudy.errors import InputError
from cmbstudy.evaluation.evaluate import evaluate_volume
from cmbstudy.study.examples import (
    select_example_slices,
    select_example_subjects,
    select_small_lesion_slices,
)
from cmbstudy.study.tables.beyond import (
    _rule_scores,
    load_inference_times,
    summarize_by_group,
)
from cmbstudy.study.tables.burden import compute_agreement
from cmbstudy.study.tables.errors import (
    NO_MIMIC,
    classify_false_positives,
    summarize_fp_mimics,
)


def test_agreement_and_linear_weighted_kappa_by_hand() -> None:
    # rows (reference) totals 3, 1; columns (predicted) 2, 2; one subject off by one category of four.
    # weights |i-j|/3: observed sum(w O) = 1/3; expected E = r c / n: E01 = 1.5, E10 = 0.5 -> sum(w E) = 2/3.
    confusion = np.zeros((4, 4), dtype=int)
    confusion[0, 0], confusion[0, 1], confusion[1, 1] = 2, 1, 1
    out = compute_agreement(confusion)
    assert out["n"] == 4 and out["agreement"] == pytest.approx(0.75)
    assert out["weighted_kappa"] == pytest.approx(1 - (1 / 3) / (2 / 3))
    assert compute_agreement(np.diag([1, 2, 3, 4]))["weighted_kappa"] == pytest.approx(1.0)
    assert np.isnan(compute_agreement(np.diag([5, 0, 0, 0]))["weighted_kappa"])  # one category: undefined
    with pytest.raises(InputError, match="square matrix"):
        compute_agreement(np.ones((3, 4)))


def _tiny_volume() -> tuple[np.ndarray, np.ndarray]:
    pred = np.zeros((12, 12, 3), dtype=np.int32)
    mimic = np.zeros((12, 12, 3), dtype=np.uint8)
    pred[1, 1:4, 1] = 1  # three voxels: two on a vein, one on a calcification
    mimic[1, 1:3, 1] = 1
    mimic[1, 3, 1] = 2
    pred[6, 6, 1] = 2  # two voxels from an air-tissue artefact along X
    mimic[8, 6, 1] = 3
    pred[11, 11, 2] = 3  # far from every mimic
    return pred, mimic


def test_false_positives_named_after_overlap_or_nearest_mimic() -> None:
    pred, mimic = _tiny_volume()
    table = classify_false_positives(pred, [0, 1, 2], mimic, spacing_mm=(1.0, 1.0, 1.0), max_distance_mm=3.0)
    assert list(table["mimic"]) == ["vein", "air-tissue artefact", NO_MIMIC]
    assert table["overlap"].tolist()[:2] == pytest.approx([2 / 3, 0.0])
    assert table["distance_mm"].tolist()[:2] == pytest.approx([0.0, 2.0])
    assert table["n_voxels"].tolist() == [3, 1, 1]
    # 2 mm voxels along X: the artefact is 4 mm away, beyond 3 mm
    wide = classify_false_positives(pred, [1], mimic, spacing_mm=(2.0, 1.0, 1.0), max_distance_mm=3.0)
    assert wide["mimic"].tolist() == [NO_MIMIC]
    assert classify_false_positives(pred, [], mimic).empty
    with pytest.raises(InputError, match="name no component"):
        classify_false_positives(pred, [3], mimic)
    with pytest.raises(InputError, match="one grid"):
        classify_false_positives(pred, [0], mimic[:-1])


def test_fp_summary_counts_and_shares() -> None:
    table = pd.DataFrame({"mimic": ["vein", "vein", "calcification", NO_MIMIC]})
    summary = summarize_fp_mimics(table, n_subjects=2)
    assert summary.loc["vein"].tolist() == pytest.approx([2, 0.5, 1.0])
    assert summary.loc["air-tissue artefact", "false_positives"] == 0
    assert summary.index[-1] == NO_MIMIC and summary["share"].sum() == pytest.approx(1.0)
    with pytest.raises(InputError, match="at least one subject"):
        summarize_fp_mimics(table, 0)


def _subject(sid: str, site: str, modality: str) -> Subject:
    return Subject(sid, Path(f"{sid}.nii.gz"), Path(f"{sid}_mask.nii.gz"), modality, site, None)


def test_results_by_site_pool_lesions_within_groups() -> None:
    subjects = [_subject("1", "A", "gre"), _subject("2", "A", "gre"), _subject("3", "B", "swi")]
    rows = pd.DataFrame({"subject_id": ["1", "2", "3"], "n_ref": [3, 1, 2],
                         "n_tp": [2, 1, 0], "n_fp": [1, 3, 2], "n_fn": [1, 0, 2]})
    table = summarize_by_group(rows, subjects, "site")
    assert table.loc["A", "precision"] == pytest.approx(3 / 7) and table.loc["A", "recall"] == pytest.approx(3 / 4)
    assert table.loc["A", "f1"] == pytest.approx(6 / 11) and table.loc["A", "fp_per_subject"] == pytest.approx(2.0)
    assert table.loc["B", "n_ref"] == 2 and table.loc["B", "recall"] == 0.0
    assert summarize_by_group(rows, subjects, "modality").index.tolist() == ["gre", "swi"]
    with pytest.raises(InputError, match="not in the dataset"):
        summarize_by_group(rows.assign(subject_id=["1", "2", "9"]), subjects, "site")
    with pytest.raises(InputError, match="use 'site' or 'modality'"):
        summarize_by_group(rows, subjects, "scanner")


def test_rule_and_ci_tables_put_values_in_their_columns(tmp_path: Path) -> None:
    # the tables of notebook 12 are compare_with_paper rows built from evaluation summaries
    summary = {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "fp_per_subject": 2.0, "median_f1": 0.4,
               "iqr_f1": [0.2, 0.6], "mean_abs_count_difference": 1.5,
               "ci95": {"f1": [0.1, 0.5], "precision": None}}
    scores = _rule_scores(summary)
    assert scores["f1_q3"] == pytest.approx(0.6) and scores["f1_ci_low"] == pytest.approx(0.1)
    assert math.isnan(scores["precision_ci_low"])
    assert math.isnan(_rule_scores({**summary, "iqr_f1": None})["f1_q3"])
    assert all(math.isnan(v) for v in _rule_scores(None).values())


def test_inference_times_per_run_and_paper_row(tmp_path: Path) -> None:
    pred = tmp_path / "runs" / "m-fold0" / "pred-test"
    pred.mkdir(parents=True)
    (pred / "prediction.json").write_text(json.dumps({"model": "m", "device": "cpu", "n_subjects": 3,
                                                       "seconds_per_subject": 1.25}))
    (pred.parent / "result.json").write_text(json.dumps({"n_params": 1234}))
    table = load_inference_times(tmp_path)
    assert table.index.tolist() == ["m-fold0", "paper (RTX A5000 Ada)"]
    assert table.loc["m-fold0", "seconds_per_subject"] == 1.25 and table.loc["m-fold0", "n_params"] == 1234
    assert table.iloc[-1]["seconds_per_subject"] == pytest.approx(0.22)
    (pred / "prediction.json").write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        load_inference_times(tmp_path)


def test_example_selection() -> None:
    subjects = [_subject("1", "A", "gre"), _subject("2", "A", "gre"), _subject("3", "B", "swi")]
    rows = pd.DataFrame({"subject_id": ["1", "2", "3"], "n_ref": [1, 5, 0]})
    assert select_example_subjects(rows, subjects, 3) == ["2", "3", "1"]
    assert select_example_subjects(rows, subjects, 1) == ["2"]

    class Volume:
        def __init__(self, mask: np.ndarray | None) -> None:
            self.mask = mask

    mask = np.zeros((4, 5, 5), dtype=np.uint8)
    mask[2, 1, 1:3] = 1
    mask[3, 0, 0] = 1
    volumes = [Volume(None), Volume(np.zeros((4, 5, 5), np.uint8)), Volume(mask), Volume(mask)]
    assert select_example_slices(volumes, 1) == [(2, 2)]
    assert select_example_slices(volumes, 3) == [(2, 2), (3, 2)]

    ref = np.zeros((20, 20, 6), dtype=np.uint8)
    ref[2, 2, 1] = ref[10, 10, 4] = ref[15, 15, 4] = 1
    ref[5:9, 5:9, 2:5] = 1  # 64 mm^3 with 1 mm voxels: about 5 mm, not small
    evaluation = evaluate_volume(ref.astype(np.float32), ref, np.eye(4))
    assert select_small_lesion_slices(evaluation, 1) == [4]
    assert select_small_lesion_slices(evaluation, 5) == [1, 4]
    with pytest.raises(InputError, match="n must be >= 1"):
        select_small_lesion_slices(evaluation, 0)
