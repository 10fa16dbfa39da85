"""`cmbstudy detect` agrees with `cmbstudy predict` + evaluation on the same subject and model."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cmbstudy.cli import main
from cmbstudy.evaluation.evaluate import evaluate_predictions
from cmbstudy.synth import make_cohort

TINY = ["--set", "train.epochs=1", "--set", "model.widths=[4,8,8,8]", "--set", "train.slices_per_epoch=4"]


@pytest.mark.slow
def test_detect_matches_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CMBSTUDY_CACHE", str(tmp_path / "cache"))
    data, run = tmp_path / "data", tmp_path / "run"
    make_cohort(data, profile="smoke", n_subjects=4, progress=False)
    assert main(["train", "--profile", "smoke", "--data", str(data), "--fold", "0", "--out", str(run),
                 "--quiet", *TINY]) == 0
    pred0 = tmp_path / "pred0"
    assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(pred0), "--quiet"]) == 0
    label = "002"
    anat = data / f"sub-{label}" / "anat"
    image = next(p for p in sorted(anat.glob(f"sub-{label}_*.nii.gz"))
                 if p.name.endswith(("_T2starw.nii.gz", "_swi.nii.gz")) and "part-phase" not in p.name)
    # detect and predict both default to the run's calibrated operating point; an untrained model may
    # find nothing there, and then both take this subject's tenth-highest probability as threshold
    threshold_args: list[str] = []
    counts = pd.read_csv(pred0 / "predictions.tsv", sep="\t", dtype={"subject_id": str}).set_index("subject_id")
    pred = pred0
    if counts.loc[label, "cmb_count"] == 0:
        prob = np.asarray(nib.load(pred0 / f"sub-{label}" / f"sub-{label}_desc-cmb_probseg.nii.gz").dataobj)
        threshold_args = ["--threshold", str(float(np.sort(prob.ravel())[-10]))]
        pred = tmp_path / "pred"
        assert main(["predict", "--run", str(run), "--data", str(data), "--out", str(pred), "--quiet",
                     *threshold_args]) == 0
    report = evaluate_predictions(pred, data, connectivity=26, n_bootstrap=10, progress=False)
    n_pred = next(r["n_pred"] for r in report.per_subject if r["subject_id"] == label)
    assert n_pred > 0

    out = tmp_path / "detect"
    capsys.readouterr()
    assert main(["detect", str(image), "--model", str(run), "--out", str(out), "--quiet",
                 "--brain-mask", str(anat / f"sub-{label}_label-brain_mask.nii.gz"),
                 *threshold_args]) == 0
    printed = capsys.readouterr().out
    folder = out / f"sub-{label}" / "anat"
    for suffix in ("desc-cmb_dseg.nii.gz", "desc-cmb_probseg.nii.gz", "lesions.tsv", "summary.json", "report.png"):
        assert (folder / f"sub-{label}_{suffix}").is_file(), suffix
    assert (out / "dataset_description.json").is_file()
    summary = json.loads((folder / f"sub-{label}_summary.json").read_text())
    predicted = pd.read_csv(pred / "predictions.tsv", sep="\t", dtype={"subject_id": str}).set_index("subject_id")
    assert summary["cmb_count"] == n_pred == int(predicted.loc[label, "cmb_count"])
    assert summary["brain_extraction"] == {"method": "mask",
                                           "reason": f"auto: the given brain mask (sub-{label}_label-brain_mask.nii.gz)"}
    assert f"{label}: {n_pred} CMB(s)" in printed
    ours = np.asarray(nib.load(folder / f"sub-{label}_desc-cmb_dseg.nii.gz").dataobj)
    theirs = np.asarray(nib.load(pred / f"sub-{label}" / f"sub-{label}_desc-cmb_dseg.nii.gz").dataobj)
    np.testing.assert_array_equal(ours, theirs)
    source = nib.load(image)
    np.testing.assert_allclose(nib.load(folder / f"sub-{label}_desc-cmb_dseg.nii.gz").affine, source.affine,
                               atol=1e-5)
