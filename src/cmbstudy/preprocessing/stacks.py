"""The paper's 2.5D input: an axial slice with its two neighbours as 3 channels (Cho et al. 2026, Sec. 2).

Training samples, whole-volume inference and the explanation figures all build
their input here. Channels are ``z-1, z, z+1``; at the first and last slice the
missing neighbour is replaced by a copy of the edge slice itself (edge replication).
"""

from __future__ import annotations

import numpy as np

__all__ = ["neighbour_stack", "volume_stacks"]


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
