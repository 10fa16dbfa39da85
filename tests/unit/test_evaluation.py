"""End-to-end tests of cmbstudy.evaluation on a tiny dataset + prediction folder in tmp_path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cmbstudy.cli import main
from cmbstudy.data.io import save_nifti
from cmbstudy.data.prediction_folder import prediction_path
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.evaluation.evaluate import evaluate_predictions, evaluate_volume

SHAPE = (21, 22, 23)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # 1 x 1 x 2 mm voxels: a voxel is 2 mm^3
LESION_HEADER = "lesion_id\tx_vox\ty_vox\tz_vox\tx_mm\ty_mm\tz_mm\tdiameter_mm\tchi_ppm\tlocation\tsmall\n"


def _write_subject(root: Path, sid: str, mask: np.ndarray, lesion_rows: list[str]) -> None:
    anat = root / f"sub-{sid}" / "anat"
    image = np.full(SHAPE, 100.0, dtype=np.float32)
    save_nifti(image, AFFINE, anat / f"sub-{sid}_T2starw.nii.gz")
    save_nifti(mask, AFFINE, anat / f"sub-{sid}_label-CMB_mask.nii.gz", dtype=np.uint8)
    (anat / f"sub-{sid}_lesions.tsv").write_text(LESION_HEADER + "".join(lesion_rows))


def _write_prediction(pred: Path, sid: str, prob: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    save_nifti(prob, affine, prediction_path(pred, sid))


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path]:
    """Reference root (synthetic layout) and prediction folder, numbers worked out below.

    sub-001 reference: A = 2x2x2 cube at voxels 3..4 (centroid (3.5, 3.5, 3.5), 8 voxels = 16 mm^3,
    lesions.tsv diameter 4.0 mm: large) and B = one voxel at (15, 15, 15) (diameter 2.0 mm: small).
    sub-001 prediction: the cube A with p = 0.9 (TP), one voxel at (10, 10, 10) with p = 0.7
    (FP; 2 mm^3 -> equivalent diameter 1.56 mm: small), nothing at B (FN, small).
    sub-002 reference: empty. Prediction: one voxel at (5, 5, 5) with p = 0.6 (FP, small).
    Pooled: TP 1, FP 2, FN 1 -> precision 1/3, recall 1/2, F1 2/(2+2+1) = 0.4, FP/subject 1.0.
    <= 3 mm: TP 0, FP 2, FN 1.
    """
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    (ref / "dataset_description.json").write_text(json.dumps({
        "Name": "tiny", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "cmbstudy": {"dataset": "synthetic", "profile": "smoke", "seed": 0, "n_subjects": 2},
    }))
    (ref / "participants.tsv").write_text("participant_id\tmodality\tsite\nsub-001\tgre\tA\nsub-002\tgre\tA\n")
    mask1 = np.zeros(SHAPE, dtype=np.uint8)
    mask1[3:5, 3:5, 3:5] = 1
    mask1[15, 15, 15] = 1
    _write_subject(ref, "001", mask1, [
        "1\t3.5\t3.5\t3.5\t3.5\t3.5\t7.0\t4.0\t0.4\tdeep\tfalse\n",
        "2\t15\t15\t15\t15\t15\t30\t2.0\t0.4\tlobar\ttrue\n",
    ])
    _write_subject(ref, "002", np.zeros(SHAPE, dtype=np.uint8), [])
    prob1 = np.zeros(SHAPE, dtype=np.float32)
    prob1[3:5, 3:5, 3:5] = 0.9
    prob1[10, 10, 10] = 0.7
    prob1[0, 0, 0] = 0.3  # below threshold: ignored
    _write_prediction(pred, "001", prob1)
    prob2 = np.zeros(SHAPE, dtype=np.float32)
    prob2[5, 5, 5] = 0.6
    _write_prediction(pred, "002", prob2)
    return ref, pred


def test_paper_rule_end_to_end_and_json(study: tuple[Path, Path], tmp_path: Path) -> None:
    ref, pred = study
    out = tmp_path / "out" / "metrics.json"
    report = evaluate_predictions(pred, ref, rule="paper", json_out=out, n_bootstrap=50, progress=False)
    s = report.summary
    assert (s["n_tp"], s["n_fp"], s["n_fn"], s["n_subjects"]) == (1, 2, 1, 2)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.4) and s["fp_per_subject"] == pytest.approx(1.0)
    small = s["small_lesions"]
    assert (small["n_tp"], small["n_fp"], small["n_fn"], small["n_ref"]) == (0, 2, 1, 1)
    # FROC: scores 0.9 (TP), 0.7 (FP), 0.6 (FP); 2 references, 2 subjects
    np.testing.assert_allclose(report.froc.sensitivity, [0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(report.froc.fp_per_subject, [0, 0, 0.5, 1.0])
    assert s["froc"]["0.5"] == pytest.approx(0.5)
    # ARIA-H: sub-001 2 -> 2 ("1-4", "1-4"); sub-002 0 -> 1 ("0", "1-4")
    np.testing.assert_array_equal(s["aria_h_confusion"][:2, :2], [[0, 1], [0, 1]])
    rows = {r["subject_id"]: r for r in report.per_subject}
    assert (rows["001"]["n_ref"], rows["001"]["n_pred"], rows["001"]["f1"]) == (2, 2, 0.5)
    assert rows["002"]["f1"] == 0.0 and math.isnan(rows["002"]["recall"])  # paper: F1 0 with only FPs
    assert rows["001"]["n_ref_small"] == 1 and rows["001"]["n_fn_small"] == 1

    data = json.loads(out.read_text())
    for key in ("precision", "recall", "f1", "fp_per_subject", "n_tp", "n_fp", "n_fn", "n_subjects",
                "median_f1", "iqr_f1", "mean_abs_count_difference", "ci95", "small_lesions", "froc"):
        assert key in data["summary"]
    per = {r["subject_id"]: r for r in data["per_subject"]}
    assert per["002"]["recall"] is None and per["002"]["precision"] == 0.0
    assert data["settings"]["distance_unit"] == "voxels" and data["settings"]["distance"] == 4.0
    assert not list(out.parent.glob(".*.tmp"))
    table = report.format_table()
    assert "rule paper" in table and "0.333" in table and "<=3 mm" in table and "002" in table


def test_threshold_follows_prediction_json(study: tuple[Path, Path]) -> None:
    """Both rules use predict's threshold (its operating point); an argument wins."""
    ref, pred = study
    (pred / "prediction.json").write_text(json.dumps({"threshold": 0.65}))
    paper = evaluate_predictions(pred, ref, rule="paper", n_bootstrap=10, progress=False).summary
    # at 0.65 the 0.6 voxel of sub-002 is gone: TP 1 (p 0.9), FP 1 (p 0.7), FN 1
    assert paper["threshold"] == 0.65 and (paper["n_tp"], paper["n_fp"], paper["n_fn"]) == (1, 1, 1)
    valdo = evaluate_predictions(pred, ref, rule="valdo", n_bootstrap=10, progress=False).summary
    assert valdo["threshold"] == 0.65 and valdo["n_fp"] == 1  # the 0.6 false positive is gone here too
    (pred / "prediction.json").write_text(json.dumps({"threshold": 0.65, "min_voxels": 2}))
    for rule in ("paper", "valdo"):  # the minimum size follows predict too: only the 8-voxel cube is left
        summary = evaluate_predictions(pred, ref, rule=rule, n_bootstrap=10, progress=False).summary
        assert (summary["min_voxels"], summary["n_pred"], summary["n_fp"]) == (2, 1, 0)
    given = evaluate_predictions(pred, ref, rule="paper", threshold=0.8, n_bootstrap=10, progress=False).summary
    assert given["threshold"] == 0.8 and (given["n_tp"], given["n_fp"]) == (1, 0)
    (pred / "prediction.json").write_text("{not json")
    with pytest.raises(InputError, match=r"prediction\.json cannot be read as JSON"):
        evaluate_predictions(pred, ref, rule="paper", progress=False)


def test_valdo_rule_end_to_end(study: tuple[Path, Path]) -> None:
    ref, pred = study
    report = evaluate_predictions(pred, ref, rule="valdo", n_bootstrap=20, progress=False)
    s = report.summary
    assert (s["n_tp"], s["n_fp"], s["n_fn"]) == (1, 2, 1) and s["distance"] == 5.0
    # per-subject VALDO F1: sub-001 0.5, sub-002 undefined (empty reference) -> median 0.5 over 1 subject
    assert s["median_f1"] == pytest.approx(0.5) and s["n_subjects_with_f1"] == 1
    assert s["mean_abs_count_difference"] == pytest.approx(0.5)  # |2-2| and |1-0|
    rows = {r["subject_id"]: r for r in report.per_subject}
    assert math.isnan(rows["002"]["f1"])
    assert report.to_json()["per_subject"][1]["f1"] is None


def test_valdo_mm_distance_vs_paper_voxels(study: tuple[Path, Path], tmp_path: Path) -> None:
    # shift sub-001's predicted cube by 3 slices (z + 3 voxels = 6 mm): paper 3 voxels -> TP,
    # VALDO 6 mm > 5 mm -> FP + FN
    ref, pred = study
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[3:5, 3:5, 6:8] = 0.9
    _write_prediction(pred, "001", prob)
    paper = evaluate_predictions(pred, ref, rule="paper", n_bootstrap=10, progress=False)
    valdo = evaluate_predictions(pred, ref, rule="valdo", n_bootstrap=10, progress=False)
    assert paper.per_subject[0]["n_tp"] == 1 and valdo.per_subject[0]["n_tp"] == 0
    exact = evaluate_predictions(pred, ref, rule="valdo", distance=6.0, n_bootstrap=10, progress=False)
    assert exact.per_subject[0]["n_tp"] == 0  # the VALDO code's match is strict: 6.0 mm is not below 6.0
    wider = evaluate_predictions(pred, ref, rule="valdo", distance=6.01, n_bootstrap=10, progress=False)
    assert wider.per_subject[0]["n_tp"] == 1


def test_missing_prediction_strict_and_only_predicted(study: tuple[Path, Path]) -> None:
    ref, pred = study
    prediction_path(pred, "002").unlink()
    with pytest.raises(InputError, match=r"no prediction .*002.*cmbstudy predict.*--only-predicted"):
        evaluate_predictions(pred, ref, progress=False)
    report = evaluate_predictions(pred, ref, only_predicted=True, n_bootstrap=10, progress=False)
    assert [r["subject_id"] for r in report.per_subject] == ["001"]
    assert report.summary["n_subjects"] == 1 and report.summary["fp_per_subject"] == 1.0
    # the same through the command line
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--quiet"]) == 2
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--only-predicted", "--quiet"]) == 0


def test_grid_mismatch_and_bad_inputs(study: tuple[Path, Path], tmp_path: Path) -> None:
    ref, pred = study
    _write_prediction(pred, "002", np.zeros(SHAPE, dtype=np.float32), affine=np.diag([1.0, 1.0, 3.0, 1.0]))
    with pytest.raises(InputError, match="different affine"):
        evaluate_predictions(pred, ref, progress=False)
    _write_prediction(pred, "002", np.zeros((21, 22, 24), dtype=np.float32))
    with pytest.raises(InputError, match=r"shape \(21, 22, 24\)"):
        evaluate_predictions(pred, ref, progress=False)
    _write_prediction(pred, "002", np.full(SHAPE, 2.0, dtype=np.float32))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        evaluate_predictions(pred, ref, progress=False)
    with pytest.raises(InputError, match="does not exist"):
        evaluate_predictions(tmp_path / "nowhere", ref, progress=False)
    with pytest.raises(ConfigError, match="'froc'"):
        evaluate_predictions(pred, ref, rule="froc", progress=False)
    with pytest.raises(ConfigError, match="connectivity 8"):
        evaluate_predictions(pred, ref, connectivity=8, progress=False)


def test_evaluate_volume_connectivity_changes_counts() -> None:
    # a diagonal pair of voxels in the prediction: one lesion with 26-, two with 6-connectivity
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[8, 8, 8] = 1
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[8, 8, 8] = prob[9, 9, 9] = 0.8
    r26 = evaluate_volume(prob, ref, AFFINE, connectivity=26).row
    r6 = evaluate_volume(prob, ref, AFFINE, connectivity=6).row
    assert (r26["n_pred"], r26["n_tp"], r26["n_fp"]) == (1, 1, 0)
    assert (r6["n_pred"], r6["n_tp"], r6["n_fp"]) == (2, 1, 1)


def test_evaluate_cli_takes_a_model_set_and_a_distance_unit(study: tuple[Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from cmbstudy.cli import main

    ref, pred = study
    out = tmp_path / "valdo.json"
    args = ["evaluate", "--pred", str(pred), "--ref", str(ref), "--rule", "valdo", "--quiet"]
    assert main([*args, "--set", "evaluation.valdo_distance_mm=0.5", "--set", "evaluation.n_bootstrap=5",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["distance"] == 0.5 and report["settings"]["n_bootstrap"] == 5
    assert main([*args, "--distance-unit", "voxels"]) == 2
    assert "--distance-unit voxels needs --distance" in capsys.readouterr().err
    assert main([*args, "--model", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_evaluate_with_a_model_takes_its_operating_point_where_the_folder_has_none(
        study: tuple[Path, Path], tmp_path: Path) -> None:
    from test_detect import _run_folder

    from cmbstudy.cli import main

    ref, pred = study  # predictions at 0.9, written without prediction.json
    run = _run_folder(tmp_path / "run")
    (run / "operating_point.json").write_text(json.dumps({"threshold": 0.95, "min_voxels": 1, "source": "validation"}))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--model", str(run), "--quiet",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["threshold"] == 0.95 and report["summary"]["n_pred"] == 0
