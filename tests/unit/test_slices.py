"""2.5D slices: neighbour stacks, Bezier intensity transform, sampling plan, augmented samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cmbstudy.config import TrainConfig
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.preprocessing.stacks import neighbour_stack, volume_stacks
from cmbstudy.training.augment import bezier_intensity
from cmbstudy.training.plan import (
    SAMPLE_KINDS,
    edge_points,
    lesion_points,
    plan_epoch,
    sample_shares,
)
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


def _rows(volume: int, zs) -> np.ndarray:
    return np.array([[volume, z, 5, 5] for z in zs], dtype=np.int64)


def test_plan_epoch_shares_and_determinism() -> None:
    pools = {"lesion": _rows(0, range(5)), "other": _rows(1, range(50)), "edge": _rows(2, range(8)),
             "hard": _rows(3, range(0))}
    shares = {"lesion": 0.25, "hard": 0.25, "edge": 0.1, "other": 0.4}
    plan = plan_epoch(pools, shares, 20, seed=3, epoch=0)
    assert plan.points.shape == (20, 4) and plan.seeds.shape == (20,) and plan.kinds.shape == (20,)
    # no hard negatives mined yet: their share goes to random brain crops
    assert plan.counts() == {"lesion": 5, "hard": 0, "edge": 2, "other": 13}
    lesion = plan.points[plan.kinds == SAMPLE_KINDS.index("lesion")]
    assert sorted(lesion[:, 1].tolist()) == [0, 1, 2, 3, 4]  # each used once
    assert len({tuple(r) for r in plan.points[plan.kinds == SAMPLE_KINDS.index("other")]}) == 13  # no repeats
    again = plan_epoch(pools, shares, 20, seed=3, epoch=0)
    np.testing.assert_array_equal(plan.points, again.points)
    np.testing.assert_array_equal(plan.seeds, again.seeds)
    assert not np.array_equal(plan.points, plan_epoch(pools, shares, 20, seed=3, epoch=1).points)
    # 12 lesion samples from a pool of 5: every row 2 or 3 times
    many = plan_epoch(pools, {"lesion": 0.75, "other": 0.25}, 16, seed=3, epoch=0)
    counts = np.bincount(many.points[many.kinds == 0, 1], minlength=5)
    assert counts.sum() == 12 and counts.min() >= 2 and counts.max() <= 3
    mined = plan_epoch({**pools, "hard": _rows(3, range(4))}, shares, 20, seed=3, epoch=0)
    assert mined.counts() == {"lesion": 5, "hard": 5, "edge": 2, "other": 8}
    only_other = plan_epoch({**pools, "lesion": _rows(0, [])}, shares, 10, seed=3, epoch=0)
    assert only_other.counts()["lesion"] == 0 and only_other.counts()["other"] == 9
    no_other = plan_epoch({**pools, "other": _rows(1, [])}, {"lesion": 0.5, "other": 0.5}, 10, seed=3, epoch=0)
    assert no_other.counts() == {"lesion": 10, "hard": 0, "edge": 0, "other": 0}


def test_sample_shares_are_checked() -> None:
    assert sample_shares(TrainConfig(lesion_slice_fraction=0.5, hard_negative_fraction=0.2, edge_fraction=0.1)) == \
        pytest.approx({"lesion": 0.5, "hard": 0.2, "edge": 0.1, "other": 0.2})
    with pytest.raises(ConfigError, match="lesion_slice_fraction=1.5"):
        sample_shares(TrainConfig(lesion_slice_fraction=1.5))
    with pytest.raises(ConfigError, match="at most 1"):
        sample_shares(TrainConfig(lesion_slice_fraction=0.8, edge_fraction=0.3))


def test_lesion_points_give_a_one_voxel_lesion_its_own_row() -> None:
    mask = np.zeros((6, 20, 20), np.uint8)
    mask[1:4, 2:8, 2:8] = 1  # a large lesion over three slices
    mask[4, 15, 15] = 1  # a one-voxel lesion
    per_slice = lesion_points(0, mask)
    assert per_slice.tolist() == [[0, 1, 4, 4], [0, 2, 4, 4], [0, 3, 4, 4], [0, 4, 15, 15]]
    assert lesion_points(7, mask, per_slice=False).tolist() == [[7, 2, 4, 4], [7, 4, 15, 15]]
    brain = np.zeros((2, 10, 10), bool)
    brain[:, 2:8, 2:8] = True
    edge = edge_points(3, brain, per_volume=1000, seed=0)
    assert len(edge) == 2 * 20 and np.all(edge[:, 0] == 3)  # the ring of a 6 x 6 square, on both slices
    assert len(edge_points(3, brain, per_volume=5, seed=0)) == 5


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
