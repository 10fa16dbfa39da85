"""The geometry of preprocessing: the tight square crop, the in-plane resample, and their exact inverse.

The crop and resample are one axis-aligned scaling per in-plane axis, applied
with :func:`scipy.ndimage.affine_transform` using the pixel-edge convention: the
square box ``[x0 - 0.5, x0 + L - 0.5]`` (canonical voxel coordinates) maps onto
``[-0.5, S - 0.5]``. :meth:`PreprocessedVolume.restore` applies the inverse
scaling and :func:`cmbstudy.data.io.from_canonical`, so outputs land on the input
grid with the input affine.

Volumetric networks resample the preprocessed volume once more, to isotropic
voxels (:func:`resample_to_spacing`), with :func:`scipy.ndimage.zoom`
(``grid_mode=True``: the volume's outer faces stay in place, so a voxel is an
extent, not a point); their logits go back with :func:`resample_to_shape`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..data.io import from_canonical
from ..errors import ConfigError

__all__ = [
    "Geometry",
    "PreprocessedVolume",
    "square_box",
    "crop_and_resample",
    "volume_voxel_mm",
    "iso_shape",
    "resample_to_shape",
    "resample_to_spacing",
]


@dataclass(frozen=True)
class Geometry:
    """All that maps a preprocessed (Z, S, S) array back onto the input grid.

    The preprocessed axes are (Z, X, Y) of the canonical RAS grid: axis 0
    inferior -> superior, axis 1 left -> right, axis 2 posterior -> anterior.
    """

    original_shape: tuple[int, int, int]  # shape of the input NIfTI (voxels)
    original_affine: tuple[tuple[float, ...], ...]  # 4x4 affine of the input NIfTI (mm)
    canonical_shape: tuple[int, int, int]  # (X, Y, Z) after reorientation to RAS
    canonical_voxel_mm: tuple[float, float, float]  # voxel sizes along canonical X, Y, Z (mm)
    box_start: tuple[int, int]  # first canonical (x, y) voxel of the square crop (may be < 0)
    box_size: int  # side L of the square crop (canonical voxels)
    size: int  # side S of the resampled slices (pixels)

    @property
    def scale(self) -> float:
        """Canonical voxels per output pixel in-plane (L / S)."""
        return self.box_size / self.size

    @property
    def output_voxel_mm(self) -> tuple[float, float, float]:
        """Voxel sizes (mm) of the preprocessed array along its (Z, X, Y) axes."""
        vx, vy, vz = self.canonical_voxel_mm
        return (vz, vx * self.scale, vy * self.scale)


@dataclass
class PreprocessedVolume:
    """One subject after :func:`preprocess_image`; arrays are (Z, S, S) = (Z, X, Y) canonical."""

    subject_id: str  # BIDS label without "sub-"
    image: np.ndarray  # (Z, S, S) float32, z-scored within the brain, 0 outside
    brain: np.ndarray  # (Z, S, S) bool brain mask
    mask: np.ndarray | None  # (Z, S, S) uint8 CMB mask (nearest neighbour); None without reference
    geometry: Geometry  # inverse mapping to the input grid
    unmasked: np.ndarray | None = None  # (Z, S, S) float32, the same z-scores before the brain mask (training)

    def restore(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """Map a (Z, S, S) array back onto the input image's grid and orientation.

        Args:
            array: (Z, S, S) values on the preprocessed grid (probabilities, labels, ...).
            order: spline order, 1 (linear) for continuous values, 0 for labels.

        Returns:
            Array with the input NIfTI's shape (X0, Y0, Z0), 0 outside the crop box.

        Raises:
            ValueError: ``array`` does not have the preprocessed shape.
        """
        g = self.geometry
        expected = (g.canonical_shape[2], g.size, g.size)
        if array.shape != expected:
            raise ValueError(f"restore expects an array of shape {expected}, got {array.shape}")
        planes = np.transpose(np.asarray(array), (1, 2, 0))  # (S, S, Z)
        inv = g.size / g.box_size
        offset = [(-g.box_start[0] + 0.5) * inv - 0.5, (-g.box_start[1] + 0.5) * inv - 0.5, 0.0]
        dtype = planes.dtype if order == 0 else np.result_type(planes.dtype, np.float32)
        canonical = ndimage.affine_transform(
            planes.astype(dtype, copy=False), [inv, inv, 1.0], offset=offset,
            output_shape=g.canonical_shape, order=order, mode="nearest",
        )
        x0, y0 = g.box_start
        canonical[: max(x0, 0)] = 0
        canonical[max(x0 + g.box_size, 0):] = 0
        canonical[:, : max(y0, 0)] = 0
        canonical[:, max(y0 + g.box_size, 0):] = 0
        return from_canonical(canonical, _GridProxy(np.asarray(g.original_affine), g.original_shape))

    def input_brain(self) -> np.ndarray:
        """(X0, Y0, Z0) bool: the brain mask on the input grid (nearest neighbour)."""
        return self.restore(self.brain.astype(np.uint8), order=0) > 0

    def input_image(self) -> np.ndarray:
        """(X0, Y0, Z0) float32: the preprocessed image (z-scores in the brain, 0 outside) on the input grid."""
        return self.restore(self.image, order=1).astype(np.float32, copy=False)

    @property
    def input_voxel_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths (mm) of the input grid along its array axes."""
        affine = np.asarray(self.geometry.original_affine, dtype=float)
        return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


class _GridProxy:
    """The ``affine`` and ``shape`` of the input image (all :func:`from_canonical` reads)."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, int, int]) -> None:
        self.affine = affine
        self.shape = shape


def square_box(brain: np.ndarray) -> tuple[tuple[int, int], int]:
    """First (x, y) voxel and side of the brain's in-plane bounding box padded to a square."""
    xs = np.flatnonzero(brain.any(axis=(1, 2)))
    ys = np.flatnonzero(brain.any(axis=(0, 2)))
    wx, wy = int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)
    side = max(wx, wy)
    return (int(xs[0]) - (side - wx) // 2, int(ys[0]) - (side - wy) // 2), side


def crop_and_resample(volume: np.ndarray, box_start: tuple[int, int], side: int, size: int, order: int) -> np.ndarray:
    """(X, Y, Z) canonical -> (Z, S, S) crop-and-resample; 0 outside the image."""
    scale = side / size
    offset = [box_start[0] - 0.5 + 0.5 * scale, box_start[1] - 0.5 + 0.5 * scale, 0.0]
    out = ndimage.affine_transform(
        volume, [scale, scale, 1.0], offset=offset, output_shape=(size, size, volume.shape[2]),
        order=order, mode="grid-constant", cval=0.0,
    )
    return np.ascontiguousarray(np.transpose(out, (2, 0, 1)))


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
