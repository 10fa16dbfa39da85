"""Shape checks shared by the compute and the figure code (neither imports the other)."""

from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = ["as_2d"]


def as_2d(array: np.ndarray, name: str) -> np.ndarray:
    """Squeeze leading singleton axes ((1, 1, H, W) -> (H, W)); InputError unless 2D remains."""
    arr = np.asarray(array)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2D slice (H, W), got shape {np.shape(array)}")
    return arr
