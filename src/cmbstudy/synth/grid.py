"""Regular voxel grids in scanner millimetres (RAS+, axis 2 along B0 and inferior -> superior)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """An axis-aligned grid: voxel (i, j, k) has its centre at ``origin + (i, j, k) * spacing`` (mm)."""

    shape: tuple[int, int, int]  # voxels along X, Y, Z
    spacing: tuple[float, float, float]  # mm
    origin: tuple[float, float, float]  # mm, centre of voxel (0, 0, 0)

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) voxel -> mm affine (diagonal, RAS+)."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff

    def points(self) -> np.ndarray:
        """(X*Y*Z, 3) float64 voxel centres in mm, C order."""
        axes = [o + s * np.arange(n) for o, s, n in zip(self.origin, self.spacing, self.shape)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) mm -> (N, 3) fractional voxel indices."""
        return (np.asarray(points_mm, dtype=np.float64) - np.asarray(self.origin)) / np.asarray(self.spacing)

    def to_mm(self, index: np.ndarray) -> np.ndarray:
        """(N, 3) voxel indices -> (N, 3) mm."""
        return np.asarray(self.origin) + np.asarray(index, dtype=np.float64) * np.asarray(self.spacing)

    def box(self, center_mm: np.ndarray, radius_mm: float) -> tuple[slice, slice, slice]:
        """Index slices of the voxels whose centres lie within ``radius_mm`` of ``center_mm`` per axis."""
        c = self.to_index(np.asarray(center_mm)[None])[0]
        r = radius_mm / np.asarray(self.spacing)
        lo = np.clip(np.ceil(c - r).astype(int), 0, self.shape)
        hi = np.clip(np.floor(c + r).astype(int) + 1, 0, self.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]
