"""3D patches: sampler determinism and lesion centring, isotropic resampling, sliding-window inference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn as nn

from cmbstudy.config import TrainConfig
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.inference.sliding_window import predict_logits, predict_volume_3d
from cmbstudy.models.layers import is_volumetric
from cmbstudy.preprocessing.geometry import (
    iso_shape,
    resample_to_shape,
    resample_to_spacing,
    volume_voxel_mm,
)
from cmbstudy.training.sampling_3d import PatchDataset

SHAPE = (11, 37, 41)  # uneven on purpose
LESIONS = [(2, 5, 6), (5, 20, 30), (9, 33, 4)]


@dataclass(frozen=True)
class FakeGeometry:
    output_voxel_mm: tuple[float, float, float] = (3.0, 1.3, 1.3)


@dataclass
class FakeVolume:
    subject_id: str
    image: np.ndarray
    brain: np.ndarray
    mask: np.ndarray | None
    geometry: FakeGeometry = field(default_factory=FakeGeometry)


def _volume(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> FakeVolume:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    for z, y, x in LESIONS:
        if z < shape[0] and y < shape[1] and x < shape[2]:
            mask[z, max(y - 1, 0) : y + 1, max(x - 1, 0) : x + 1] = 1
    brain = np.ones(shape, bool)
    brain[:, :, :3] = False
    return FakeVolume("001", image, brain, mask)


def _cfg(**kw: object) -> TrainConfig:
    base = {"patch_size": (8, 16, 16), "slices_per_epoch": 12, "lesion_slice_fraction": 0.5}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


class Double(nn.Module):
    input_kind = "3d"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x


def test_sampler_is_a_function_of_seed_and_epoch() -> None:
    a, b = PatchDataset([_volume()], _cfg(), seed=7), PatchDataset([_volume()], _cfg(), seed=7)
    assert len(a) == 12
    first = [a.patch_start(i) for i in range(len(a))]
    assert first == [b.patch_start(i) for i in range(len(b))]
    torch.testing.assert_close(a[3]["image"], b[3]["image"])
    a.set_epoch(1)
    assert [a.patch_start(i) for i in range(len(a))] != first
    a.set_epoch(0)
    assert [a.patch_start(i) for i in range(len(a))] == first
    assert [PatchDataset([_volume()], _cfg(), seed=8).patch_start(i) for i in range(12)] != first


def test_lesion_patches_contain_their_lesion_and_have_the_patch_shape() -> None:
    data = PatchDataset([_volume()], _cfg(), seed=3, augment=False)
    lesion_rows = [i for i in range(len(data)) if data.plan.kinds[i] == 0]
    assert len(lesion_rows) == 6  # round(12 * 0.5)
    # each of the 3 lesion components (one row each) is used once per pass before any repeats
    centres = [tuple(int(v) for v in data.plan.points[i, 1:]) for i in lesion_rows]
    assert len(data.pools["lesion"]) == 3 and len(set(centres)) == 3
    assert all(centres.count(c) == 2 for c in centres)
    for i in range(len(data)):
        sample = data[i]
        assert sample["image"].shape == sample["mask"].shape == (1, 8, 16, 16)
        _, z0, y0, x0 = data.patch_start(i)
        assert 0 <= z0 <= SHAPE[0] - 8 and 0 <= y0 <= SHAPE[1] - 16 and 0 <= x0 <= SHAPE[2] - 16
        if i in lesion_rows:
            assert sample["mask"].sum() > 0
    augmented = PatchDataset([_volume()], _cfg(lesion_slice_fraction=1.0), seed=3)
    assert all(augmented[i]["mask"].sum() > 0 for i in range(len(augmented)))


def test_small_volume_is_padded_and_zero_means_tiling() -> None:
    data = PatchDataset([_volume(shape=(5, 12, 20))], _cfg(patch_size=(8, 16, 16), slices_per_epoch=0), seed=1)
    assert len(data) == 2  # (8, 16, 20) after padding -> 1 x 1 x 2 tiles
    assert data[0]["image"].shape == (1, 8, 16, 16)


def test_sampler_errors() -> None:
    with pytest.raises(InputError, match="no CMB mask"):
        PatchDataset([FakeVolume("002", np.zeros(SHAPE, np.float32), np.ones(SHAPE, bool), None)], _cfg(), 0)
    with pytest.raises(ConfigError, match="patch_size"):
        PatchDataset([_volume()], _cfg(patch_size=(8, 16)), 0)


def test_iso_resampling_shapes_and_values() -> None:
    assert iso_shape((40, 128, 128), (3.0, 1.3, 1.3), 2.0) == (60, 83, 83)
    constant = np.full((40, 128, 128), 3.0, np.float32)
    iso = resample_to_spacing(constant, (3.0, 1.3, 1.3), 2.0)
    assert iso.shape == (60, 83, 83)
    back = resample_to_shape(iso, constant.shape)
    assert back.shape == constant.shape
    np.testing.assert_allclose(back, 3.0, atol=1e-5)
    # a ramp f = z over 2 mm slices at 1 mm: voxel centre i sits at input index (i + 0.5) / 2 - 0.5
    ramp = np.broadcast_to(np.arange(4, dtype=np.float32)[:, None, None], (4, 3, 3))
    fine = resample_to_spacing(ramp, (2.0, 1.0, 1.0), 1.0)
    assert fine.shape == (8, 3, 3)
    np.testing.assert_allclose(fine[3:6, 1, 1], [1.25, 1.75, 2.25], atol=1e-5)
    with pytest.raises(ConfigError, match="spacing_mm > 0"):
        iso_shape((4, 4, 4), (1.0, 1.0, 1.0), 0.0)


def test_sliding_window_output_matches_input_shape() -> None:
    image = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    out = predict_volume_3d(Double(), image, None, 0.0, (8, 16, 16), 2, "cpu")
    assert out.shape == SHAPE and out.dtype == np.float32
    np.testing.assert_allclose(out, 2.0 * image, atol=1e-5)
    small = image[:5, :10, :12]  # smaller than a window: padded, then cropped back
    out_small = predict_volume_3d(Double(), small, None, 0.0, (8, 16, 16), 4, "cpu")
    np.testing.assert_allclose(out_small, 2 * small, atol=1e-5)
    constant = np.full((10, 30, 30), 1.5, np.float32)
    iso = predict_volume_3d(Double(), constant, (3.0, 1.3, 1.3), 2.0, (8, 16, 16), 4, "cpu")
    assert iso.shape == constant.shape
    np.testing.assert_allclose(iso, 3.0, atol=1e-5)
    with pytest.raises(ConfigError, match="voxel size"):
        predict_volume_3d(Double(), constant, None, 2.0, (8, 16, 16), 4, "cpu")


def test_predict_logits_dispatches_volumetric_models() -> None:
    assert is_volumetric(Double()) and not is_volumetric(nn.Conv2d(3, 1, 1))
    volume = _volume()
    assert volume_voxel_mm(volume) == (3.0, 1.3, 1.3)
    logits = predict_logits(Double(), volume.image, 4, "cpu", volume_voxel_mm(volume), (8, 16, 16))
    np.testing.assert_allclose(logits, 2.0 * volume.image, atol=1e-5)
