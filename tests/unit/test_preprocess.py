"""Preprocessing: shapes, z-score, N4, brain extraction, exact geometric inverse, cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from datasets_helpers import make_synthetic_root, phantom
from scipy import ndimage

from cmbstudy import preprocessing as pp
from cmbstudy.config import PreprocessConfig
from cmbstudy.data.datasets import load_subjects
from cmbstudy.errors import ConfigError, InputError

FAST = PreprocessConfig(size=32, n4=False)


def _oblique_affine() -> np.ndarray:
    """0.9 x 0.9 x 4 mm voxels, rotated 25 degrees about z and 15 about y."""
    a, b = np.deg2rad(25), np.deg2rad(15)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = ry @ rz @ np.diag([0.9, 0.9, 4.0])
    affine[:3, 3] = (-18.0, -21.0, 12.0)
    return affine


AFFINES = {
    "oblique": _oblique_affine(),
    "LPS": np.diag([-0.9, -0.9, 4.0, 1.0]),
    "LPS-permuted": np.array([[0, -0.9, 0, 0], [-0.9, 0, 0, 0], [0, 0, 4.0, 0], [0, 0, 0, 1.0]]),
}
CENTRES = [(10, 14, 3), (28, 30, 8), (21, 36, 6), (16, 22, 10)]


def _case(affine: np.ndarray, shape=(41, 47, 13)):
    image, brain = phantom(shape, seed=3)
    mask = np.zeros(shape, np.uint8)
    for x, y, z in CENTRES:
        mask[x - 1 : x + 2, y - 1 : y + 2, z : z + 2] = 1
    return (nib.Nifti1Image(image, affine), nib.Nifti1Image(brain.astype(np.uint8), affine),
            nib.Nifti1Image(mask, affine))


def _centroids(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    return np.array(ndimage.center_of_mass(mask > 0, labels, range(1, n + 1)))


def test_shapes_dtypes_and_zscore() -> None:
    image, brain, mask = _case(np.diag([0.9, 0.9, 4.0, 1.0]))
    vol = pp.preprocess_image(image, FAST, brain_mask=brain, mask=mask, subject_id="007")
    assert vol.subject_id == "007"
    assert vol.image.shape == vol.brain.shape == vol.mask.shape == (13, 32, 32)
    assert vol.image.dtype == np.float32 and vol.brain.dtype == bool and vol.mask.dtype == np.uint8
    assert vol.image[vol.brain].mean() == pytest.approx(0.0, abs=1e-5)
    assert vol.image[vol.brain].std() == pytest.approx(1.0, abs=1e-4)
    assert not vol.image[~vol.brain].any()
    # the same z-scores before the brain cut, for training on eroded or dilated masks
    np.testing.assert_array_equal(vol.unmasked[vol.brain], vol.image[vol.brain])
    assert vol.unmasked.dtype == np.float32 and vol.unmasked[~vol.brain].any()
    g = vol.geometry
    # brain ellipsoid (centre 20, 23; radii 16.4, 18.8 voxels) spans x 4..36 (33 voxels) and
    # y 5..41 (37): the square of side 37 starts 2 voxels before it in x
    assert (g.box_size, g.box_start) == (37, (2, 5))
    assert g.output_voxel_mm == pytest.approx((4.0, 0.9 * 37 / 32, 0.9 * 37 / 32))
    assert len(_centroids(vol.mask)) == len(CENTRES)


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("size", [64, 32])
def test_restore_lands_on_the_input_grid(name: str, size: int) -> None:
    image, brain, mask = _case(AFFINES[name])
    cfg = PreprocessConfig(size=size, n4=False)
    vol = pp.preprocess_image(image, cfg, brain_mask=brain, mask=mask)
    restored = vol.restore(vol.mask, order=0)
    assert restored.shape == (41, 47, 13)
    truth, got = _centroids(mask.get_fdata()), _centroids(restored)
    assert len(got) == len(truth)
    distances = np.linalg.norm(truth[:, None] - got[None], axis=2).min(axis=1)
    assert distances.max() <= 1.0, distances
    if size == 64:  # upsampling then nearest-neighbour back: voxel-exact
        np.testing.assert_array_equal(restored, np.asarray(mask.dataobj))
    brain_back = vol.restore(vol.brain.astype(np.uint8), order=0)
    assert (brain_back == np.asarray(brain.dataobj)).mean() > 0.97


def test_restore_linear_of_the_image_matches_the_input() -> None:
    _, brain, _ = _case(AFFINES["LPS"])
    inside = np.asarray(brain.dataobj) > 0
    x, y, _ = np.meshgrid(*[np.arange(n) for n in inside.shape], indexing="ij")
    smooth = np.where(inside, 100 + 20 * np.sin(x / 4) + 10 * np.cos(y / 5), 0).astype(np.float32)
    image = nib.Nifti1Image(smooth, brain.affine)
    vol = pp.preprocess_image(image, PreprocessConfig(size=96, n4=False), brain_mask=brain)
    ones = vol.restore(np.ones_like(vol.image))
    assert np.allclose(ones[inside], 1.0)
    back = vol.restore(vol.image)
    zscored = (smooth - smooth[inside].mean()) / smooth[inside].std()
    # away from the brain edge (where interpolation meets the zeros outside) the values return
    core = ndimage.binary_erosion(inside, structure=np.ones((3, 3, 1), bool))
    # (z-score statistics come from the resampled grid, so compare up to an affine map)
    slope, intercept = np.polyfit(zscored[core], back[core], 1)
    assert slope == pytest.approx(1.0, abs=0.1)
    assert np.abs(back[core] - (slope * zscored[core] + intercept)).max() < 0.1


def test_restore_rejects_wrong_shape() -> None:
    image, brain, _ = _case(AFFINES["LPS"])
    vol = pp.preprocess_image(image, FAST, brain_mask=brain)
    with pytest.raises(ValueError, match=r"restore expects an array of shape \(13, 32, 32\)"):
        vol.restore(np.zeros((13, 31, 32)))


def test_n4_removes_a_smooth_bias() -> None:
    shape = (40, 44, 16)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    brain = sum(((g - (n - 1) / 2) / (0.42 * n)) ** 2 for g, n in zip(grids, shape)) <= 1
    bias = np.exp(0.3 * (grids[0] - 20) / 20)
    image = (100.0 * bias).astype(np.float32)
    corrected = pp.n4_correct(image, brain, (1.0, 1.0, 3.0), shrink=4, iterations=(20, 20, 10))
    cv_before = image[brain].std() / image[brain].mean()
    cv_after = corrected[brain].std() / corrected[brain].mean()
    assert cv_before > 0.1 and cv_after < 0.03


def test_n4_can_be_skipped() -> None:
    shape = (40, 44, 16)
    image, brain = phantom(shape, seed=1)
    x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")[0]
    biased = nib.Nifti1Image((image * np.exp(0.4 * (x - 20) / 20)).astype(np.float32), np.eye(4))
    mask = nib.Nifti1Image(brain.astype(np.uint8), np.eye(4))
    slopes = {}
    for n4 in (False, True):
        vol = pp.preprocess_image(biased, PreprocessConfig(size=40, n4=n4), brain_mask=mask)
        xs = np.broadcast_to(np.arange(40)[None, :, None], vol.image.shape)
        slopes[n4] = np.corrcoef(xs[vol.brain], vol.image[vol.brain])[0, 1]
    assert slopes[False] > 0.5 and abs(slopes[True]) < 0.2


def test_threshold_and_nonzero_brain_extraction() -> None:
    image, brain = phantom((41, 47, 13), seed=2)
    found = pp.extract_brain(image, "threshold")
    dice = 2 * (found & brain).sum() / (found.sum() + brain.sum())
    assert dice > 0.95
    stripped = np.where(brain, image, 0)
    np.testing.assert_array_equal(pp.extract_brain(stripped, "nonzero"), brain)
    with pytest.raises(InputError, match="found no brain voxel"):
        pp.extract_brain(np.zeros((5, 6, 7)), "nonzero")


def test_brain_extraction_errors() -> None:
    image, _, _ = _case(AFFINES["LPS"])
    with pytest.raises(InputError, match="has no brain mask but preprocess.brain_extraction is 'mask'.*threshold"):
        pp.preprocess_image(image, FAST, subject_id="009")
    with pytest.raises(ConfigError, match="brain_extraction 'bet' is not one of"):
        pp.preprocess_image(image, PreprocessConfig(brain_extraction="bet"))
    vol = pp.preprocess_image(image, PreprocessConfig(size=32, n4=False, brain_extraction="threshold"))
    assert vol.brain.any()


@pytest.mark.skipif(importlib.util.find_spec("deepbet") is not None, reason="deepbet is installed")
def test_deepbet_missing_says_how_to_install() -> None:
    image, _, _ = _case(AFFINES["LPS"])
    with pytest.raises(ConfigError, match=r"deepbet is not installed: `pip install 'cmbstudy\[brain\]'`"):
        pp.preprocess_image(image, PreprocessConfig(brain_extraction="deepbet"))


def test_constant_brain_is_rejected() -> None:
    shape = (20, 22, 6)
    brain = np.zeros(shape, np.uint8)
    brain[5:15, 5:15, 1:5] = 1
    image = nib.Nifti1Image(np.full(shape, 7.0, np.float32), np.eye(4))
    with pytest.raises(InputError, match="constant inside the brain"):
        pp.preprocess_image(image, FAST, brain_mask=nib.Nifti1Image(brain, np.eye(4)))


def test_subject_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subjects = load_subjects(make_synthetic_root(tmp_path / "ds", n_subjects=2))
    cache = tmp_path / "cache"
    first = pp.load_preprocessed(subjects, FAST, cache, progress=False)
    assert [v.subject_id for v in first] == ["001", "002"]
    assert len(list(cache.glob("*.npz"))) == 2
    assert first[0].mask.sum() > 0 and first[0].image.shape == (9, 32, 32)

    def fail(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(pp.cache, "preprocess_subject", fail)  # where the cache looks it up
    second = pp.load_preprocessed(subjects, FAST, cache, progress=False)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.unmasked, b.unmasked)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.geometry == b.geometry
    np.testing.assert_array_equal(second[0].restore(second[0].mask, order=0),
                                  first[0].restore(first[0].mask, order=0))
    monkeypatch.undo()
    changed = PreprocessConfig(size=24, n4=False)
    third = pp.load_preprocessed(subjects[:1], changed, cache, progress=False)
    assert third[0].image.shape == (9, 24, 24)
    names = sorted(p.name.split("_")[0] for p in cache.glob("*.npz"))
    assert names == ["sub-001", "sub-002"]  # the stale file of sub-001 was replaced


def test_the_cache_filled_by_several_processes_is_the_one_filled_alone(tmp_path: Path) -> None:
    subjects = load_subjects(make_synthetic_root(tmp_path / "ds", n_subjects=3))
    cfg = PreprocessConfig(size=32, n4=True, n4_shrink=2)
    alone = pp.fill_preprocessing_cache(subjects, cfg, tmp_path / "alone", workers=1)
    workers = pp.fill_preprocessing_cache(subjects, cfg, tmp_path / "workers", workers=2)  # subjects are pickled
    assert list(workers["subject_id"]) == ["001", "002", "003"] and not workers["from_cache"].any()
    assert (workers["seconds"] > 0).all() and not alone["from_cache"].any()
    names = sorted(p.name for p in (tmp_path / "alone").glob("*.npz"))
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "workers").glob("*.npz"))
    for name in names:  # N4 on the same number of threads in every process: the same bits
        with np.load(tmp_path / "alone" / name) as a, np.load(tmp_path / "workers" / name) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    again = pp.fill_preprocessing_cache(subjects, cfg, tmp_path / "workers", workers=2)
    assert again["from_cache"].all()
