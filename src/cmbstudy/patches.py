"""3D patches for volumetric networks: resampling, lesion-centred sampling, sliding-window inference.

A network is volumetric when it declares the class attribute
``input_kind = "3d"`` (:func:`is_volumetric`); every other network takes the
paper's 2.5D slices (:mod:`cmbstudy.slices`). A volumetric network takes
``(B, 1, D, H, W)`` patches of the preprocessed ``(Z, S, S)`` volume and, in
eval mode, returns ``(B, 1, D, H, W)`` logits.

Isotropic resampling (``model.spacing_mm > 0``): the preprocessed volume,
whose voxels measure ``geometry.output_voxel_mm`` (mm, along Z, Y, X), is
resampled with ``scipy.ndimage.zoom`` (``grid_mode=True``: the volume's outer
faces stay in place, so a voxel is an extent, not a point) to voxels of about
``spacing_mm`` on every axis; logits are resampled back to the exact
preprocessed shape the same way. Masks are resampled linearly and kept where
at least half a voxel is lesion, so a lesion far smaller than the new voxel
can vanish from the training target (the evaluation is always made on the
input grid, against the original mask).

Determinism: as :class:`cmbstudy.slices.SliceDataset`, the patches of an
epoch and their augmentation are a function of ``(seed, epoch)`` alone
(:func:`cmbstudy.slices.plan_epoch`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceFocalLoss
from monai.transforms import Compose, RandFlipd, RandRotate90d
from monai.utils import convert_to_tensor
from scipy import ndimage
from torch.utils.data import Dataset

from .config import TrainConfig
from .errors import ConfigError, InputError
from .losses import DICE_SMOOTH, FOCAL_GAMMA
from .slices import SliceVolume, plan_epoch

__all__ = [
    "check_spacing",
    "SLIDING_WINDOW_OVERLAP",
    "is_volumetric",
    "volume_voxel_mm",
    "iso_shape",
    "resample_to_spacing",
    "resample_to_shape",
    "make_volume_loss",
    "PatchDataset",
    "predict_volume_3d",
]

#: Fraction of a patch shared by neighbouring windows of the sliding-window inference.
SLIDING_WINDOW_OVERLAP = 0.25
_KEYS = ("image", "mask")


def is_volumetric(model: torch.nn.Module) -> bool:
    """True when ``model`` declares ``input_kind = "3d"`` (2.5D, ``"2.5d"``, is the default)."""
    return getattr(model, "input_kind", "2.5d") == "3d"


def check_spacing(spacing_mm: float) -> float:
    """``model.spacing_mm`` of a volumetric network as a float (0 keeps the preprocessed grid).

    Raises:
        ConfigError: a negative spacing.
    """
    if spacing_mm < 0:
        raise ConfigError(f"model.spacing_mm={spacing_mm} must be >= 0 (0 keeps the preprocessed grid)")
    return float(spacing_mm)


def volume_voxel_mm(volume: Any) -> tuple[float, float, float] | None:
    """Voxel size (mm, along Z, Y, X) of a preprocessed volume, or None when it has no geometry."""
    geometry = getattr(volume, "geometry", None)
    return None if geometry is None else tuple(float(v) for v in geometry.output_voxel_mm)  # type: ignore[return-value]


def iso_shape(shape: Sequence[int], voxel_mm: Sequence[float], spacing_mm: float) -> tuple[int, int, int]:
    """Shape (voxels) of a ``shape`` volume of ``voxel_mm`` voxels resampled to ``spacing_mm`` isotropic.

    Raises:
        ConfigError: a non-positive spacing or voxel size, or not three of each.
    """
    if spacing_mm <= 0 or len(shape) != 3 or len(voxel_mm) != 3 or min(voxel_mm) <= 0:
        raise ConfigError(
            f"isotropic resampling needs spacing_mm > 0 (got {spacing_mm}) and three positive "
            f"voxel sizes for a 3D shape (got {tuple(voxel_mm)} for {tuple(shape)})"
        )
    return tuple(max(1, int(round(n * v / spacing_mm))) for n, v in zip(shape, voxel_mm))  # type: ignore[return-value]


def resample_to_shape(array: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample a ``(Z, Y, X)`` array to ``shape`` covering the same extent (float32 for order > 0).

    Raises:
        ValueError: ``array`` is not 3D or ``shape`` has not three positive sizes.
    """
    array = np.asarray(array)
    if array.ndim != 3 or len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"expected a (Z, Y, X) array and a 3D target shape, got {array.shape} -> {tuple(shape)}")
    if tuple(array.shape) == tuple(shape):
        return array.astype(np.float32) if order > 0 else array.copy()
    data = array.astype(np.float32) if order > 0 else array
    factors = [t / n for t, n in zip(shape, array.shape)]
    out = ndimage.zoom(data, factors, order=order, mode="nearest", grid_mode=True)
    if out.shape != tuple(shape):  # zoom rounds n * factor; guard against a floating-point slip
        out = out[tuple(slice(0, t) for t in shape)]
        out = np.pad(out, [(0, t - n) for t, n in zip(shape, out.shape)], mode="edge")
    return out


def resample_to_spacing(
    array: np.ndarray, voxel_mm: Sequence[float], spacing_mm: float, order: int = 1
) -> np.ndarray:
    """Resample a ``(Z, Y, X)`` array of ``voxel_mm`` voxels to ``spacing_mm`` isotropic voxels.

    Returns:
        Array of shape :func:`iso_shape` (float32 for order > 0).

    Raises:
        ConfigError: as :func:`iso_shape`.
    """
    return resample_to_shape(array, iso_shape(np.shape(array), voxel_mm, spacing_mm), order)


def make_volume_loss() -> torch.nn.Module:
    """The study's Dice + Focal loss (as :func:`cmbstudy.losses.make_loss`) for ``(B, 1, D, H, W)`` logits.

    Batch Dice (intersection and union summed over the batch), smoothing
    :data:`~cmbstudy.losses.DICE_SMOOTH`, focal gamma :data:`~cmbstudy.losses.FOCAL_GAMMA`.
    """
    return DiceFocalLoss(
        include_background=True, sigmoid=True, batch=True, smooth_nr=DICE_SMOOTH,
        smooth_dr=DICE_SMOOTH, gamma=FOCAL_GAMMA, lambda_dice=1.0, lambda_focal=1.0,
    )


def _check_patch(patch_size: Sequence[int]) -> tuple[int, int, int]:
    patch = tuple(int(v) for v in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise ConfigError(f"train.patch_size={tuple(patch_size)} must be three sizes >= 1 (slices, rows, columns)")
    return patch  # type: ignore[return-value]


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
        self.patch = _check_patch(cfg.patch_size)
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


def predict_volume_3d(
    model: torch.nn.Module,
    image: np.ndarray,
    voxel_mm: Sequence[float] | None,
    spacing_mm: float,
    patch_size: Sequence[int],
    batch_size: int,
    device: str | torch.device,
    overlap: float = SLIDING_WINDOW_OVERLAP,
) -> np.ndarray:
    """Logits of a volumetric network on a whole ``(Z, Y, X)`` volume, as ``(Z, Y, X)`` float32.

    The volume is resampled to ``spacing_mm`` isotropic when that is > 0,
    predicted by MONAI ``sliding_window_inference`` with ``patch_size``
    windows (``batch_size`` windows per forward pass, ``overlap`` shared,
    uniform blending of overlapping logits; a volume smaller than a window is
    zero-padded and the output cropped back), and resampled back onto the
    input shape (linear). The model runs in eval mode on ``device`` (bf16
    autocast on CUDA) and is left in the mode it was in.

    Raises:
        ConfigError: ``batch_size`` < 1, a bad ``patch_size``, or ``spacing_mm > 0`` without ``voxel_mm``.
        ValueError: ``image`` is not 3D.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) volume, got shape {image.shape}")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    patch = _check_patch(patch_size)
    if spacing_mm > 0:
        if voxel_mm is None:
            raise ConfigError(f"spacing_mm={spacing_mm} needs the volume's voxel size (mm); pass voxel_mm")
        work = resample_to_spacing(image, voxel_mm, spacing_mm, 1)
    else:
        work = image
    device = torch.device(device)
    model.to(device=device, memory_format=torch.contiguous_format)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            inputs = torch.from_numpy(np.ascontiguousarray(work))[None, None].to(device)
            logits = sliding_window_inference(
                inputs, patch, batch_size, lambda x: model(x).float(), overlap=overlap, mode="constant",
            )
    finally:
        model.train(was_training)
    out = torch.as_tensor(logits)[0, 0].float().cpu().numpy()
    return resample_to_shape(out, image.shape, 1) if spacing_mm > 0 else out.astype(np.float32)
