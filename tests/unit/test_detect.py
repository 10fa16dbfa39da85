"""cmbstudy.inference.detect and model_store, and cmbstudy.figures.report, on tiny phantoms with a hand-made network.

The network marks every voxel whose z-scored centre slice is below -6 (a dark
spot), so the expected detections are known exactly: the dark spheres written
into the phantom.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from datasets_helpers import make_synthetic_root, phantom, write

from cmbstudy.config import load_profile, profile_to_dict
from cmbstudy.errors import ConfigError, InputError, OutputError
from cmbstudy.figures.report import select_report_slices, write_detection_reports
from cmbstudy.inference.detect import detect_path, modality_from_name, subject_label
from cmbstudy.inference.model_store import (
    WEIGHTS_STORAGE,
    DetectionModel,
    export_model,
    load_detection_model,
    pack_weights,
    unpack_weights,
)
from cmbstudy.models.registry import model_from_config

SHAPE = (31, 34, 12)  # uneven: x, y, z
LESIONS = [(10, 12, 4), (20, 22, 8)]  # dark spheres (voxel centres)
TINY = ["preprocess.size=32", "preprocess.n4=false", "model.widths=[4,8,8,8]"]


def _oblique_affine() -> np.ndarray:
    """Anisotropic (0.9 x 0.9 x 3 mm) voxels rotated 20 degrees about z, then shifted."""
    t = np.deg2rad(20.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 0.9, 3.0])
    affine[:3, 3] = (-12.0, 7.5, -20.0)
    return affine


def _scan(path: Path, affine: np.ndarray, lesions=LESIONS) -> Path:
    image, _ = phantom(SHAPE, seed=3)
    grid = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for cx, cy, cz in lesions:
        image[((grid[0] - cx) ** 2 + (grid[1] - cy) ** 2 + (grid[2] - cz) ** 2) <= 1.5**2] = 20.0
    return write(path, image, affine)


class DarkSpotNet(torch.nn.Module):
    """(B, 3, H, W) -> (B, 1, H, W) logits, positive where the centre channel is below -6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (-6.0 - x[:, 1:2])


def _model(synthetic: bool = True) -> DetectionModel:
    profile = load_profile("smoke", TINY)
    data = {"training_data": {"dataset": "synthetic"}} if synthetic else {"training_data": "not recorded"}
    return DetectionModel(DarkSpotNet(), profile, "hand-made", data, synthetic)


def _run_folder(root: Path) -> Path:
    """A run folder as `cmbstudy train` writes it (untrained weights)."""
    profile = load_profile("smoke", TINY)
    root.mkdir(parents=True)
    (root / "profile.yaml").write_text(yaml.safe_dump(profile_to_dict(profile), sort_keys=False))
    torch.manual_seed(0)
    state = {"model": model_from_config(profile.model).state_dict(), "epoch": 3, "fold": 1,
             "val": {"f1": float("nan"), "precision": 0.5}}
    torch.save(state, root / "checkpoint_best.pt")
    return root


def test_subject_label_and_modality() -> None:
    assert subject_label(Path("sub-007_T2starw.nii.gz")) == "007"
    assert subject_label(Path("sub-A1_ses-2_swi.nii")) == "A1_ses-2"
    assert subject_label(Path("patient 12 (gre).nii.gz")) == "patient12gre"
    assert subject_label(Path("___.nii")) == "scan"
    assert modality_from_name(Path("sub-1_swi.nii.gz")) == "swi"
    assert modality_from_name(Path("sub-1_T2starw.nii.gz")) == "gre"
    assert modality_from_name(Path("scan.nii")) == "gre"


def test_detect_oblique_anisotropic_scan(tmp_path: Path) -> None:
    affine = _oblique_affine()
    scan = _scan(tmp_path / "sub-042_T2starw.nii.gz", affine)
    out = tmp_path / "out"
    summary = detect_path(scan, out, model=_model(), progress=False, report=write_detection_reports)
    anat = out / "sub-042" / "anat"
    assert [r.cmb_count for r in summary.scans] == [2]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "cmbstudy"
    dseg = nib.load(anat / "sub-042_desc-cmb_dseg.nii.gz")
    prob = nib.load(anat / "sub-042_desc-cmb_probseg.nii.gz")
    for img in (dseg, prob):
        assert img.shape == SHAPE
        np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert dseg.get_data_dtype() == np.int16 and prob.get_data_dtype() == np.float32
    labels = np.asarray(dseg.dataobj)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    table = pd.read_csv(anat / "sub-042_lesions.tsv", sep="\t")
    assert list(table.columns) == ["lesion_id", "x_vox", "y_vox", "z_vox", "x_mm", "y_mm", "z_mm", "n_voxels",
                                   "volume_mm3", "equivalent_diameter_mm", "max_prob", "location"]
    found = table[["x_vox", "y_vox", "z_vox"]].to_numpy()
    np.testing.assert_allclose(sorted(map(tuple, found)), LESIONS, atol=1.0)
    mm = found @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(table[["x_mm", "y_mm", "z_mm"]].to_numpy(), mm, atol=1e-3)
    voxel = 0.9 * 0.9 * 3.0
    np.testing.assert_allclose(table["volume_mm3"], table["n_voxels"] * voxel, rtol=1e-4)
    np.testing.assert_allclose(table["equivalent_diameter_mm"], np.cbrt(6 * table["volume_mm3"] / np.pi), rtol=1e-3)
    assert (table["location"] == "unknown").all()
    info = json.loads((anat / "sub-042_summary.json").read_text())
    assert info["cmb_count"] == 2 and info["aria_h_category"] == "1-4"
    assert info["intended_use"] == "research use only; model trained on synthetic data; not a medical device"
    if importlib.util.find_spec("deepbet") is None:  # deepbet, the default, is an optional extra
        assert info["brain_extraction"] == {"method": "threshold", "reason": (
            "auto: the image is not skull-stripped and has no mask: threshold "
            "(deepbet is not installed: pip install 'cmbstudy[brain]')")}
    else:
        assert info["brain_extraction"]["method"] == "deepbet"
    assert info["modality"] == "gre" and info["threshold"] == 0.5
    assert len(info["input_sha256"]) == 64
    assert set(info["seconds"]) == {"preprocessing", "model", "postprocessing", "total"}
    assert "no atlas registration" in info["lesion_location"]["method"]
    assert (anat / "sub-042_report.png").read_bytes()[:4] == b"\x89PNG"
    assert (anat / "sub-042_report.pdf").read_bytes()[:5] == b"%PDF-"
    assert info["outputs"]["report"] == "sub-042_report.png"
    assert info["outputs"]["report_pdf"] == "sub-042_report.pdf"
    assert "042: 2 CMB(s), ARIA-H category 1-4" in str(summary)
    assert "brain extraction auto" in (out / "log.txt").read_text()


def test_no_detection_and_brain_mask(tmp_path: Path) -> None:
    scan = _scan(tmp_path / "clean scan.nii.gz", np.diag([0.9, 0.9, 3.0, 1.0]), lesions=[])
    brain = write(tmp_path / "brain.nii.gz", phantom(SHAPE)[1].astype(np.uint8))
    summary = detect_path(scan, tmp_path / "out", model=_model(synthetic=False), brain_mask=brain,
                          modality="swi", progress=False)
    info = json.loads((tmp_path / "out" / "clean scan" / "clean scan_summary.json").read_text())
    assert summary.scans[0].cmb_count == 0 and info["aria_h_category"] == "0"
    assert info["brain_extraction"] == {"method": "mask", "reason": "auto: the given brain mask (brain.nii.gz)"}
    assert info["modality"] == "swi" and info["subject_id"] == "cleanscan"
    assert info["intended_use"] == "research use only; not a medical device"


def test_brain_mask_on_other_grid_is_refused(tmp_path: Path) -> None:
    scan = _scan(tmp_path / "scan.nii.gz", np.diag([0.9, 0.9, 3.0, 1.0]))
    brain = write(tmp_path / "brain.nii.gz", np.ones((31, 34, 11), np.uint8))
    with pytest.raises(InputError, match=r"brain mask .*brain\.nii\.gz has shape \(31, 34, 11\)"):
        detect_path(scan, tmp_path / "out", model=_model(), brain_mask=brain, progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_output_refused_then_overwritten(tmp_path: Path) -> None:
    scan = _scan(tmp_path / "scan.nii.gz", np.diag([0.9, 0.9, 3.0, 1.0]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(OutputError, match="already holds results"):
        detect_path(scan, out, model=_model(), progress=False)
    detect_path(scan, out, model=_model(), overwrite=True, progress=False)
    assert not (out / "old.txt").exists() and (out / "scan" / "scan_summary.json").is_file()
    # the Python API draws a report only when given a writer (the command line passes one)
    assert not list(out.rglob("*_report.p*"))
    assert "report" not in json.loads((out / "scan" / "scan_summary.json").read_text())["outputs"]


def test_folder_and_dataset_root(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    _scan(folder / "a.nii.gz", np.diag([0.9, 0.9, 3.0, 1.0]))
    _scan(folder / "b.nii", np.diag([0.9, 0.9, 3.0, 1.0]), lesions=LESIONS[:1])
    (folder / "notes.txt").write_text("ignored")
    _scan(folder / "a_part-phase.nii.gz", np.diag([0.9, 0.9, 3.0, 1.0]))  # a phase image is no scan of its own
    summary = detect_path(folder, tmp_path / "out1", model=_model(), progress=False)
    assert [(r.subject_id, r.cmb_count) for r in summary.scans] == [("a", 2), ("b", 1)]
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    summary = detect_path(root, tmp_path / "out2", model=_model(), progress=False)
    assert [r.subject_id for r in summary.scans] == ["001", "002", "003"]
    info = json.loads((tmp_path / "out2" / "sub-002" / "anat" / "sub-002_summary.json").read_text())
    assert info["modality"] == "swi" and info["brain_extraction"]["method"] == "mask"
    assert info["brain_extraction"]["reason"] == "auto: the given brain mask (sub-002_label-brain_mask.nii.gz)"
    with pytest.raises(ConfigError, match="--brain-mask applies to a single scan"):
        detect_path(root, tmp_path / "out3", model=_model(), brain_mask=root / "x.nii.gz", progress=False)


def test_load_model_from_run_checkpoint_and_export(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run")
    from_run = load_detection_model(run)
    assert from_run.name == "rlk_unet_cbam" and from_run.provenance["fold"] == 1
    assert not from_run.trained_on_synthetic
    from_pt = load_detection_model(run / "checkpoint_best.pt")  # profile.yaml beside it
    assert from_pt.profile == from_run.profile
    root = make_synthetic_root(tmp_path / "ds", n_subjects=1)
    exported = export_model(run, tmp_path / "weights", data_root=root)
    packaged = load_detection_model(exported)
    assert packaged.trained_on_synthetic and packaged.profile == from_run.profile
    provenance = json.loads(exported.with_suffix(".json").read_text())
    assert provenance["training_data"]["layout"] == "synthetic" and provenance["fold"] == 1
    assert provenance["training_data"]["cmbstudy"]["dataset"] == "synthetic"
    assert "data_root" not in provenance["training_data"]  # no local paths in a shipped file
    # the file stores the weights as int8 per output channel: what loads is exactly their unpacking
    assert torch.load(exported, weights_only=True)["weights_storage"] == WEIGHTS_STORAGE
    unpacked = unpack_weights(pack_weights(from_run.network.state_dict()))
    assert packaged.network.state_dict().keys() == unpacked.keys()
    for key, weight in packaged.network.state_dict().items():
        assert torch.equal(weight, unpacked[key]), key
    lone = tmp_path / "lone" / "model.pt"
    lone.parent.mkdir()
    lone.write_bytes((run / "checkpoint_best.pt").read_bytes())
    with pytest.raises(InputError, match=r"model\.pt carries no profile and no profile\.yaml sits beside it"):
        load_detection_model(lone)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(InputError, match=r"bad\.pt cannot be read"):
        load_detection_model(bad)


def test_no_packaged_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cmbstudy.inference.model_store.packaged_model_path", lambda: None)
    with pytest.raises(ConfigError, match=r"^no model given and no packaged model found: pass --model RUN"):
        load_detection_model(None)


def test_report_slices() -> None:
    labels = np.zeros((5, 6, 20), np.int32)
    labels[1, 1, 3] = 1
    labels[2, 2, 3] = 2
    labels[3, 3, 11:14] = 3  # centroid slice 12
    assert select_report_slices(labels, np.ones(labels.shape)) == [3, 12]
    image = np.zeros((5, 6, 20))
    image[:, :, 4:14] = 1.0  # non-zero slices 4..13 -> 8 evenly spaced inner slices
    assert select_report_slices(np.zeros_like(labels), image) == [5, 6, 7, 8, 9, 10, 11, 12]


def test_the_calibrated_operating_point_travels_with_the_model(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run")
    point = {"threshold": 0.8, "min_voxels": 100, "source": "validation", "validation": {"f1": 0.7}}
    (run / "operating_point.json").write_text(json.dumps(point))
    root = make_synthetic_root(tmp_path / "ds", n_subjects=1)
    exported = export_model(run, tmp_path / "weights", data_root=root)
    packaged = load_detection_model(exported)
    assert packaged.operating_point.threshold == 0.8 and packaged.operating_point.min_voxels == 100
    assert json.loads(exported.with_suffix(".json").read_text())["operating_point"]["threshold"] == 0.8
    override = packaged.point_for(0.3)
    assert (override.threshold, override.min_voxels, override.source) == (0.3, 100, "--threshold")
    # the hand-made network with a minimum size no CMB of the phantom reaches: nothing is reported
    model = _model()
    calibrated = DetectionModel(model.network, model.profile, "hand-made", model.provenance, True,
                                calibrated=packaged.operating_point)
    scan = _scan(tmp_path / "sub-042_T2starw.nii.gz", _oblique_affine())
    summary = detect_path(scan, tmp_path / "out", model=calibrated, progress=False)
    assert [r.cmb_count for r in summary.scans] == [0]
    info = json.loads((tmp_path / "out" / "sub-042" / "anat" / "sub-042_summary.json").read_text())
    assert info["threshold"] == 0.8 and info["min_voxels"] == 100
    assert info["operating_point"]["source"] == "validation"
    again = detect_path(scan, tmp_path / "out2", model=calibrated, threshold=0.5, progress=False)
    assert [r.cmb_count for r in again.scans] == [0]  # --threshold keeps the calibrated minimum size


def test_the_pdf_report_shows_every_detection(tmp_path: Path) -> None:
    import re

    from cmbstudy.figures.report import plot_detection_pdf

    image = np.random.default_rng(0).normal(100, 5, (40, 41, 30)).astype(np.float32)
    labels = np.zeros(image.shape, np.int32)
    for i in range(20):  # 20 detections on 20 slices: 12 on the summary page, 8 continued, then the table
        labels[5 + i, 10 + (i % 5) * 5, i + 2] = i + 1
    table = pd.DataFrame({"lesion_id": range(1, 21), "z_vox": range(2, 22), "equivalent_diameter_mm": [2.5] * 20,
                          "max_prob": [0.9] * 20, "location": ["lobar"] * 20})
    header = {"count": 20, "category": ">=10", "scan": "x.nii.gz", "model": "m", "threshold": 0.5,
              "intended_use": "research use only"}
    pdf = plot_detection_pdf(image, labels, np.eye(4), header, table, tmp_path / "r.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 3
    assert select_report_slices(labels, image, max_panels=0) == list(range(2, 22))


@pytest.mark.parametrize("stages, expected", [(1, "threshold 0.85    one stage"),
                                               (2, "second-look score >= 0.3    two stages")])
def test_the_report_header_names_the_threshold_of_the_rule_applied(stages: int, expected: str) -> None:
    from cmbstudy.figures.report import _montage, _Scan

    image = np.random.default_rng(0).normal(100, 5, (20, 21, 8)).astype(np.float32)
    header = {"count": 0, "category": "0", "scan": "x.nii.gz", "model": "m", "threshold": 0.85 if stages == 1 else 0.3,
              "stages": stages, "method": "one stage (the paper's method): ..." if stages == 1 else "two stages: ...",
              "intended_use": "research use only"}
    figure = _montage(_Scan(image, np.zeros(image.shape, np.int32), np.eye(4)), header, [3], "")
    assert expected in "\n".join(text.get_text() for text in figure.texts)


def test_packed_weights_are_int8_per_output_channel_within_half_a_step() -> None:
    torch.manual_seed(0)
    weights = {"conv.weight": torch.randn(4, 3, 5, 5) * torch.tensor([1.0, 1e-3, 0.0, 50.0]).view(4, 1, 1, 1),
               "conv.bias": torch.randn(4), "steps": torch.tensor(7)}
    packed = pack_weights(weights)
    assert packed["conv.weight"]["int8"].dtype == torch.int8 and packed["conv.weight"]["scale"].shape == (4,)
    assert torch.equal(packed["conv.bias"], weights["conv.bias"]) and torch.equal(packed["steps"], weights["steps"])
    unpacked = unpack_weights(packed)
    step = (weights["conv.weight"].abs().flatten(1).amax(1) / 127).view(4, 1, 1, 1)
    error = (unpacked["conv.weight"] - weights["conv.weight"]).abs()
    assert bool((error <= step / 2 * (1 + 1e-6)).all())
    assert torch.equal(unpacked["conv.weight"][2], torch.zeros(3, 5, 5))  # an all-zero channel stays zero
    assert float(error[1].max()) < 1e-4  # its own step: one scale for the tensor would round this channel to 0
