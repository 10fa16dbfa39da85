"""2.5D slices: neighbour stacks, Bezier intensity transform, sampling plan, augmented samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cmbstudy.config import TrainConfig
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.preprocessing.stacks import neighbour_stack, volume_stacks
from cmbstudy.training.augment import bezier_intensity
from cmbstudy.training.plan import plan_epoch
from cmbstudy.training.sampling_2p5d import SliceDataset


@dataclass
class FakeVolume:
    subject_id: str
    image: np.ndarray  # (Z, S, S)
    brain: np.ndarray  # (Z, S, S) bool
    mask: np.ndarray | None  # (Z, S, S) uint8


def _blob_volume(rng: np.random.Generator, z: int = 9, s: int = 32, centre=(4, 9, 22)) -> FakeVolume:
    """Noise inside a disc-shaped brain, a dark sphere (radius 2.5 voxels) as the CMB."""
    image = rng.normal(0.0, 0.3, size=(z, s, s)).astype(np.float32)
    zz, yy, xx = np.mgrid[:z, :s, :s]
    brain = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (0.48 * s) ** 2
    blob = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= 2.5**2
    image[blob] = -4.0
    image[~brain] = 0.0
    return FakeVolume("001", image, brain, blob.astype(np.uint8))


def test_neighbour_stack_replicates_edges() -> None:
    # (5, 3, 4) volume whose slice z holds the value z
    image = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None], (5, 3, 4))
    assert neighbour_stack(image, 0)[:, 0, 0].tolist() == [0, 0, 1]
    assert neighbour_stack(image, 2)[:, 0, 0].tolist() == [1, 2, 3]
    assert neighbour_stack(image, 4)[:, 0, 0].tolist() == [3, 4, 4]
    stacks = volume_stacks(image)
    assert stacks.shape == (5, 3, 3, 4)
    for z in range(5):
        np.testing.assert_array_equal(stacks[z], neighbour_stack(image, z))
    with pytest.raises(ValueError, match="slice 5 is outside 0..4"):
        neighbour_stack(image, 5)


def test_bezier_is_monotone_keeps_range_and_background(rng: np.random.Generator) -> None:
    image = rng.normal(size=(3, 31, 33)).astype(np.float32)
    brain = np.zeros_like(image, dtype=bool)
    brain[:, 4:27, 5:30] = True
    image[~brain] = 0.0
    out = bezier_intensity(image, brain, np.random.default_rng(7))
    assert out.shape == (3, 31, 33) and out.dtype == np.float32
    np.testing.assert_array_equal(out[~brain], 0.0)
    before, after = image[brain], out[brain]
    order = np.argsort(before, kind="stable")
    assert np.all(np.diff(after[order]) >= -1e-6)  # order of intensities kept
    assert after.min() == pytest.approx(before.min(), abs=1e-5)
    assert after.max() == pytest.approx(before.max(), abs=1e-5)
    assert np.abs(after - before).max() > 0.05  # it does change intensities
    again = bezier_intensity(image, brain, np.random.default_rng(7))
    np.testing.assert_array_equal(out, again)


def test_plan_epoch_ratio_and_determinism() -> None:
    lesion = np.array([[0, z] for z in range(5)])
    other = np.array([[1, z] for z in range(50)])
    picked, seeds = plan_epoch(lesion, other, 20, 0.25, seed=3, epoch=0)
    assert picked.shape == (20, 2) and seeds.shape == (20,)
    is_lesion = picked[:, 0] == 0
    assert is_lesion.sum() == 5  # round(20 * 0.25)
    assert sorted(picked[is_lesion, 1].tolist()) == [0, 1, 2, 3, 4]  # each used once
    assert len({tuple(r) for r in picked[~is_lesion]}) == 15  # no repeats before the pool is used
    again, seeds_again = plan_epoch(lesion, other, 20, 0.25, seed=3, epoch=0)
    np.testing.assert_array_equal(picked, again)
    np.testing.assert_array_equal(seeds, seeds_again)
    later, _ = plan_epoch(lesion, other, 20, 0.25, seed=3, epoch=1)
    assert not np.array_equal(picked, later)
    # 12 lesion slices from a pool of 5: every slice 2 or 3 times
    many, _ = plan_epoch(lesion, other, 16, 0.75, seed=3, epoch=0)
    counts = np.bincount(many[many[:, 0] == 0, 1], minlength=5)
    assert counts.sum() == 12 and counts.min() >= 2 and counts.max() <= 3
    only_other, _ = plan_epoch(lesion[:0], other, 10, 0.5, seed=3, epoch=0)
    assert np.all(only_other[:, 0] == 1)
    with pytest.raises(ConfigError, match="lesion_slice_fraction=1.5"):
        plan_epoch(lesion, other, 10, 1.5, seed=3, epoch=0)


def test_dataset_samples_keep_image_and_mask_aligned(rng: np.random.Generator) -> None:
    volume = _blob_volume(rng)
    cfg = TrainConfig(slices_per_epoch=24, lesion_slice_fraction=0.5, crop_size=16, augment_prob=1.0)
    data = SliceDataset([volume], cfg, seed=11)
    assert len(data) == 24
    n_lesion = 0
    for i in range(len(data)):
        sample = data[i]
        assert tuple(sample["image"].shape) == (3, 16, 16)
        assert tuple(sample["mask"].shape) == (1, 16, 16)
        mask = sample["mask"][0].numpy() > 0.5
        if volume.mask[sample["z"]].any():
            n_lesion += 1
            assert mask.any(), "a lesion slice's crop must contain the lesion"
            centre = sample["image"][1].numpy()
            # the rotated/flipped mask still sits on the dark blob
            assert np.mean(centre[mask] < -1.0) >= 0.7
        else:
            assert not mask.any()
    assert n_lesion == 12


def test_dataset_full_slices_and_determinism(rng: np.random.Generator) -> None:
    volume = _blob_volume(rng, z=7, s=24, centre=(3, 8, 15))
    cfg = TrainConfig(slices_per_epoch=0, crop_size=0, augment_prob=1.0)
    data = SliceDataset([volume], cfg, seed=5)
    assert len(data) == 7  # every brain slice once
    assert tuple(data[0]["image"].shape) == (3, 24, 24)
    twin = SliceDataset([volume], cfg, seed=5)
    for i in range(len(data)):
        np.testing.assert_array_equal(data[i]["image"].numpy(), twin[i]["image"].numpy())
    plain = SliceDataset([volume], cfg, seed=5, augment=False)
    sample = plain[0]
    np.testing.assert_array_equal(sample["image"].numpy(), neighbour_stack(volume.image, sample["z"]))
    # crop >= S means the full slice
    big = SliceDataset([volume], TrainConfig(slices_per_epoch=2, crop_size=24), seed=5)
    assert tuple(big[0]["image"].shape) == (3, 24, 24)


def test_dataset_requires_masks(rng: np.random.Generator) -> None:
    volume = _blob_volume(rng)
    volume.mask = None
    with pytest.raises(InputError, match="subject 001 has no CMB mask"):
        SliceDataset([volume], TrainConfig(), seed=0)
