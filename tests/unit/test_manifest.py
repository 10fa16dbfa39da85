"""data_manifest.yaml content and check_dataset on good and broken hand-made datasets."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from datasets_helpers import make_synthetic_root, make_valdo_root, phantom, write

from cmbstudy.data import datasets
from cmbstudy.data.manifest import (
    DatasetReport,
    check_dataset,
    default_manifest_path,
    load_manifest,
)
from cmbstudy.errors import ConfigError, InputError

REPO_MANIFEST = Path(__file__).resolve().parents[2] / "data_manifest.yaml"


def _errors(report: DatasetReport) -> list[str]:
    return [f"{r.subject} {r.file}: {r.problem}" for r in report.rows if r.status == "error"]


def test_manifest_is_found_from_the_package() -> None:
    assert default_manifest_path() == REPO_MANIFEST
    assert set(load_manifest()["datasets"]) == {"synthetic", "valdo2021-cmb", "bids-like"}


def test_manifest_declarations() -> None:
    sets = load_manifest()["datasets"]
    assert sets["synthetic"]["access"] == "generated"
    assert sets["synthetic"]["regenerate"] == "cmbstudy synth --out ROOT --profile quick"
    valdo = sets["valdo2021-cmb"]
    assert valdo["access"] == "registration"
    assert valdo["expected_subjects"] == 72
    assert "valdo.grand-challenge.org" in valdo["source"]
    assert "cannot" in valdo["checksums"] or "unknown" in valdo["checksums"]
    assert not any(len(word) >= 32 and all(c in "0123456789abcdef" for c in word)
                   for word in REPO_MANIFEST.read_text().split())  # no invented hashes
    assert load_manifest()["data_root"]["environment_variable"] == "CMBSTUDY_DATA"


def test_manifest_file_names_match_the_reader() -> None:
    sets = load_manifest()["datasets"]
    valdo = sets["valdo2021-cmb"]["files"]
    assert valdo["image"] == "sub-{id}/" + datasets.VALDO_IMAGE
    assert valdo["cmb_mask"] == "sub-{id}/" + datasets.VALDO_MASK
    synthetic = sets["synthetic"]["files"]
    assert synthetic["cmb_mask"].endswith(datasets.CMB_MASK_ENTITY + ".nii.gz")
    assert synthetic["brain_mask"].endswith(datasets.BRAIN_MASK_ENTITY + ".nii.gz")
    bids_images = " ".join(sets["bids-like"]["files"]["image"])
    assert all(f"_{suffix}.nii" in bids_images for suffix in datasets.IMAGE_SUFFIXES)
    assert {entry["layout"] for entry in sets.values()} == set(datasets.LAYOUTS)


def test_manifest_missing_or_broken(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data manifest .*absent\.yaml not found"):
        load_manifest(tmp_path / "absent.yaml")
    bad = tmp_path / "m.yaml"
    bad.write_text("datasets:\n  x:\n    access: generated\n")
    with pytest.raises(ConfigError, match=r"dataset 'x' lacks \['licence', 'source'"):
        load_manifest(bad)


def test_valid_synthetic_dataset_passes(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    report = check_dataset(root)
    assert report.ok, _errors(report)
    assert (report.dataset, report.layout, report.n_subjects, report.expected_subjects) == (
        "synthetic", "synthetic", 3, 3)
    statuses = {(r.subject, Path(r.file).name): r.status for r in report.rows}
    assert statuses[("001", "sub-001_T2starw.nii.gz")] == "ok"
    assert statuses[("002", "sub-002_label-CMB_mask.nii.gz")] == "info"  # 0 CMBs is fine
    note = next(r.problem for r in report.rows if r.subject == "002" and "CMB" in r.file)
    assert note == "CMB mask has no CMB (participants.tsv: 0): a CMB-free subject"
    image_note = next(r.problem for r in report.rows if r.file.endswith("sub-001_T2starw.nii.gz"))
    assert image_note == "gre, shape (21, 24, 9), voxel 0.90 x 0.90 x 3.00 mm"
    lesions = next(r.problem for r in report.rows if r.subject == "001" and "CMB" in r.file)
    assert lesions.startswith("CMB mask, 2 lesions")
    table = report.format_table()
    assert table.splitlines()[0].split() == ["subject", "file", "status", "problem"]
    assert table.splitlines()[-1].startswith("OK: synthetic at ")
    assert "3 subjects of 3 expected; 0 errors" in table


def test_deleted_mask_fails(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    (root / "sub-003" / "anat" / "sub-003_label-CMB_mask.nii.gz").unlink()
    report = check_dataset(root)
    assert not report.ok
    assert _errors(report) == [
        "003 sub-003/anat/sub-003_label-CMB_mask.nii.gz: CMB mask is missing: restore "
        "sub-003_label-CMB_mask.nii.gz or remove sub-003 from the dataset"
    ]
    assert report.format_table().splitlines()[-1].startswith("FAILED")


def test_broken_volumes_each_named(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    anat1, anat2, anat3 = (root / f"sub-00{i}" / "anat" for i in (1, 2, 3))
    write(anat1 / "sub-001_T2starw.nii.gz", np.ones((21, 24, 9, 2), np.float32))  # 4D
    mask = np.zeros((21, 24, 9), np.uint8)
    mask[4, 4, 4] = 2
    write(anat2 / "sub-002_label-CMB_mask.nii.gz", mask)  # non-binary
    write(anat3 / "sub-003_label-CMB_mask.nii.gz", np.zeros((21, 24, 8), np.uint8))  # other shape
    report = check_dataset(root)
    errors = _errors(report)
    assert len(errors) == 3, errors
    assert "sub-001_T2starw.nii.gz is 4D" in errors[0]
    assert "holds values {0, 2}" in errors[1]
    assert "has shape (21, 24, 8) but image has (21, 24, 9)" in errors[2]


def test_empty_mask_contradicting_participants(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=1)
    write(root / "sub-001" / "anat" / "sub-001_label-CMB_mask.nii.gz", np.zeros((21, 24, 9), np.uint8))
    assert _errors(check_dataset(root)) == [
        "001 sub-001/anat/sub-001_label-CMB_mask.nii.gz: CMB mask is empty but participants.tsv "
        "says 2 CMBs: re-export the mask or correct participants.tsv"
    ]


def test_nan_and_missing_image(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    image = phantom()[0]
    image[1, 1, 1] = np.nan
    write(root / "sub-001" / "anat" / "sub-001_T2starw.nii.gz", image)
    (root / "sub-002" / "anat" / "sub-002_swi.nii.gz").unlink()
    report = check_dataset(root)
    errors = _errors(report)
    nan_rows = [r for r in report.rows if r.subject == "001" and "NaN" in r.problem]
    assert [(r.status, r.problem) for r in nan_rows] == [
        ("warning", "1 NaN/Inf voxels: accepted outside the brain (set to 0), an error inside it")]
    assert any(e.startswith("002 sub-002: no image found in this subject folder") for e in errors)
    assert any("2 subjects with an image, the manifest expects 3" in e for e in errors)


def test_anisotropy_warning_does_not_fail(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=1)
    anat = root / "sub-001" / "anat"
    thick = np.diag([0.5, 0.5, 4.0, 1.0])  # ratio 8
    image, brain = phantom()
    write(anat / "sub-001_T2starw.nii.gz", image, affine=thick)
    for name in ("sub-001_label-CMB_mask.nii.gz", "sub-001_label-brain_mask.nii.gz"):
        data = np.asarray(nib.load(str(anat / name)).dataobj)
        write(anat / name, data, affine=thick)
    report = check_dataset(root)
    assert report.ok, _errors(report)
    warnings = [r.problem for r in report.rows if r.status == "warning"]
    assert warnings == ["voxel anisotropy 8.0 > 6: slices are very thick for their in-plane size; "
                        "check the acquisition (results may not transfer)"]


def test_valdo_fewer_subjects_is_a_warning(tmp_path: Path) -> None:
    root = make_valdo_root(tmp_path / "valdo", labels=("101", "203"))
    report = check_dataset(root)
    assert report.ok, _errors(report)
    assert (report.dataset, report.n_subjects, report.expected_subjects) == ("valdo2021-cmb", 2, 72)
    assert [r.problem for r in report.rows if r.status == "warning"] == [
        "2 subjects with an image, the manifest expects 72: check that the copy is complete"]
    (root / "sub-203" / "sub-203_space-T2S_CMB.nii.gz").unlink()
    assert not check_dataset(root, dataset="valdo2021-cmb").ok


def test_missing_root_and_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        check_dataset(tmp_path / "nowhere")
    write(tmp_path / "sub-1" / "anat" / "sub-1_T1w.nii.gz", phantom()[0])
    with pytest.raises(InputError, match="unknown layout"):
        check_dataset(tmp_path)
