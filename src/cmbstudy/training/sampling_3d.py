"""3D patches for volumetric networks: lesion-centred sampling of the preprocessed volume.

A network is volumetric when it declares ``input_kind = "3d"``
(:func:`cmbstudy.models.layers.is_volumetric`); every other network takes the
paper's 2.5D slices (:mod:`cmbstudy.training.sampling_2p5d`). A volumetric
network takes ``(B, 1, D, H, W)`` patches of the preprocessed ``(Z, S, S)``
volume, resampled to ``model.spacing_mm`` isotropic when that is > 0
(:func:`cmbstudy.preprocessing.geometry.resample_to_spacing`). Masks are
resampled linearly and kept where at least half a voxel is lesion, so a lesion
far smaller than the new voxel can vanish from the training target (the
evaluation is always made on the input grid, against the original mask).

Determinism: as :class:`cmbstudy.training.sampling_2p5d.SliceDataset`, the
patches of an epoch and their augmentation are a function of ``(seed, epoch)``
alone (:func:`cmbstudy.training.plan.plan_epoch`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from monai.transforms import Compose, RandFlipd, RandRotate90d
from monai.utils import convert_to_tensor
from scipy import ndimage
from torch.utils.data import Dataset

from ..config import TrainConfig
from ..errors import ConfigError, InputError
from ..models.layers import check_patch_size
from ..preprocessing.geometry import resample_to_spacing, volume_voxel_mm
from .plan import SliceVolume, plan_epoch

__all__ = ["PatchDataset"]

_KEYS = ("image", "mask")


def _pad_to(array: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Zero-pad a (Z, Y, X) array at the end of each axis up to ``patch``."""
    return np.pad(array, [(0, max(0, p - n)) for p, n in zip(patch, array.shape)])


class PatchDataset(Dataset):
    """Lesion-centred 3D training patches of preprocessed volumes.

    Call :meth:`set_epoch` before each epoch. An epoch holds
    ``cfg.slices_per_epoch`` patches (0: as many as tile every volume without
    overlap); ``round(n * cfg.lesion_slice_fraction)`` of them are centred on a
    voxel of a reference lesion (every lesion component used once before any
    repeats), shifted by up to a quarter patch on each axis and moved to stay
    inside the volume, so the lesion lies inside the patch; the others are
    centred on a random brain voxel of a random brain slice. Augmentation
    (``augment``): flips along each axis, and in-plane 90-degree rotations
    when the patch is square in-plane (MONAI ``RandFlipd``, ``RandRotate90d``).

    A sample is ``{"image": (1, d, h, w) float32, "mask": (1, d, h, w) float32,
    "volume": int, "z": int}`` with ``(d, h, w) = cfg.patch_size`` and ``z``
    the patch's first slice. Volumes are resampled to ``spacing_mm`` isotropic
    first when that is > 0, and zero-padded up to the patch size.

    Raises:
        InputError: a volume has no reference mask, or no volume has a brain voxel.
        ConfigError: a bad ``cfg.patch_size``, or ``spacing_mm > 0`` for a volume without geometry.
    """

    def __init__(
        self,
        volumes: Sequence[SliceVolume],
        cfg: TrainConfig,
        seed: int,
        augment: bool = True,
        spacing_mm: float = 0.0,
    ) -> None:
        self.cfg, self.seed, self.augment = cfg, int(seed), augment
        self.patch = check_patch_size(cfg.patch_size)
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.lesion_voxels: list[list[np.ndarray]] = []  # per volume, per component: (n, 3) voxels
        self.brain_voxels: list[dict[int, np.ndarray]] = []  # per volume, per slice: (n, 2) voxels
        lesion, other, tiles = [], [], 0
        for index, volume in enumerate(volumes):
            if volume.mask is None:
                raise InputError(f"subject {volume.subject_id} has no CMB mask: training needs reference masks")
            image, mask, brain = volume.image.astype(np.float32), volume.mask > 0, volume.brain.astype(bool)
            if spacing_mm > 0:
                voxel = volume_voxel_mm(volume)
                if voxel is None:
                    raise ConfigError(f"model.spacing_mm={spacing_mm} needs volumes with a geometry (voxel size)")
                image = resample_to_spacing(image, voxel, spacing_mm, 1)
                mask = resample_to_spacing(mask.astype(np.float32), voxel, spacing_mm, 1) >= 0.5
                brain = resample_to_spacing(brain.astype(np.float32), voxel, spacing_mm, 1) >= 0.5
            image, mask, brain = _pad_to(image, self.patch), _pad_to(mask, self.patch), _pad_to(brain, self.patch)
            labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
            self.lesion_voxels.append([np.argwhere(labels == k) for k in range(1, n + 1)])
            self.brain_voxels.append({int(z): np.argwhere(brain[z]) for z in np.flatnonzero(brain.any(axis=(1, 2)))})
            lesion += [(index, k) for k in range(n)]
            other += [(index, -1 - z) for z in self.brain_voxels[-1]]  # negative: a brain slice, not a lesion
            tiles += math.prod(math.ceil(s / p) for s, p in zip(image.shape, self.patch))
            self.images.append(image)
            self.masks.append(mask.astype(np.uint8))
        if not lesion and not other:
            raise InputError("no training volume has a brain voxel: check the brain masks")
        self.lesion_rows = np.asarray(lesion, dtype=np.int64).reshape(-1, 2)
        self.other_rows = np.asarray(other, dtype=np.int64).reshape(-1, 2)
        self._tiles = tiles
        transforms = [RandFlipd(keys=_KEYS, prob=0.5, spatial_axis=axis) for axis in range(3)]
        if self.patch[1] == self.patch[2]:
            transforms.append(RandRotate90d(keys=_KEYS, prob=0.5, max_k=3, spatial_axes=(1, 2)))
        self._augment = Compose(transforms)
        self.epoch = -1
        self.set_epoch(0)

    @property
    def n_slices(self) -> int:
        """Patches per epoch: ``cfg.slices_per_epoch``, or as many as tile the volumes when that is 0."""
        return self.cfg.slices_per_epoch if self.cfg.slices_per_epoch > 0 else self._tiles

    def set_epoch(self, epoch: int) -> None:
        """Draw the patches and augmentation seeds of ``epoch`` (a function of seed and epoch)."""
        self.epoch = int(epoch)
        self.plan, self.sample_seeds = plan_epoch(
            self.lesion_rows, self.other_rows, self.n_slices, self.cfg.lesion_slice_fraction, self.seed, self.epoch
        )

    def __len__(self) -> int:
        return len(self.plan)

    def patch_start(self, i: int) -> tuple[int, int, int, int]:
        """``(volume index, z0, y0, x0)``: the volume and first voxel of sample ``i``'s patch."""
        index, key = (int(v) for v in self.plan[i])
        rng = np.random.default_rng(int(self.sample_seeds[i]))
        shape = np.array(self.images[index].shape)
        patch = np.array(self.patch)
        if key >= 0:
            voxels = self.lesion_voxels[index][key]
            centre = voxels[rng.integers(len(voxels))] + rng.integers(-(patch // 4), patch // 4 + 1)
        else:
            z = -1 - key
            voxels = self.brain_voxels[index][z]
            centre = np.array([z, *voxels[rng.integers(len(voxels))]])
        start = np.clip(centre - patch // 2, 0, shape - patch)
        return (index, *(int(v) for v in start))  # type: ignore[return-value]

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, z0, y0, x0 = self.patch_start(i)
        d, h, w = self.patch
        window = (slice(z0, z0 + d), slice(y0, y0 + h), slice(x0, x0 + w))
        data: dict[str, Any] = {
            "image": self.images[index][window][None].copy(),
            "mask": self.masks[index][window][None].astype(np.float32),
        }
        if self.augment:
            self._augment.set_random_state(seed=int(self.sample_seeds[i]))
            data = self._augment(data)
        return {
            "image": convert_to_tensor(data["image"], dtype=torch.float32, track_meta=False).contiguous(),
            "mask": convert_to_tensor(data["mask"], dtype=torch.float32, track_meta=False).contiguous(),
            "volume": index,
            "z": z0,
        }
