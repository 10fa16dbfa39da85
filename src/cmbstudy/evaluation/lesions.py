"""Lesions of one volume: 3D connected components, their centroids, sizes and peak probabilities.

Pure numpy + scipy; no torch and no file I/O. Volumes are 3D arrays indexed
(X, Y, Z) as read from NIfTI; centroids are in voxel index space unless the
name says ``_mm``. Each component of a thresholded prediction is one detected
CMB (Cho et al. 2026, Sec. 2.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, InputError

__all__ = ["CONNECTIVITIES", "Lesions", "find_lesions", "centroids_to_mm", "equivalent_diameter_mm", "voxel_volume_mm3"]

CONNECTIVITIES: tuple[int, ...] = (6, 18, 26)


@dataclass(frozen=True)
class Lesions:
    """Connected components of one volume.

    Attributes:
        labels: (X, Y, Z) int32 instance labels, 0 background, 1..n lesions.
        centroids: (n, 3) float, unweighted centre of each component in voxel index space.
        n_voxels: (n,) int, voxels per component.
        max_prob: (n,) float, the highest probability inside each component (1.0 for binary input).
    """

    labels: np.ndarray
    centroids: np.ndarray
    n_voxels: np.ndarray
    max_prob: np.ndarray

    @property
    def n(self) -> int:
        """Number of lesions."""
        return int(self.n_voxels.shape[0])


def _structure(connectivity: int) -> np.ndarray:
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity {connectivity!r} is not supported: use 6, 18 or 26")
    rank = {6: 1, 18: 2, 26: 3}[int(connectivity)]
    return ndimage.generate_binary_structure(3, rank)


def find_lesions(
    volume: np.ndarray,
    threshold: float = 0.5,
    connectivity: int = 26,
    probability: np.ndarray | None = None,
) -> Lesions:
    """3D connected components of ``volume >= threshold`` (scipy.ndimage.label).

    Args:
        volume: (X, Y, Z) binary mask or probability map.
        threshold: voxels with ``volume >= threshold`` are foreground.
        connectivity: 6 (faces), 18 (faces + edges) or 26 (faces + edges + corners).
        probability: optional (X, Y, Z) map whose per-component maximum is reported as
            ``max_prob``; defaults to ``volume`` itself (1.0 for a 0/1 mask).

    Returns:
        :class:`Lesions` with labels numbered in scipy's raster order.

    Raises:
        ConfigError: connectivity is not 6, 18 or 26.
        InputError: volume is not 3D, or probability has another shape.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"find_lesions expects a 3D volume, got shape {volume.shape}")
    structure = _structure(connectivity)
    if probability is None:
        probability = volume
    probability = np.asarray(probability)
    if probability.shape != volume.shape:
        raise InputError(
            f"probability shape {probability.shape} differs from volume shape {volume.shape}"
        )
    foreground = volume >= threshold
    labels, n = ndimage.label(foreground, structure=structure)
    labels = labels.astype(np.int32, copy=False)
    if n == 0:
        return Lesions(labels, np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros(0))
    # per-component statistics over the foreground voxels alone (scipy's labelled maximum sorts every voxel of
    # the volume, which cost more than the labelling itself on a sensitive map)
    owner = labels[foreground]
    n_voxels = np.bincount(owner, minlength=n + 1)[1:].astype(np.int64)
    sums = [np.bincount(owner, weights=c, minlength=n + 1)[1:] for c in np.nonzero(foreground)]
    centroids = np.column_stack(sums) / n_voxels[:, None]
    max_prob = np.full(n + 1, -np.inf)
    np.maximum.at(max_prob, owner, probability[foreground].astype(float))
    return Lesions(labels, centroids.reshape(n, 3), n_voxels, max_prob[1:])


def centroids_to_mm(centroids: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map (n, 3) voxel-index centroids to (n, 3) scanner coordinates in mm with a 4x4 affine."""
    centroids = np.asarray(centroids, dtype=float).reshape(-1, 3)
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise InputError(f"affine must be 4x4, got shape {affine.shape}")
    return centroids @ affine[:3, :3].T + affine[:3, 3]


def equivalent_diameter_mm(n_voxels: np.ndarray | int, voxel_volume_mm3: float) -> np.ndarray:
    """Diameter (mm) of the sphere with the lesion's volume: d = (6 V / pi)^(1/3), V = n_voxels * voxel volume."""
    if voxel_volume_mm3 <= 0:
        raise InputError(f"voxel volume {voxel_volume_mm3!r} mm^3 must be positive")
    volume = np.asarray(n_voxels, dtype=float) * float(voxel_volume_mm3)
    return np.cbrt(6.0 * volume / np.pi)


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel (mm^3) of the grid of a 4x4 voxel-to-mm affine: ``|det(A[:3, :3])|``."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3])))
