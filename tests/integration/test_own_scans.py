"""A researcher's own scans: a skull-stripped VALDO-layout folder through detect -> evaluate and predict -> evaluate.

The folder is written from a synthetic smoke cohort the way VALDO 2021 Task 2
ships its data (``sub-<id>/sub-<id>_space-T2S_desc-masked_T2S.nii.gz``, the
CMB mask beside it, no brain mask, zeros outside the brain). ``detect`` gets
no flag but ``--out``: it must recognise the layout and the skull-stripping,
and ``evaluate`` must read what it wrote and score it exactly as it scores
``predict``'s folder made with the same (packaged) model.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cmbstudy.cli import main
from cmbstudy.config import load_profile
from cmbstudy.data.datasets import load_subjects
from cmbstudy.synth import make_cohort

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def valdo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("own-scans")
    make_cohort(work / "cohort", profile=load_profile("smoke"), n_subjects=3, seed=5, progress=False)
    root = work / "valdo"
    for k, subject in enumerate(load_subjects(work / "cohort")):
        label = f"{k + 1}{subject.subject_id}"  # VALDO labels start with the site digit
        image = nib.load(subject.image_path)
        brain = np.asarray(nib.load(subject.brain_mask_path).dataobj) > 0
        stripped = np.where(brain, np.asarray(image.dataobj, dtype=np.float32), 0.0).astype(np.float32)
        folder = root / f"sub-{label}"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(stripped, image.affine), folder / f"sub-{label}_space-T2S_desc-masked_T2S.nii.gz")
        cmb = nib.load(subject.mask_path)
        nib.save(nib.Nifti1Image(np.asarray(cmb.dataobj, dtype=np.uint8), cmb.affine),
                 folder / f"sub-{label}_space-T2S_CMB.nii.gz")
    return root


def _evaluate(pred: Path, ref: Path, out: Path) -> dict:
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--rule", "valdo", "--json", str(out),
                 "--quiet"]) == 0
    return json.loads(out.read_text())


def test_detect_then_evaluate_equals_predict_then_evaluate(valdo_folder: Path, tmp_path: Path) -> None:
    detected, predicted = tmp_path / "detected", tmp_path / "predicted"
    assert main(["detect", str(valdo_folder), "--out", str(detected), "--quiet"]) == 0
    summaries = sorted(detected.glob("sub-*/anat/*_summary.json"))
    assert len(summaries) == 3
    for path in summaries:
        info = json.loads(path.read_text())
        assert info["brain_extraction"]["method"] == "nonzero"
        assert info["brain_extraction"]["reason"].startswith("auto: the image is skull-stripped")
        assert info["model"]["source"] == "packaged:rlk_unet_cbam_quick"
    assert "skull-stripped" in (detected / "log.txt").read_text()
    assert main(["predict", "--model", "packaged", "--data", str(valdo_folder), "--out", str(predicted),
                 "--quiet"]) == 0
    by_detect = _evaluate(detected, valdo_folder, tmp_path / "detect.json")
    by_predict = _evaluate(predicted, valdo_folder, tmp_path / "predict.json")
    assert by_detect["per_subject"] == by_predict["per_subject"]
    for key in ("f1", "precision", "recall", "n_tp", "n_fp", "n_fn", "median_f1", "median_abs_count_difference"):
        assert by_detect["summary"][key] == by_predict["summary"][key], key
    assert by_detect["summary"]["n_ref"] > 0
    table = pd.read_csv(predicted / "predictions.tsv", sep="\t")
    assert table["brain_extraction"].str.startswith("auto: the image is skull-stripped").all()


def test_outputs_are_readable_by_the_group(valdo_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scan = next(valdo_folder.glob("sub-*/*_desc-masked_T2S.nii.gz"))
    previous = os.umask(0o022)
    try:
        assert main(["detect", str(scan), "--out", str(out), "--quiet", "--no-location"]) == 0
    finally:
        os.umask(previous)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".nii.gz") for p in files) and any(p.suffix == ".pdf" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
