"""2.5D slice samples for training: neighbour stacks, sampling plan, augmentation.

Each sample is the axial slice ``z`` of a preprocessed volume with its two
neighbours as 3 channels, ``(3, H, W)`` in the order ``z-1, z, z+1`` (the
paper's 2.5D input, Cho et al. 2025, Sec. 2), and the centre slice's CMB mask
as the target, ``(1, H, W)``. At the first and last slice the missing
neighbour is replaced by a copy of the edge slice itself (edge replication).

Augmentation follows the paper (Sec. 2.2): rotation within +-15 degrees,
horizontal and vertical flips, a crop around non-zero mask regions, and a
Bezier-curve non-linear intensity transform. Rotation, flips and crops are
MONAI's dictionary transforms, so image and mask move together; MONAI has no
Bezier intensity transform, so :func:`bezier_intensity` is written here, after
the monotone variant of Models Genesis (Zhou et al. 2021).

Determinism: the slices of an epoch and every random parameter of every sample
are drawn from seeds derived from ``(seed, epoch)`` alone, so an epoch can be
replayed (resume, several DataLoader workers) without any saved sampler state.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

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

from .config import TrainConfig
from .errors import ConfigError, InputError

__all__ = [
    "SliceVolume",
    "neighbour_stack",
    "volume_stacks",
    "bezier_intensity",
    "plan_epoch",
    "SliceDataset",
]

_KEYS = ("image", "mask")
_SEED_HIGH = 2**31 - 1  # MONAI's set_random_state needs seeds below 2**32


class SliceVolume(Protocol):
    """What slicing needs of a :class:`cmbstudy.preprocess.PreprocessedVolume`."""

    subject_id: str
    image: np.ndarray  # (Z, S, S) float32
    brain: np.ndarray  # (Z, S, S) bool
    mask: np.ndarray | None  # (Z, S, S) uint8


def neighbour_stack(image: np.ndarray, z: int) -> np.ndarray:
    """Slice ``z`` with its neighbours as channels: ``(Z, H, W)`` -> ``(3, H, W)``.

    Channels are ``z-1, z, z+1``; beyond the first or last slice the edge slice
    is repeated (so slice 0 gives ``0, 0, 1``).

    Raises:
        ValueError: ``image`` is not 3D or ``z`` is outside ``0..Z-1``.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) volume, got shape {image.shape}")
    n = image.shape[0]
    if not 0 <= z < n:
        raise ValueError(f"slice {z} is outside 0..{n - 1}")
    return image[[max(z - 1, 0), z, min(z + 1, n - 1)]]


def volume_stacks(image: np.ndarray) -> np.ndarray:
    """Every slice's neighbour stack at once: ``(Z, H, W)`` -> ``(Z, 3, H, W)``."""
    if image.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) volume, got shape {image.shape}")
    padded = np.concatenate([image[:1], image, image[-1:]], axis=0)
    return np.stack([padded[:-2], padded[1:-1], padded[2:]], axis=1)


def _bezier_curve(rng: np.random.Generator, n_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A random cubic Bezier curve from (0, 0) to (1, 1), as sorted x and y samples."""
    p1, p2 = rng.random(2), rng.random(2)
    t = np.linspace(0.0, 1.0, n_points)[:, None]
    points = 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * np.ones(2)
    # Sorting x and y separately turns the curve into a non-decreasing map of
    # [0, 1] onto [0, 1] with fixed end points, whatever the control points.
    return np.sort(points[:, 0]), np.sort(points[:, 1])


def bezier_intensity(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random monotone Bezier intensity mapping inside the brain (Models Genesis style).

    Intensities inside ``brain`` are min-max normalised to [0, 1] (over all
    channels together), mapped through a random cubic Bezier curve with end
    points (0, 0) and (1, 1), and scaled back, so the range [min, max] and the
    intensity order are kept (a dark CMB stays darker than its surroundings;
    Models Genesis's contrast-inverting variant is deliberately not used).
    Voxels outside ``brain`` are returned unchanged.

    Args:
        image: ``(C, H, W)`` float intensities (z-scores).
        brain: ``(C, H, W)`` bool brain mask.
        rng: source of the two random control points.

    Returns:
        ``(C, H, W)`` float32 array.

    Raises:
        ValueError: ``image`` and ``brain`` differ in shape.
    """
    if image.shape != brain.shape:
        raise ValueError(f"image {image.shape} and brain {brain.shape} differ in shape")
    out = np.array(image, dtype=np.float32, copy=True)
    values = out[brain]
    if values.size == 0:
        return out
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return out
    xs, ys = _bezier_curve(rng)
    mapped = np.interp((values - lo) / (hi - lo), xs, ys)
    out[brain] = (lo + mapped * (hi - lo)).astype(np.float32)
    return out


def _take_cycled(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``count`` items of ``pool``: each used once per shuffled pass before any repeats."""
    if count == 0 or len(pool) == 0:
        return pool[:0]
    passes = math.ceil(count / len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:count]


def plan_epoch(
    lesion_slices: np.ndarray,
    other_slices: np.ndarray,
    n_slices: int,
    lesion_fraction: float,
    seed: int,
    epoch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The slices of one epoch and one augmentation seed per slice.

    ``round(n_slices * lesion_fraction)`` slices are drawn from
    ``lesion_slices`` and the rest from ``other_slices`` (each pool is used
    once, in random order, before any slice repeats); when one pool is empty
    all slices come from the other. The result is shuffled.

    Args:
        lesion_slices: ``(n, 2)`` int rows ``(volume index, z)`` with a lesion in slice z.
        other_slices: ``(m, 2)`` int rows of lesion-free brain slices.
        n_slices: slices in the epoch.
        lesion_fraction: share of lesion slices, in [0, 1].
        seed, epoch: the plan is a function of these two numbers only.

    Returns:
        ``(n_slices, 2)`` int array of ``(volume index, z)`` and ``(n_slices,)`` int64 seeds.

    Raises:
        ConfigError: ``lesion_fraction`` outside [0, 1].
    """
    if not 0.0 <= lesion_fraction <= 1.0:
        raise ConfigError(f"train.lesion_slice_fraction={lesion_fraction} must lie in [0, 1]")
    rng = np.random.default_rng([seed, epoch])
    n_lesion = int(round(n_slices * lesion_fraction))
    if len(other_slices) == 0:
        n_lesion = n_slices
    elif len(lesion_slices) == 0:
        n_lesion = 0
    picked = np.concatenate(
        [
            _take_cycled(rng, np.asarray(lesion_slices, dtype=np.int64).reshape(-1, 2), n_lesion),
            _take_cycled(
                rng, np.asarray(other_slices, dtype=np.int64).reshape(-1, 2), n_slices - n_lesion
            ),
        ]
    )
    picked = picked[rng.permutation(len(picked))]
    seeds = rng.integers(0, _SEED_HIGH, size=len(picked), dtype=np.int64)
    return picked, seeds


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
