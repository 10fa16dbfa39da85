"""2.5D slice samples for training (Cho et al. 2025, Sec. 2): neighbour stacks, crops, augmentation.

Each sample is the axial slice ``z`` of a preprocessed volume with its two
neighbours as 3 channels, ``(3, H, W)`` in the order ``z-1, z, z+1``
(:func:`cmbstudy.preprocessing.stacks.neighbour_stack`), and the centre slice's
CMB mask as the target, ``(1, H, W)``.

Augmentation follows the paper (Sec. 2.2): rotation within +-15 degrees,
horizontal and vertical flips, a crop around non-zero mask regions, and a
Bezier-curve non-linear intensity transform. Rotation, flips and crops are
MONAI's dictionary transforms, so image and mask move together; the Bezier
transform is :func:`cmbstudy.training.augment.bezier_intensity`.

Determinism: the slices of an epoch and every random parameter of every sample
are drawn from seeds derived from ``(seed, epoch)`` alone
(:func:`cmbstudy.training.plan.plan_epoch`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotated,
    RandSpatialCropd,
)
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from ..config import TrainConfig
from ..errors import InputError
from ..preprocessing.stacks import neighbour_stack
from .augment import bezier_intensity
from .plan import SliceVolume, plan_epoch

__all__ = ["SliceDataset"]

_KEYS = ("image", "mask")


class SliceDataset(Dataset):
    """2.5D training (or evaluation) slices of preprocessed volumes.

    Call :meth:`set_epoch` before each epoch; ``len`` and the samples then
    follow :func:`plan_epoch` with ``cfg.slices_per_epoch`` slices (0: as many
    slices as the volumes hold brain slices) and ``cfg.lesion_slice_fraction``.
    A sample is ``{"image": (3, h, w) float32, "mask": (1, h, w) float32,
    "volume": int, "z": int}`` with ``h = w = cfg.crop_size`` when that is
    between 1 and S-1, else the full slice ``S x S``.

    Crop (paper: "cropped around non-zero mask regions"): on a slice whose
    (augmented) mask has a lesion, the crop is centred on a random lesion voxel
    and shifted to stay inside the slice, so it contains that lesion
    (``RandCropByPosNegLabeld``, pos=1, neg=0); elsewhere it is a uniformly
    random crop (``RandSpatialCropd``).

    Raises:
        InputError: a volume has no reference mask, or no volume has a brain slice.
    """

    def __init__(
        self,
        volumes: Sequence[SliceVolume],
        cfg: TrainConfig,
        seed: int,
        augment: bool = True,
    ) -> None:
        self.volumes = list(volumes)
        self.cfg = cfg
        self.seed = int(seed)
        self.augment = augment
        lesion, other = [], []
        for index, volume in enumerate(self.volumes):
            if volume.mask is None:
                raise InputError(
                    f"subject {volume.subject_id} has no CMB mask: training needs reference masks"
                )
            has_lesion = volume.mask.reshape(volume.mask.shape[0], -1).any(axis=1)
            has_brain = volume.brain.reshape(volume.brain.shape[0], -1).any(axis=1)
            lesion += [(index, z) for z in np.flatnonzero(has_lesion)]
            other += [(index, z) for z in np.flatnonzero(has_brain & ~has_lesion)]
        if not lesion and not other:
            raise InputError("no training volume has a brain slice: check the brain masks")
        self.lesion_slices = np.asarray(lesion, dtype=np.int64).reshape(-1, 2)
        self.other_slices = np.asarray(other, dtype=np.int64).reshape(-1, 2)
        size = min(v.image.shape[1] for v in self.volumes)
        self.crop = cfg.crop_size if 0 < cfg.crop_size < size else 0
        self._geometric = Compose(
            [
                RandRotated(
                    keys=_KEYS,
                    range_x=math.radians(cfg.rotate_degrees),
                    prob=cfg.augment_prob,
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                ),
                RandFlipd(keys=_KEYS, prob=0.5, spatial_axis=0),
                RandFlipd(keys=_KEYS, prob=0.5, spatial_axis=1),
            ]
        )
        if self.crop:
            roi = (self.crop, self.crop)
            self._lesion_crop = RandCropByPosNegLabeld(
                keys=_KEYS, label_key="mask", spatial_size=roi, pos=1, neg=0, num_samples=1
            )
            self._random_crop = RandSpatialCropd(keys=_KEYS, roi_size=roi, random_size=False)
        self.epoch = -1
        self.set_epoch(0)

    @property
    def n_slices(self) -> int:
        """Slices per epoch: ``cfg.slices_per_epoch``, or every brain slice when that is 0."""
        total = len(self.lesion_slices) + len(self.other_slices)
        return self.cfg.slices_per_epoch if self.cfg.slices_per_epoch > 0 else total

    def set_epoch(self, epoch: int) -> None:
        """Draw the slices and augmentation seeds of ``epoch`` (a function of seed and epoch)."""
        self.epoch = int(epoch)
        self.plan, self.sample_seeds = plan_epoch(
            self.lesion_slices,
            self.other_slices,
            self.n_slices,
            self.cfg.lesion_slice_fraction,
            self.seed,
            self.epoch,
        )

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, z = (int(v) for v in self.plan[i])
        volume = self.volumes[index]
        image = neighbour_stack(volume.image, z).astype(np.float32)
        mask = volume.mask[z][None].astype(np.float32)
        sample_seed = int(self.sample_seeds[i])
        rng = np.random.default_rng(sample_seed)
        if self.augment and rng.random() < self.cfg.augment_prob:
            image = bezier_intensity(image, neighbour_stack(volume.brain, z).astype(bool), rng)
        data: dict[str, Any] = {"image": image, "mask": mask}
        if self.augment:
            self._geometric.set_random_state(seed=sample_seed)
            data = self._geometric(data)
        if self.crop:
            has_lesion = bool(torch.as_tensor(data["mask"]).any())
            crop = self._lesion_crop if has_lesion else self._random_crop
            crop.set_random_state(seed=sample_seed)
            data = crop(data)
            data = data[0] if isinstance(data, list) else data
        return {
            "image": convert_to_tensor(data["image"], dtype=torch.float32, track_meta=False),
            "mask": convert_to_tensor(data["mask"], dtype=torch.float32, track_meta=False),
            "volume": index,
            "z": z,
        }
