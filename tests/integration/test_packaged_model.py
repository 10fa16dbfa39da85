"""The model shipped in cmbstudy/weights/ loads, says where it came from, and detects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmbstudy.cli import main
from cmbstudy.config import load_profile
from cmbstudy.inference.model_store import (
    WEIGHTS_STORAGE,
    load_detection_model,
    packaged_model_path,
)
from cmbstudy.synth import make_cohort

pytestmark = pytest.mark.slow


def test_packaged_model_provenance() -> None:
    path = packaged_model_path()
    assert path is not None, "cmbstudy/weights/rlk_unet_cbam_quick.pt is missing from the package"
    assert path.stat().st_size < 2_000_000  # the repository keeps no file of 2 MB or more
    model = load_detection_model()
    assert model.trained_on_synthetic
    assert "synthetic" in model.intended_use and "not a medical device" in model.intended_use
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance["training_data"]["layout"] == "synthetic"
    assert provenance["profile"]["name"] == "quick" and provenance["fold"] == 0
    point = provenance["operating_point"]
    assert point["source"] == "validation" and 0.0 < point["validation"]["f1"] <= 1.0
    assert model.operating_point.threshold == point["threshold"]  # what detect uses
    assert provenance["command"].startswith("make weights")
    assert provenance["weights_storage"] == WEIGHTS_STORAGE
    assert provenance["training_data"]["cmbstudy"]["n_subjects"] > load_profile("quick").synth.n_subjects
    # the shipped weights must match the quick profile's network and preprocessing:
    # a change to either without retraining and re-exporting fails here
    quick = load_profile("quick")
    assert model.profile.model == quick.model and model.profile.preprocess == quick.preprocess


def test_detect_without_model_uses_the_packaged_one(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    make_cohort(cohort, profile=load_profile("smoke"), n_subjects=1, seed=3, progress=False)
    scan = next(cohort.glob("sub-*/anat/sub-*_T2starw.nii.gz"), None) or next(cohort.glob("sub-*/anat/sub-*_swi.nii.gz"))
    out = tmp_path / "out"
    assert main(["detect", str(scan), "--out", str(out), "--quiet"]) == 0
    summary = json.loads(next(out.glob("sub-*/anat/*_summary.json")).read_text())
    assert summary["aria_h_category"] in ("0", "1-4", "5-9", ">=10")
    assert "synthetic" in summary["intended_use"]
    assert next(out.glob("sub-*/anat/*_report.png")).stat().st_size > 10_000
