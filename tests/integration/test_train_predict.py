"""`cmbstudy train` then `cmbstudy predict` on a tiny hand-built BIDS-like dataset (smoke profile)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cmbstudy.cli import main
from cmbstudy.data.io import save_nifti

SHAPE = (40, 36, 10)  # uneven: x, y, z (3 mm slices)


def _affine(flip_x: bool) -> np.ndarray:
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = (-20.0, -18.0, -15.0)
    if flip_x:  # an LAS subject: outputs must come back in its own orientation
        affine[0, 0], affine[0, 3] = -1.0, 20.0
    return affine


def _make_dataset(root: Path, n_subjects: int = 4) -> None:
    rng = np.random.default_rng(5)
    x, y, z = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    brain = ((x - 19.5) / 17) ** 2 + ((y - 17.5) / 15) ** 2 + ((z - 4.5) / 6) ** 2 <= 1
    rows = []
    for i in range(1, n_subjects + 1):
        label = f"{i:03d}"
        image = 100 + rng.normal(0, 4, SHAPE)
        mask = np.zeros(SHAPE, dtype=np.uint8)
        for _ in range(2 + i % 2):
            cx, cy, cz = rng.integers((8, 8, 2), (32, 28, 8))
            sphere = (x - cx) ** 2 + (y - cy) ** 2 + (3 * (z - cz)) ** 2 <= 2.0**2
            image[sphere] = 30.0
            mask[sphere] = 1
        image[~brain] = 5.0
        mask[~brain] = 0
        anat = root / f"sub-{label}" / "anat"
        affine = _affine(flip_x=i == 2)
        save_nifti(image, affine, anat / f"sub-{label}_T2starw.nii.gz", np.float32)
        save_nifti(mask, affine, anat / f"sub-{label}_label-CMB_mask.nii.gz", np.uint8)
        save_nifti(brain, affine, anat / f"sub-{label}_label-brain_mask.nii.gz", np.uint8)
        rows.append({"participant_id": f"sub-{label}", "aria_h_category": "1-4"})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))


@pytest.mark.slow
def test_train_then_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMBSTUDY_CACHE", str(tmp_path / "cache"))
    data, run, pred = tmp_path / "data", tmp_path / "run", tmp_path / "pred"
    _make_dataset(data)
    args = ["train", "--profile", "smoke", "--data", str(data), "--fold", "1", "--out", str(run),
            "--set", "train.slices_per_epoch=4", "--quiet"]
    assert main(args) == 0
    for name in ("profile.yaml", "split.json", "environment.json", "history.csv",
                 "checkpoint_last.pt", "checkpoint_best.pt", "result.json", "dataset.json", "operating_point.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "dataset.json").read_text())["data_root"] == str(data.resolve())
    assert yaml.safe_load((run / "profile.yaml").read_text())["train"]["slices_per_epoch"] == 4
    split = json.loads((run / "split.json").read_text())
    assert split["fold"] == 1 and split["stratified"] is True
    assert sorted(split["folds"][1]["train"] + split["folds"][1]["val"]) == ["001", "002", "003", "004"]
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert history["val_f1"].notna().all() or history["val_recall"].notna().all()
    result = json.loads((run / "result.json").read_text())
    assert result["fold"] == 1 and result["epochs"] == 2 and result["n_params"] > 0
    assert main(args) == 2  # an existing run is refused without --overwrite/--resume

    assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(pred), "--quiet"]) == 0
    table = pd.read_csv(pred / "predictions.tsv", sep="\t", dtype={"subject_id": str})
    assert table["subject_id"].tolist() == ["001", "002", "003", "004"]
    assert list(table.columns) == ["subject_id", "cmb_count", "n_candidates", "seconds_model", "seconds_post",
                                   "seconds_total", "brain_extraction"]
    info = json.loads((pred / "prediction.json").read_text())
    point = json.loads((run / "operating_point.json").read_text())  # chosen on the fold's validation subjects
    assert info["model"] == "rlk_unet_cbam" and info["profile"] == "smoke"
    # the run's second look (where its two validation subjects gave enough to learn from) is predict's default;
    # the map it writes holds the lesions at the rule prediction.json names
    if (run / "second_look.joblib").is_file():
        assert info["stages"] == 2 and table["n_candidates"].gt(0).all()
        assert (info["threshold"], info["min_voxels"]) == (point["second_look"], 1)
    else:
        assert point["second_look"] is None and "too few" in json.loads((run / "second_look.json").read_text())["note"]
        assert info["stages"] == 1 and table["n_candidates"].eq(0).all()
        assert (info["threshold"], info["min_voxels"]) == (point["threshold"], point["min_voxels"])
    assert info["operating_point"]["threshold"] == point["threshold"]
    for label in table["subject_id"]:
        source = nib.load(data / f"sub-{label}" / "anat" / f"sub-{label}_T2starw.nii.gz")
        prob = nib.load(pred / f"sub-{label}" / f"sub-{label}_desc-cmb_probseg.nii.gz")
        dseg = nib.load(pred / f"sub-{label}" / f"sub-{label}_desc-cmb_dseg.nii.gz")
        for img in (prob, dseg):
            assert img.shape == SHAPE
            np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
        assert dseg.get_data_dtype() == np.int16
        values = np.asarray(prob.dataobj)
        assert values.min() >= 0.0 and values.max() <= 1.0
        lesions = pd.read_csv(pred / f"sub-{label}" / f"sub-{label}_lesions.tsv", sep="\t")
        assert list(lesions.columns)[:4] == ["lesion_id", "x_vox", "y_vox", "z_vox"]
        count = int(table.loc[table.subject_id == label, "cmb_count"].iloc[0])
        assert len(lesions) == count == int(np.asarray(dseg.dataobj).max())

    val_pred = tmp_path / "pred_val"
    assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(val_pred),
                 "--split", "val", "--quiet"]) == 0
    val_ids = pd.read_csv(val_pred / "predictions.tsv", sep="\t", dtype={"subject_id": str})["subject_id"]
    assert val_ids.tolist() == split["folds"][1]["val"]


@pytest.mark.slow
def test_a_real_dataset_holds_out_a_saved_test_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cmbstudy.config import load_profile
    from cmbstudy.study.training_runs import train_and_evaluate

    monkeypatch.setenv("CMBSTUDY_CACHE", str(tmp_path / "cache"))
    data, results = tmp_path / "data", tmp_path / "results"
    _make_dataset(data, n_subjects=5)
    profile = load_profile("smoke", ["train.epochs=1", "train.slices_per_epoch=4", "study.test_fraction=0.2"])
    record = train_and_evaluate(profile, "rlk_unet_cbam", 0, data, results, device="cpu", progress=False)
    test = json.loads((results / "test_split.json").read_text())["test"]
    assert len(test) == 1  # a fifth of 5 subjects
    split = json.loads((record.run_dir / "split.json").read_text())
    trained_on = {s for fold in split["folds"] for part in fold.values() for s in part}
    assert trained_on == {f"{i:03d}" for i in range(1, 6)} - set(test)  # the test subject is in no fold
    assert json.loads((record.run_dir / "dataset.json").read_text())["held_out"] == test
    assert [r["subject_id"] for r in record.evaluation["per_subject"]] == test  # scored on it alone
    assert (record.run_dir / "operating_point.json").is_file()
    # the run timed its phases, and they add up to its time
    from cmbstudy.study.runs import PHASES

    assert list(record.phases) == list(PHASES)
    assert all(seconds >= 0 for phase, seconds in record.phases.items() if phase != "other")
    assert record.phases["training"] > 0 and record.phases["test inference"] > 0 and record.phases["scoring"] > 0
    history = pd.read_csv(record.run_dir / "history.csv")
    assert record.phases["training"] + record.phases["validation"] + record.phases["mining"] == pytest.approx(
        history["seconds"].sum(), abs=0.05)
    # `cmbstudy predict --split test` predicts the held-out subject of a run
    assert main(["predict", "--run", str(record.run_dir), "--data", str(data), "--split", "test",
                 "--out", str(tmp_path / "pred"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").glob("sub-*")) == [f"sub-{test[0]}"]
