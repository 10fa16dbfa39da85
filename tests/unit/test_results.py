"""Run names, the study's run list, and reading runs back from a results folder (tiny fake runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cmbstudy.config import load_profile
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.study.paper import PAPER_DATASET_LABEL, TABLE3_FOLDS, TABLE5
from cmbstudy.study.runs import (
    RUN_COLUMNS,
    collect_runs,
    load_run,
    load_runs,
    parse_overrides,
    run_name,
    run_path,
    training_instances,
)
from cmbstudy.study.tables.folds import cross_validation_scores, cross_validation_table
from cmbstudy.study.tables.format import ComparedRow, compare_with_paper, summary_scores


def _summary(tp: int, fp: int, fn: int, n_subjects: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn)
    f1 = 2 * tp / (2 * tp + fp + fn)
    return {
        "precision": precision, "recall": recall, "f1": f1, "fp_per_subject": fp / n_subjects,
        "n_ref": tp + fn, "n_subjects": n_subjects,
        "ci95": {"f1": [f1 - 0.1, f1 + 0.05], "precision": [None, None]},
        "small_lesions": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "fp_per_subject": 0.5},
    }


def _write_run(results: Path, name: str, summary: dict, *, skip: str = "") -> Path:
    run = results / "runs" / name
    (run / "pred-test").mkdir(parents=True)
    files = {
        "result.json": {"model": "rlk_unet_cbam", "n_params": 1234, "seconds": 12.5, "epochs": 2},
        "eval-test.json": {"summary": summary, "per_subject": []},
        "eval-test-valdo.json": {"summary": {**summary, "f1": 0.1}, "per_subject": []},
        "operating_point.json": {"threshold": 0.8, "min_voxels": 2, "source": "validation",
                                 "validation": {"f1": 0.6, "n_subjects": 3}},
        "pred-test/prediction.json": {"seconds_per_subject": 0.25, "threshold": 0.8},
    }
    for rel, data in files.items():
        if rel != skip:
            (run / rel).write_text(json.dumps(data))
    return run


def test_run_names_and_paths(tmp_path: Path) -> None:
    assert run_name("rlk_unet_cbam", 3) == "rlk_unet_cbam-fold3"
    assert run_name("rlk_unet_cbam", 0, "all") == "rlk_unet_cbam-fold0"
    assert run_name("fan2022", 1, "swi") == "fan2022-swi-fold1"
    assert run_path(tmp_path, "nnunet", 2) == tmp_path / "runs" / "nnunet-fold2"
    with pytest.raises(ConfigError, match="hold no '-'"):
        run_name("my-net", 0)
    with pytest.raises(ConfigError, match="modality 't1'"):
        run_name("nnunet", 0, "t1")


def test_parse_overrides_keeps_list_values() -> None:
    assert parse_overrides("study.cv_folds=[0,1],train.epochs=2, seed=7") == [
        "study.cv_folds=[0,1]", "train.epochs=2", "seed=7"
    ]
    assert parse_overrides("") == []


def test_training_instances_follow_the_study_section() -> None:
    smoke = load_profile("smoke")  # 2 folds: cv folds 2-4 of the default study do not exist
    names = [i["name"] for i in training_instances(smoke)]
    assert names[:3] == ["rlk_unet_cbam-fold0", "rlk_unet_cbam-fold1", "without_cbam-fold0"]
    assert names[-2:] == ["rlk_unet_cbam-gre-fold0", "rlk_unet_cbam-swi-fold0"]
    assert len(names) == 2 + 3 + 5 + 2
    small = load_profile("smoke", ["study.baselines=[]", "study.ablation=[without_cbam, rlk_unet_cbam]",
                                   "study.cross_modality=false", "study.comparison_folds=[1]"])
    assert training_instances(small) == [
        {"name": "rlk_unet_cbam-fold0", "variant": "rlk_unet_cbam", "fold": 0, "modality": None},
        {"name": "rlk_unet_cbam-fold1", "variant": "rlk_unet_cbam", "fold": 1, "modality": None},
        {"name": "without_cbam-fold1", "variant": "without_cbam", "fold": 1, "modality": None},
    ]
    with pytest.raises(ConfigError, match=r"train.n_folds=2"):
        training_instances(load_profile("smoke", ["study.cv_folds=[3, 4]"]))
    with pytest.raises(ConfigError, match="not variants"):
        training_instances(load_profile("smoke", ["study.baselines=[unet9000]"]))


def test_load_run_reads_every_file(tmp_path: Path) -> None:
    _write_run(tmp_path, "rlk_unet_cbam-gre-fold1", _summary(3, 1, 1, 2))
    record = load_run(tmp_path, "rlk_unet_cbam-gre-fold1")
    assert (record.variant, record.fold, record.modality) == ("rlk_unet_cbam", 1, "gre")
    assert record.evaluation["summary"]["f1"] == pytest.approx(0.75)  # the test set
    assert record.evaluation_valdo["summary"]["f1"] == 0.1
    assert record.operating_point["threshold"] == 0.8 and record.validation == {"f1": 0.6, "n_subjects": 3}
    assert (record.n_params, record.train_seconds, record.seconds_per_subject) == (1234, 12.5, 0.25)


def test_missing_run_file_names_it_and_the_step(tmp_path: Path) -> None:
    _write_run(tmp_path, "nnunet-fold0", _summary(1, 0, 1, 1), skip="eval-test.json")
    with pytest.raises(InputError, match=r"nnunet-fold0/eval-test.json does not exist.*03_training"):
        load_run(tmp_path, "nnunet-fold0")
    with pytest.raises(InputError, match=r"result.json does not exist"):
        load_run(tmp_path, "fan2022-fold0")
    with pytest.raises(InputError, match="not a run name"):
        load_run(tmp_path, "fold0")
    # a run that was never calibrated is unfinished
    _write_run(tmp_path, "rlk_unet_cbam-swi-fold0", _summary(1, 0, 1, 1), skip="operating_point.json")
    with pytest.raises(InputError, match="operating_point.json does not exist"):
        load_run(tmp_path, "rlk_unet_cbam-swi-fold0")
    found, missing = load_runs(tmp_path, ["nnunet-fold0", "rlk_unet_cbam-swi-fold0"])
    assert found == {} and missing == ["nnunet-fold0", "rlk_unet_cbam-swi-fold0"]


def test_collect_runs_one_row_per_finished_run(tmp_path: Path) -> None:
    _write_run(tmp_path, "rlk_unet_cbam-fold0", _summary(3, 1, 1, 2))
    _write_run(tmp_path, "rlk_unet_cbam-gre-fold0", _summary(1, 3, 0, 3))
    _write_run(tmp_path, "without_cbam-fold0", _summary(1, 1, 1, 1), skip="result.json")
    (tmp_path / "runs" / ".cmbstudy_cache").mkdir()
    with pytest.warns(UserWarning, match="without_cbam-fold0 left out"):
        frame = collect_runs(tmp_path)
    assert list(frame.columns) == list(RUN_COLUMNS)
    assert list(frame["name"]) == ["rlk_unet_cbam-fold0", "rlk_unet_cbam-gre-fold0"]
    first = frame.iloc[0]
    assert first["modality"] == "all" and frame.iloc[1]["modality"] == "gre"
    assert first["f1"] == pytest.approx(0.75)
    assert first["f1_ci_low"] == pytest.approx(0.65) and first["f1_ci_high"] == pytest.approx(0.80)
    assert math.isnan(first["precision_ci_low"]) and math.isnan(first["recall_ci_low"])
    assert frame.iloc[1]["fp_per_subject"] == pytest.approx(1.0)
    assert first["small_f1"] == pytest.approx(1 / 3)
    assert (first["n_ref"], first["n_subjects"]) == (4, 2)
    assert (first["threshold"], first["min_voxels"], first["val_f1"]) == (0.8, 2, 0.6)
    assert collect_runs(tmp_path / "nothing").empty


def test_cross_validation_table_pairs_folds_and_paper(tmp_path: Path) -> None:
    _write_run(tmp_path, "rlk_unet_cbam-fold0", _summary(1, 1, 1, 2))  # F1 0.5
    _write_run(tmp_path, "rlk_unet_cbam-fold1", _summary(7, 3, 3, 2))  # F1 0.7
    records = [load_run(tmp_path, f"rlk_unet_cbam-fold{k}") for k in (1, 0)]
    scores = cross_validation_scores(records)
    assert list(scores.index) == [0, 1, "mean", "sd"]
    assert scores.loc["mean", "f1"] == pytest.approx(0.6)
    assert scores.loc["sd", "f1"] == pytest.approx(math.sqrt(0.02))
    assert scores.loc["mean", "fp_per_subject"] == pytest.approx(1.0)
    table = cross_validation_table(scores, "synthetic cohort")
    assert list(table.index) == ["fold 0 (paper fold 1)", "fold 1 (paper fold 2)", "mean", "sd"]
    assert table.loc["fold 1 (paper fold 2)", ("F1", PAPER_DATASET_LABEL)] == f"{TABLE3_FOLDS[1]['f1']:.3f}"
    assert table.loc["mean", ("F1", "ours (synthetic cohort)")] == "0.600"
    assert table.loc["sd", ("F1", "ours (synthetic cohort)")] == f"{math.sqrt(0.02):.3f}"
    assert table.loc["mean", ("F1", "95% CI")] == "n/a"  # no interval for a mean
    assert table.loc["fold 0 (paper fold 1)", ("F1", "95% CI")] == "[0.400, 0.550]"
    with pytest.raises(InputError, match="at least one finished run"):
        cross_validation_scores([])


def test_compare_with_paper_marks_missing_rows() -> None:
    rows = [ComparedRow("GRE -> SWI", summary_scores(_summary(3, 1, 1, 2)), TABLE5["GRE -> SWI"]),
            ComparedRow("SWI -> GRE", None, TABLE5["SWI -> GRE"])]
    table = compare_with_paper(rows, "synthetic cohort")
    assert table.loc["GRE -> SWI", ("F1", PAPER_DATASET_LABEL)] == f"{TABLE5['GRE -> SWI']['f1']:.3f}"
    assert table.loc["GRE -> SWI", ("F1", "ours (synthetic cohort)")] == "0.750"
    assert table.loc["GRE -> SWI", ("F1", "95% CI")] == "[0.650, 0.800]"
    assert table.loc["GRE -> SWI", ("FP / subject", "ours (synthetic cohort)")] == "0.50"  # two decimals
    assert table.loc["GRE -> SWI", ("precision", "95% CI")] == "n/a"  # null bounds
    assert table.loc["SWI -> GRE", ("F1", "ours (synthetic cohort)")] == "n/a"
    assert table.loc["SWI -> GRE", ("F1", "95% CI")] == "not run"
    extra = compare_with_paper(rows, "x", metrics=("f1", "median_f1"), extra={"note": ["a", "b"]})
    assert list(extra.columns.get_level_values(0)) == ["F1"] * 3 + ["median_f1"] * 3 + [""]
    assert extra.loc["SWI -> GRE", ("", "note")] == "b"
    with pytest.raises(InputError, match="dataset label"):
        compare_with_paper(rows, " ")
    with pytest.raises(InputError, match="extra column 'note' has 1 values for 2 rows"):
        compare_with_paper(rows, "x", extra={"note": ["a"]})


def test_ablation_arms_are_the_papers_and_one_switch_makes_them() -> None:
    from cmbstudy.config import resolve_variant
    from cmbstudy.study.paper import TABLE8
    from cmbstudy.study.tables.ablation import cbam_arm

    profile = load_profile("paper")  # every arm (the quick profile trains the two end points only)
    arms = [*profile.study.ablation, profile.study.main]
    assert [cbam_arm(profile, v) for v in arms] == list(TABLE8)  # Without CBAM, CBAM-Skip1, -Skip2, -AllSkip
    resolved = [resolve_variant(profile, v).model for v in arms]
    assert {m.name for m in resolved} == {"rlk_unet_cbam"}  # no second registry name for "no CBAM"
    assert [m.cbam_skips for m in resolved] == [0, 1, 2, -1]
    assert cbam_arm(load_profile("quick", ["model.cbam_skips=4"]), "rlk_unet_cbam") == "CBAM-AllSkip"
