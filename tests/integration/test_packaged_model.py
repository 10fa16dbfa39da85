"""The model shipped in cmbstudy/weights/ loads, says where it came from, and detects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmbstudy.cli import main
from cmbstudy.config import load_profile
from cmbstudy.errors import InputError
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
    # the packaged second look: beside the network, with what made it; detect looks twice by default
    assert model.second_look is not None and model.operating_point.second_look == model.second_look.threshold
    assert path.with_name(f"{path.stem}.second_look.joblib").stat().st_size < 2_000_000
    made = json.loads(path.with_name(f"{path.stem}.second_look.json").read_text())
    assert made["provenance"]["model"] == "packaged:rlk_unet_cbam_quick"
    assert made["provenance"]["data"]["layout"] == "synthetic" and "data_root" not in made["provenance"]["data"]
    assert not set(made["provenance"]["validation_subjects"]) & set(made["provenance"]["training_subjects"])
    assert model.point_for(single_stage=True).second_look is None


def test_detect_without_model_uses_the_packaged_one(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    make_cohort(cohort, profile=load_profile("smoke"), n_subjects=1, seed=3, progress=False)
    scan = next(cohort.glob("sub-*/anat/sub-*_T2starw.nii.gz"), None) or next(cohort.glob("sub-*/anat/sub-*_swi.nii.gz"))
    out = tmp_path / "out"
    assert main(["detect", str(scan), "--out", str(out), "--quiet"]) == 0
    summary = json.loads(next(out.glob("sub-*/anat/*_summary.json")).read_text())
    assert summary["aria_h_category"] in ("0", "1-4", "5-9", ">=10")
    assert summary["stages"] == 2 and summary["method"].startswith("two stages") and summary["n_candidates"] > 0
    assert summary["phase_image"] == scan.name.replace("_", "_part-phase_", 1)  # the second look read it
    single = tmp_path / "single"
    assert main(["detect", str(scan), "--out", str(single), "--quiet", "--single-stage"]) == 0
    once = json.loads(next(single.glob("sub-*/anat/*_summary.json")).read_text())
    assert once["stages"] == 1 and once["method"].startswith("one stage") and once["operating_point"]["second_look"] is None
    assert once["phase_image"] is None
    assert "synthetic" in summary["intended_use"]
    assert next(out.glob("sub-*/anat/*_report.png")).stat().st_size > 10_000


def test_second_look_command_trains_one_beside_a_model(tmp_path: Path) -> None:
    cohort, model = tmp_path / "cohort", tmp_path / "model"
    # the quick profile's scans on a thinner slab, which the packaged network detects on as well
    make_cohort(cohort, profile=load_profile("quick", ["synth.slab_mm=60"]), n_subjects=6, seed=21, progress=False)
    model.mkdir()
    source = packaged_model_path()
    for suffix in (".pt", ".json"):
        (model / f"{source.stem}{suffix}").write_bytes(source.with_suffix(suffix).read_bytes())
    args = ["second-look", "--model", str(model / f"{source.stem}.pt"), "--data", str(cohort), "--out", str(model),
            "--quiet"]
    assert main(args) == 0
    loaded = load_detection_model(model / f"{source.stem}.pt")
    assert loaded.second_look is not None and loaded.operating_point.second_look == loaded.second_look.threshold
    made = json.loads((model / f"{source.stem}.second_look.json").read_text())["provenance"]
    assert len(made["validation_subjects"]) == len(made["training_subjects"]) == 3
    assert main(args) == 2  # an existing second look is kept unless --overwrite
    sidecar = model / f"{source.stem}.second_look.json"
    sidecar.write_text(sidecar.read_text().replace('"cmbstudy second look 4"', '"cmbstudy second look 2"'))
    with pytest.raises(InputError, match="regenerate it"):
        load_detection_model(model / f"{source.stem}.pt")  # a second look of an earlier format is not read ...
    assert main(args + ["--overwrite"]) == 0  # ... but can be replaced
    assert load_detection_model(model / f"{source.stem}.pt").second_look is not None
