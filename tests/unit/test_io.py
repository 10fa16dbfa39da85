"""Bad inputs and outputs of cmbstudy.data.io, each with its message asserted."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from datasets_helpers import AFFINE, SHAPE, phantom, write

from cmbstudy.data.io import (
    atomic_output_dir,
    check_output_dir,
    check_same_grid,
    from_canonical,
    load_image,
    load_mask,
    save_nifti,
    to_canonical,
    voxel_sizes,
)
from cmbstudy.errors import InputError, OutputError


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    return write(tmp_path / "img.nii.gz", phantom()[0])


def test_valid_image_loads_as_float32(image_path: Path) -> None:
    img = load_image(image_path)
    assert img.shape == SHAPE
    assert img.get_data_dtype() == np.float32
    assert voxel_sizes(img) == pytest.approx((0.9, 0.9, 3.0))


@pytest.mark.parametrize("kind", ["nifti1", "nifti2", "big-endian", "int16 with a slope"])
def test_a_gzipped_image_reads_as_nibabel_reads_it(tmp_path: Path, kind: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    data = phantom()[0]
    if kind == "nifti2":
        img = nib.Nifti2Image(data, AFFINE)
    elif kind == "big-endian":
        img = nib.Nifti1Image(data.astype(">f4"), AFFINE)
    else:
        img = nib.Nifti1Image(data, AFFINE)
    if kind == "int16 with a slope":
        img.set_data_dtype(np.int16)
    path = tmp_path / f"{kind}.nii.gz"
    nib.save(img, path)
    with caplog.at_level(logging.INFO):
        read = load_image(path)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]  # nothing to warn of
    expected = nib.load(path)
    assert np.array_equal(np.asarray(read.dataobj), np.asarray(expected.dataobj, dtype=np.float32))
    assert np.allclose(read.affine, expected.affine)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"img\.nii\.gz does not exist: check the path"):
        load_image(tmp_path / "img.nii.gz")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "x.nii.gz").mkdir()
    with pytest.raises(InputError, match="is not a file"):
        load_image(tmp_path / "x.nii.gz")


def test_text_file_is_not_nifti(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.txt is not a NIfTI file \(\.nii or \.nii\.gz\)"):
        load_image(path)


def test_nii_gz_holding_text(tmp_path: Path) -> None:
    path = tmp_path / "fake.nii.gz"
    path.write_text("hello, I am text\n" * 20)
    with pytest.raises(InputError, match=r"fake\.nii\.gz is named \.nii\.gz but is not gzip-compressed"):
        load_image(path)


def test_gzipped_text_is_not_nifti(tmp_path: Path) -> None:
    path = tmp_path / "fake.nii.gz"
    path.write_bytes(gzip.compress(b"hello, I am text\n" * 50))
    with pytest.raises(InputError, match=r"fake\.nii\.gz cannot be read as NIfTI \(its header is neither NIfTI-1 "
                                         r"nor NIfTI-2\)"):
        load_image(path)


def test_uncompressed_text_named_nii(tmp_path: Path) -> None:
    path = tmp_path / "fake.nii"
    path.write_text("hello, I am text\n" * 50)
    with pytest.raises(InputError, match=r"fake\.nii cannot be read as NIfTI"):
        load_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.nii\.gz is empty \(0 bytes\)"):
        load_image(path)


def test_truncated_gzip(image_path: Path) -> None:
    raw = image_path.read_bytes()
    image_path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="is truncated or its gzip stream is corrupt"):
        load_image(image_path)


def test_corrupt_gzip_block_is_caught(image_path: Path) -> None:
    raw = bytearray(image_path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 40] = bytes(b ^ 0xFF for b in raw[middle : middle + 40])
    image_path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="is truncated or its gzip stream is corrupt"):
        load_image(image_path)


def test_4d_volume_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "echoes.nii.gz", np.ones(SHAPE + (2,), np.float32))
    with pytest.raises(InputError, match=r"is 4D with shape \(21, 24, 9, 2\); a 3D volume is needed"):
        load_image(path)


def test_trailing_singleton_4th_dim_accepted(tmp_path: Path) -> None:
    data = phantom()[0][..., None]  # (21, 24, 9, 1)
    img = load_image(write(tmp_path / "one.nii.gz", data))
    assert img.shape == SHAPE
    np.testing.assert_array_equal(np.asarray(img.dataobj), data[..., 0])


def test_2d_image_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "slice.nii.gz", np.ones((21, 24), np.float32))
    with pytest.raises(InputError, match=r"has shape \(21, 24\); a 3D volume is needed, not a 2D image"):
        load_image(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_voxels(tmp_path: Path, bad: float) -> None:
    data = phantom()[0]
    data[3, 4, 5] = bad
    data[6, 7, 8] = bad
    path = write(tmp_path / "bad.nii.gz", data)
    with pytest.raises(InputError, match=r"bad\.nii\.gz has 2 NaN/Inf voxels"):
        load_image(path)


def test_all_zero_image(tmp_path: Path) -> None:
    path = write(tmp_path / "zero.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(InputError, match=r"zero\.nii\.gz is all zero"):
        load_image(path)


def test_mask_other_shape(tmp_path: Path, image_path: Path) -> None:
    mask = write(tmp_path / "mask.nii.gz", np.zeros((21, 24, 8), np.uint8))
    with pytest.raises(InputError, match=r"has shape \(21, 24, 8\) but image has \(21, 24, 9\)"):
        load_mask(mask, reference=load_image(image_path))


def test_mask_other_affine(tmp_path: Path, image_path: Path) -> None:
    shifted = AFFINE.copy()
    shifted[0, 3] = 2.0
    mask = write(tmp_path / "mask.nii.gz", np.zeros(SHAPE, np.uint8), affine=shifted)
    with pytest.raises(InputError, match=r"different affine than image \(max difference 2 mm\)"):
        load_mask(mask, reference=load_image(image_path))


def test_check_same_grid_accepts_tiny_affine_noise(image_path: Path) -> None:
    img = load_image(image_path)
    other = nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE + 1e-5)
    check_same_grid(img, other)


def test_mask_with_values_other_than_0_1(tmp_path: Path) -> None:
    data = np.zeros(SHAPE, np.int16)
    data[2, 2, 2], data[3, 3, 3] = 1, 2
    path = write(tmp_path / "labels.nii.gz", data)
    with pytest.raises(InputError, match=r"holds values \{0, 1, 2\}; a mask must hold only 0 and 1"):
        load_mask(path)


def test_float_mask_of_zeros_and_ones_is_accepted(tmp_path: Path) -> None:
    data = np.zeros(SHAPE, np.float32)
    data[5, 6, 7] = 1.0
    mask = load_mask(write(tmp_path / "m.nii.gz", data))
    assert mask.get_data_dtype() == np.uint8
    assert int(np.asarray(mask.dataobj).sum()) == 1


def _oblique_affine() -> np.ndarray:
    """0.9 x 0.9 x 4 mm voxels rotated 20 degrees about x and 10 about z."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.9, 0.9, 4.0])
    affine[:3, 3] = (-20.0, 15.0, -7.0)
    return affine


LPS = np.diag([-0.9, -0.9, 4.0, 1.0])  # axes point left, posterior, superior


@pytest.mark.parametrize("affine", [_oblique_affine(), LPS, np.diag([0.9, 0.9, 4.0, 1.0])[[0, 2, 1, 3]]],
                         ids=["oblique", "LPS", "permuted"])
def test_anisotropic_oblique_round_trip(tmp_path: Path, rng: np.random.Generator, affine: np.ndarray) -> None:
    shape = (41, 47, 13)
    data = rng.random(shape).astype(np.float32) + 0.5
    img = load_image(write(tmp_path / "obl.nii.gz", data, affine=affine))
    assert sorted(voxel_sizes(img)) == pytest.approx(sorted((0.9, 0.9, 4.0)), abs=1e-5)
    canonical = to_canonical(img)
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    back = from_canonical(np.asarray(canonical.dataobj), img)
    np.testing.assert_array_equal(back, data)
    # every voxel keeps its world position
    i, j, k = 30, 5, 11
    world = img.affine @ np.array([i, j, k, 1.0])
    voxel = np.linalg.solve(canonical.affine, world)[:3]
    assert np.asarray(canonical.dataobj)[tuple(np.round(voxel).astype(int))] == data[i, j, k]


def test_from_canonical_rejects_wrong_shape(image_path: Path) -> None:
    with pytest.raises(ValueError, match="does not map onto the original grid"):
        from_canonical(np.zeros((3, 3, 3)), load_image(image_path))


def test_save_nifti_round_trip_and_no_temp_files(tmp_path: Path) -> None:
    data = phantom()[0]
    out = save_nifti(data, AFFINE, tmp_path / "sub" / "x.nii.gz")
    np.testing.assert_allclose(np.asarray(load_image(out).dataobj), data)
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.nii.gz"]


def test_output_folder_not_writable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits: a folder below a regular file cannot be created either
        blocker = tmp_path / "results.txt"
        blocker.write_text("a file")
        with pytest.raises(OutputError, match=r"cannot be created: .*results\.txt is a file"):
            check_output_dir(blocker / "run")
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match=r"cannot be written \(no permission on .*locked\)"):
            check_output_dir(locked / "run")
    finally:
        locked.chmod(0o700)


def test_output_below_a_file_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(blocker / "deeper" / "run")


def test_output_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("x")
    with pytest.raises(OutputError, match=r"output .*out is a file, not a folder: choose another --out"):
        check_output_dir(path)


def test_output_folder_with_results_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text("{}")
    with pytest.raises(OutputError, match="already holds results: choose another --out or pass --overwrite"):
        check_output_dir(out)
    assert check_output_dir(out, overwrite=True) == out
    with pytest.raises(OutputError, match="already holds results"):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_empty_existing_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with atomic_output_dir(tmp_path / "run") as tmp:
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "run" / "a.txt").read_text() == "a"


def test_atomic_output_dir_leaves_nothing_on_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output_dir(tmp_path / "run") as tmp:
            (tmp / "partial.nii.gz").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_keeps_old_results_on_exception(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "partial.txt").write_text("half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "old.txt").read_text() == "old"


def test_write_atomically_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    from cmbstudy.data.io import write_atomically, write_text_atomically

    target = tmp_path / "sub" / "result.json"
    write_text_atomically(target, "first")
    assert target.read_text() == "first"

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        write_atomically(target, broken)
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]

    seen: list[str] = []
    write_atomically(tmp_path / "a.npz", lambda tmp: seen.append(tmp) or np.savez(tmp, x=np.arange(3)), suffix=".npz")
    assert seen[0].endswith(".npz") and np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
