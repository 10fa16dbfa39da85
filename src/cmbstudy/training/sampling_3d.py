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

Patches are centred on the same four pools as the 2.5D slices (a lesion, a
mined false positive, the brain's edge, anywhere in the brain;
:mod:`cmbstudy.training.plan`), with the same brain-mask jitter.

Determinism: as :class:`cmbstudy.training.sampling_2p5d.SliceDataset`, the
patches of an epoch and their augmentation are a function of ``(seed, epoch)``
and the sample pools alone (:func:`cmbstudy.training.plan.plan_epoch`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from monai.transforms import Compose, RandFlipd, RandRotate90d
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from ..config import TrainConfig
from ..errors import ConfigError, InputError
from ..models.layers import check_patch_size
from ..preprocessing.geometry import resample_to_spacing, volume_voxel_mm
from .augment import jitter_brain
from .plan import EpochPlan, SliceVolume, build_pools, plan_epoch, sample_shares

__all__ = ["PatchDataset"]

_KEYS = ("image", "mask")


def _pad_to(array: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """Zero-pad a (Z, Y, X) array at the end of each axis up to ``patch``."""
    return np.pad(array, [(0, max(0, p - n)) for p, n in zip(patch, array.shape)])


class PatchDataset(Dataset):
    """Lesion-centred 3D training patches of preprocessed volumes.

    Call :meth:`set_epoch` before each epoch. An epoch holds
    ``cfg.slices_per_epoch`` patches (0: as many as tile every volume without
    overlap), drawn from the pools of :func:`~cmbstudy.training.plan.plan_epoch`
    in the shares of :func:`~cmbstudy.training.plan.sample_shares`. A patch with
    a centre point (a lesion component, used once before any repeats; a mined
    false positive; an edge voxel) is centred on it, shifted by up to a quarter
    patch on each axis and moved to stay inside the volume, so the point lies
    inside the patch; the others are centred on a random brain voxel of a
    random brain slice. Augmentation (``augment``): the brain-mask jitter of
    ``cfg.brain_jitter``, flips along each axis, and in-plane 90-degree
    rotations when the patch is square in-plane (MONAI ``RandFlipd``, ``RandRotate90d``).

    A sample is ``{"image": (1, d, h, w) float32, "mask": (1, d, h, w) float32,
    "volume": int, "z": int, "kind": int}`` with ``(d, h, w) = cfg.patch_size`` and ``z``
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
        self.shares = sample_shares(cfg)
        self.images: list[np.ndarray] = []
        self.unmasked: list[np.ndarray] = []
        self.brains: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.scales: list[np.ndarray] = []  # per volume: patch-grid voxels per preprocessed voxel, (z, y, x)
        self.brain_voxels: list[dict[int, np.ndarray]] = []  # per volume, per slice: (n, 2) voxels
        tiles = 0
        for index, volume in enumerate(volumes):
            if volume.mask is None:
                raise InputError(f"subject {volume.subject_id} has no CMB mask: training needs reference masks")
            image, mask, brain = volume.image.astype(np.float32), volume.mask > 0, volume.brain.astype(bool)
            unmasked = getattr(volume, "unmasked", None)
            unmasked = image if unmasked is None else unmasked.astype(np.float32)
            if spacing_mm > 0:
                voxel = volume_voxel_mm(volume)
                if voxel is None:
                    raise ConfigError(f"model.spacing_mm={spacing_mm} needs volumes with a geometry (voxel size)")
                image = resample_to_spacing(image, voxel, spacing_mm, 1)
                unmasked = resample_to_spacing(unmasked, voxel, spacing_mm, 1)
                mask = resample_to_spacing(mask.astype(np.float32), voxel, spacing_mm, 1) >= 0.5
                brain = resample_to_spacing(brain.astype(np.float32), voxel, spacing_mm, 1) >= 0.5
            self.scales.append(np.array(image.shape, float) / np.array(volume.image.shape, float))
            image, mask, brain = _pad_to(image, self.patch), _pad_to(mask, self.patch), _pad_to(brain, self.patch)
            unmasked = _pad_to(unmasked, self.patch)
            self.brain_voxels.append({int(z): np.argwhere(brain[z]) for z in np.flatnonzero(brain.any(axis=(1, 2)))})
            tiles += math.prod(math.ceil(s / p) for s, p in zip(image.shape, self.patch))
            self.images.append(image)
            self.unmasked.append(unmasked)
            self.brains.append(brain)
            self.masks.append(mask.astype(np.uint8))
        self.pools = build_pools(self.masks, self.brains, self.seed, per_slice=False)
        if not len(self.pools["lesion"]) and not len(self.pools["other"]):
            raise InputError("no training volume has a brain voxel: check the brain masks")
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

    def set_hard_negatives(self, points: np.ndarray) -> None:
        """The ``hard`` pool from ``(n, 4)`` rows ``(volume, z, y, x)`` on the preprocessed grid.

        The points are mapped onto the patch grid (resampled to ``spacing_mm``); takes effect at :meth:`set_epoch`.
        """
        rows = np.asarray(points, dtype=np.int64).reshape(-1, 4)
        mapped = [(i, *(int(v) for v in np.minimum(np.floor((np.array(p) + 0.5) * self.scales[i]),
                                                   np.array(self.images[i].shape) - 1)))
                  for i, *p in rows]
        self.pools["hard"] = np.asarray(mapped, dtype=np.int64).reshape(-1, 4)

    def set_epoch(self, epoch: int) -> None:
        """Draw the patches and augmentation seeds of ``epoch`` (a function of seed, epoch and pools)."""
        self.epoch = int(epoch)
        self.plan: EpochPlan = plan_epoch(self.pools, self.shares, self.n_slices, self.seed, self.epoch)

    def __len__(self) -> int:
        return len(self.plan)

    def patch_start(self, i: int) -> tuple[int, int, int, int]:
        """``(volume index, z0, y0, x0)``: the volume and first voxel of sample ``i``'s patch."""
        index, z, y, x = (int(v) for v in self.plan.points[i])
        rng = np.random.default_rng(int(self.plan.seeds[i]))
        shape = np.array(self.images[index].shape)
        patch = np.array(self.patch)
        if y >= 0:
            centre = np.array([z, y, x]) + rng.integers(-(patch // 4), patch // 4 + 1)
        else:
            voxels = self.brain_voxels[index][z]
            centre = np.array([z, *voxels[rng.integers(len(voxels))]])
        start = np.clip(centre - patch // 2, 0, shape - patch)
        return (index, *(int(v) for v in start))  # type: ignore[return-value]

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, z0, y0, x0 = self.patch_start(i)
        d, h, w = self.patch
        window = (slice(z0, z0 + d), slice(y0, y0 + h), slice(x0, x0 + w))
        image = self.images[index][window]
        if self.augment and self.cfg.brain_jitter > 0:
            rng = np.random.default_rng([int(self.plan.seeds[i]), 1])
            image, _ = jitter_brain(self.unmasked[index][window], self.brains[index][window], rng,
                                    self.cfg.brain_jitter)
        data: dict[str, Any] = {
            "image": image[None].copy(),
            "mask": self.masks[index][window][None].astype(np.float32),
        }
        if self.augment:
            self._augment.set_random_state(seed=int(self.plan.seeds[i]))
            data = self._augment(data)
        return {
            "image": convert_to_tensor(data["image"], dtype=torch.float32, track_meta=False).contiguous(),
            "mask": convert_to_tensor(data["mask"], dtype=torch.float32, track_meta=False).contiguous(),
            "volume": index,
            "z": z0,
            "kind": int(self.plan.kinds[i]),
        }
