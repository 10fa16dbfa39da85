"""The Bezier-curve intensity augmentation of the paper (Cho et al. 2025, Sec. 2.2).

MONAI has no Bezier intensity transform, so :func:`bezier_intensity` is written
here, after the monotone variant of Models Genesis (Zhou et al. 2021). The
geometric augmentations (rotation, flips, crops) are MONAI's transforms, in
:mod:`cmbstudy.training.sampling_2p5d`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bezier_intensity"]


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
