"""Awkward but real inputs of a researcher's own scans: each is handled as stated, with the message asserted.

NaN voxels (VALDO's T2S images can hold them), a 4D file with a singleton
fourth axis, an identity qform beside a valid sform (and the reverse),
integer data with a scaling slope, a mask with labels other than 0 and 1,
skull-stripped scans recognised by ``--brain-extraction auto``, plain folders
with masks beside the scans, and ``--set`` on a model's profile.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from datasets_helpers import AFFINE, SHAPE, phantom, write
from test_detect import LESIONS, _model, _run_folder, _scan

from cmbstudy.data.io import load_image, load_mask
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.inference.detect import detect_path
from cmbstudy.inference.model_store import load_detection_model
from cmbstudy.inference.predict import predict_dataset
from cmbstudy.preprocessing.brain import looks_skull_stripped, resolve_brain_extraction

DETECT_SHAPE = (31, 34, 12)  # test_detect's phantom


def _stripped_scan(path: Path, nan_outside: int = 0, nan_inside: int = 0) -> Path:
    """test_detect's phantom with its two dark CMBs, zero outside its ellipsoid brain, some voxels NaN."""
    _scan(path, np.diag([0.9, 0.9, 3.0, 1.0]))
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    brain = phantom(DETECT_SHAPE, seed=3)[1]
    data = np.where(brain, data, 0.0).astype(np.float32)
    data[tuple(np.argwhere(~brain)[:nan_outside].T)] = np.nan
    inside = np.argwhere(brain)
    data[tuple(inside[len(inside) // 2: len(inside) // 2 + nan_inside].T)] = np.nan
    return write(path, data, img.affine)


def test_nan_outside_the_brain_is_set_to_zero_with_a_warning(tmp_path: Path) -> None:
    scan = _stripped_scan(tmp_path / "sub-7_T2starw.nii.gz", nan_outside=40)
    summary = detect_path(scan, tmp_path / "out", model=_model(), progress=False)
    assert [r.cmb_count for r in summary.scans] == [len(LESIONS)]
    info = json.loads(next((tmp_path / "out").rglob("*_summary.json")).read_text())
    assert info["brain_extraction"]["method"] == "nonzero"
    warning = "warning: subject 7 (" + str(scan) + "): 40 NaN/Inf voxels outside the brain were set to 0"
    assert warning in info["notes"]
    assert warning in (tmp_path / "out" / "log.txt").read_text()
    prob = nib.load(next((tmp_path / "out").rglob("*_probseg.nii.gz"))).get_fdata()
    assert np.isfinite(prob).all()


def test_nan_inside_the_brain_is_an_error_naming_the_file_and_the_count(tmp_path: Path) -> None:
    scan = _stripped_scan(tmp_path / "sub-8_T2starw.nii.gz", nan_outside=5, nan_inside=3)
    with pytest.raises(InputError, match=r"subject 8 \(.*sub-8_T2starw\.nii\.gz\): 3 of its 8 NaN/Inf voxels "
                                         r"lie inside the brain mask"):
        detect_path(scan, tmp_path / "out", model=_model(), progress=False)
    assert not (tmp_path / "out").exists()


def test_nan_is_refused_where_no_brain_can_excuse_it(tmp_path: Path) -> None:
    data = phantom()[0]
    data[0, 0, 0] = np.nan
    path = write(tmp_path / "p.nii.gz", data)
    with pytest.raises(InputError, match=r"p\.nii\.gz has 1 NaN/Inf voxels: replace them"):
        load_image(path, what="prediction")


def test_a_singleton_fourth_axis_is_squeezed_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "four.nii.gz", phantom()[0][..., None])
    with caplog.at_level(logging.WARNING, logger="cmbstudy"):
        img = load_image(path, what="scan")
    assert img.shape == SHAPE
    assert f"scan four.nii.gz has shape {(*SHAPE, 1)}: its singleton axes after the third are dropped" in caplog.text
    with pytest.raises(InputError, match=r"is 4D with shape \(21, 24, 9, 2\)"):
        load_image(write(tmp_path / "two.nii.gz", np.stack([phantom()[0]] * 2, axis=-1)))


def _with_forms(path: Path, sform: np.ndarray, qform: np.ndarray) -> Path:
    img = nib.Nifti1Image(phantom()[0], None)
    img.header.set_sform(sform, code=1)
    img.header.set_qform(qform, code=1)
    nib.save(img, path)
    return path


def test_an_identity_transform_gives_way_to_the_valid_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    valid = AFFINE.copy()
    valid[:3, 3] = (-9.0, -10.8, -12.0)
    with caplog.at_level(logging.WARNING, logger="cmbstudy"):
        from_sform = load_image(_with_forms(tmp_path / "q.nii.gz", sform=valid, qform=np.eye(4)))
        from_qform = load_image(_with_forms(tmp_path / "s.nii.gz", sform=np.eye(4), qform=valid))
    np.testing.assert_allclose(from_sform.affine, valid, atol=1e-5)
    np.testing.assert_allclose(from_qform.affine, valid, atol=1e-5)
    assert "q.nii.gz: the qform is the identity but the sform is not: the sform is used" in caplog.text
    assert "s.nii.gz: the sform is the identity but the qform is not: the qform is used" in caplog.text


def test_integer_data_with_a_slope_are_scaled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = np.round(phantom()[0]).astype(np.int16)
    img = nib.Nifti1Image(raw, AFFINE)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, tmp_path / "int.nii.gz")
    with caplog.at_level(logging.INFO, logger="cmbstudy"):
        loaded = load_image(tmp_path / "int.nii.gz", what="scan")
    np.testing.assert_allclose(np.asarray(loaded.dataobj), raw * 0.5 + 10.0)
    assert "scan int.nii.gz: integer data scaled by its slope 0.5 (intercept 10)" in caplog.text


def test_a_mask_with_other_labels_is_refused(tmp_path: Path) -> None:
    mask = np.zeros(SHAPE, np.uint8)
    mask[3, 3, 3], mask[8, 8, 4] = 1, 2
    with pytest.raises(InputError, match=r"holds values \{0, 1, 2\}; a mask must hold only 0 and 1: "
                                         r"binarise it \(mask > 0\)"):
        load_mask(write(tmp_path / "cmb.nii.gz", mask), what="reference CMB mask")


def test_skull_stripped_is_recognised_and_a_raw_scan_is_not() -> None:
    image, brain = phantom((31, 34, 12), seed=1)
    assert looks_skull_stripped(np.where(brain, image, 0.0))
    assert not looks_skull_stripped(image)  # noise outside the head: no exact zeros
    two = np.where(brain, image, 0.0)
    two[:, :, 6] = 0.0  # a gap: two separate regions
    two[15, 17, :] = 0.0
    assert not looks_skull_stripped(two)
    assert resolve_brain_extraction("none", image, False)[0] == "nonzero"
    with pytest.raises(ConfigError, match="--brain-extraction mask needs a brain mask"):
        resolve_brain_extraction("mask", image, False)


def test_a_plain_folder_with_masks_beside_its_scans(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    for name in ("patient_a", "patient_b"):
        _scan(folder / f"{name}.nii.gz", np.diag([0.9, 0.9, 3.0, 1.0]))
        write(folder / f"{name}_brainmask.nii.gz", phantom(DETECT_SHAPE, seed=3)[1].astype(np.uint8),
              np.diag([0.9, 0.9, 3.0, 1.0]))
    summary = detect_path(folder, tmp_path / "out", model=_model(), progress=False,
                          brain_mask_pattern="{stem}_brainmask.nii.gz")
    assert [(r.subject_id, r.cmb_count) for r in summary.scans] == [("patienta", 2), ("patientb", 2)]
    info = json.loads((tmp_path / "out" / "patient_a" / "patient_a_summary.json").read_text())
    assert info["brain_extraction"]["reason"] == "auto: the given brain mask (patient_a_brainmask.nii.gz)"
    assert "2 file(s) in" in (tmp_path / "out" / "log.txt").read_text()  # the masks are not scans
    unmasked = detect_path(folder, tmp_path / "out2", model=_model(), progress=False)
    assert len(unmasked.scans) == 2  # *_brainmask files are still not taken for scans
    with pytest.raises(InputError, match=r"--brain-mask-pattern '\{stem\}_mask\.nii\.gz': .*patient_a_mask"):
        detect_path(folder, tmp_path / "out3", model=_model(), progress=False, brain_mask_pattern="{stem}_mask.nii.gz")


def test_set_applies_to_the_models_profile_but_not_to_its_network(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run")
    model = load_detection_model(run, ["evaluation.connectivity=6"])
    assert model.profile.evaluation.connectivity == 6
    with pytest.raises(ConfigError, match=r"--set 'model\.widths=\[8\]': the network's settings are fixed"):
        load_detection_model(run, ["model.widths=[8]"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_detection_model(run, ["evaluation.bogus=1"])
    with pytest.raises(ConfigError, match="--split val needs the model's training run folder"):
        predict_dataset(_model(), tmp_path, tmp_path / "pred", split="val", progress=False)
