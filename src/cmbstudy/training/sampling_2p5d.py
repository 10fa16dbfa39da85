"""2.5D slice samples for training (Cho et al. 2026, Sec. 2): neighbour stacks, crops, augmentation.

Each sample is the axial slice ``z`` of a preprocessed volume with its two
neighbours as 3 channels, ``(3, H, W)`` in the order ``z-1, z, z+1``
(:func:`cmbstudy.preprocessing.stacks.neighbour_stack`), and the centre slice's
CMB mask as the target, ``(1, H, W)``.

Augmentation follows the paper (Sec. 2.2): rotation within +-15 degrees,
horizontal and vertical flips, a crop around non-zero mask regions, and a
Bezier-curve non-linear intensity transform. Rotation, flips and crops are
MONAI's dictionary transforms, so image and mask move together; the Bezier
transform is :func:`cmbstudy.training.augment.bezier_intensity`.

Samples are centred on a lesion, a mined false positive, the brain's edge, or
anywhere in a brain slice (:mod:`cmbstudy.training.plan`); with
``train.brain_jitter`` the sample's brain mask is eroded or dilated and the
image cut to it (:func:`cmbstudy.training.augment.jitter_brain`).

Determinism: the slices of an epoch and every random parameter of every sample
are drawn from seeds derived from ``(seed, epoch)`` and the sample pools alone
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
from .augment import bezier_intensity, jitter_brain
from .plan import EpochPlan, SliceVolume, build_pools, plan_epoch, sample_shares

__all__ = ["SliceDataset"]

_KEYS = ("image", "mask", "centre")


class SliceDataset(Dataset):
    """2.5D training (or evaluation) slices of preprocessed volumes.

    Call :meth:`set_epoch` before each epoch; ``len`` and the samples then
    follow :func:`plan_epoch` with ``cfg.slices_per_epoch`` slices (0: as many
    slices as the volumes hold brain slices) and the shares of
    :func:`~cmbstudy.training.plan.sample_shares`. A sample is ``{"image": (3, h, w)
    float32, "mask": (1, h, w) float32, "volume": int, "z": int, "kind": int}``
    with ``h = w = cfg.crop_size`` when that is between 1 and S-1, else the full
    slice ``S x S``, and ``kind`` an index into :data:`~cmbstudy.training.plan.SAMPLE_KINDS`.

    Crop (paper: "cropped around non-zero mask regions"): a sample with a centre
    point (a lesion, a mined false positive, an edge voxel) is cropped around
    it, moved by up to a quarter of the crop so that it is not always in the
    middle (``RandCropByPosNegLabeld`` on a square of that half-width around the
    point, which rotates and flips with the image); the others are uniformly
    random crops (``RandSpatialCropd``). :meth:`set_hard_negatives` fills the
    ``hard`` pool (:mod:`cmbstudy.training.mining`).

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
        self.shares = sample_shares(cfg)
        for volume in self.volumes:
            if volume.mask is None:
                raise InputError(
                    f"subject {volume.subject_id} has no CMB mask: training needs reference masks"
                )
        self.pools = build_pools([v.mask for v in self.volumes], [v.brain for v in self.volumes], self.seed)
        if not len(self.pools["lesion"]) and not len(self.pools["other"]):
            raise InputError("no training volume has a brain slice: check the brain masks")
        size = min(v.image.shape[1] for v in self.volumes)
        self.crop = cfg.crop_size if 0 < cfg.crop_size < size else 0
        self._geometric = Compose(
            [
                RandRotated(
                    keys=_KEYS,
                    range_x=math.radians(cfg.rotate_degrees),
                    prob=cfg.augment_prob,
                    mode=("bilinear", "nearest", "nearest"),
                    padding_mode="zeros",
                ),
                RandFlipd(keys=_KEYS, prob=0.5, spatial_axis=0),
                RandFlipd(keys=_KEYS, prob=0.5, spatial_axis=1),
            ]
        )
        if self.crop:
            roi = (self.crop, self.crop)
            self._centred_crop = RandCropByPosNegLabeld(
                keys=_KEYS, label_key="centre", spatial_size=roi, pos=1, neg=0, num_samples=1
            )
            self._random_crop = RandSpatialCropd(keys=_KEYS, roi_size=roi, random_size=False)
        self.epoch = -1
        self.set_epoch(0)

    @property
    def n_slices(self) -> int:
        """Slices per epoch: ``cfg.slices_per_epoch``, or every brain slice when that is 0."""
        total = len({(int(i), int(z)) for i, z, *_ in self.pools["lesion"]}) + len(self.pools["other"])
        return self.cfg.slices_per_epoch if self.cfg.slices_per_epoch > 0 else total

    def set_hard_negatives(self, points: np.ndarray) -> None:
        """The ``hard`` pool: ``(n, 4)`` rows ``(volume, z, y, x)`` of false positives; takes effect at :meth:`set_epoch`."""
        self.pools["hard"] = np.asarray(points, dtype=np.int64).reshape(-1, 4)

    def set_epoch(self, epoch: int) -> None:
        """Draw the slices and augmentation seeds of ``epoch`` (a function of seed, epoch and pools)."""
        self.epoch = int(epoch)
        self.plan: EpochPlan = plan_epoch(self.pools, self.shares, self.n_slices, self.seed, self.epoch)

    def __len__(self) -> int:
        return len(self.plan)

    def _centre_label(self, shape: tuple[int, int], y: int, x: int) -> np.ndarray:
        """``(1, H, W)``: a square of half-width a quarter crop around ``(y, x)`` (none when ``y < 0``)."""
        label = np.zeros((1, *shape), dtype=np.float32)
        if y >= 0:
            half = max(self.crop // 4, 1)
            label[0, max(y - half, 0): y + half + 1, max(x - half, 0): x + half + 1] = 1.0
        return label

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, z, y, x = (int(v) for v in self.plan.points[i])
        volume = self.volumes[index]
        sample_seed = int(self.plan.seeds[i])
        rng = np.random.default_rng(sample_seed)
        brain = neighbour_stack(volume.brain, z).astype(bool)
        image = neighbour_stack(volume.image, z).astype(np.float32)
        if self.augment and self.cfg.brain_jitter > 0:
            unmasked = getattr(volume, "unmasked", None)
            unmasked = image if unmasked is None else neighbour_stack(unmasked, z).astype(np.float32)
            image, brain = jitter_brain(unmasked, brain, rng, self.cfg.brain_jitter)
        mask = volume.mask[z][None].astype(np.float32)
        if self.augment and rng.random() < self.cfg.augment_prob:
            image = bezier_intensity(image, brain, rng)
        data: dict[str, Any] = {"image": image, "mask": mask, "centre": self._centre_label(mask.shape[1:], y, x)}
        if self.augment:
            self._geometric.set_random_state(seed=sample_seed)
            data = self._geometric(data)
        if self.crop:
            centred = bool(torch.as_tensor(data["centre"]).any())
            crop = self._centred_crop if centred else self._random_crop
            crop.set_random_state(seed=sample_seed)
            data = crop(data)
            data = data[0] if isinstance(data, list) else data
        return {
            "image": convert_to_tensor(data["image"], dtype=torch.float32, track_meta=False),
            "mask": convert_to_tensor(data["mask"], dtype=torch.float32, track_meta=False),
            "volume": index,
            "z": z,
            "kind": int(self.plan.kinds[i]),
        }
