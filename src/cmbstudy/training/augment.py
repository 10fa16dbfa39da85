"""The Bezier-curve intensity augmentation of the paper (Cho et al. 2026, Sec. 2.2).

MONAI has no Bezier intensity transform, so :func:`bezier_intensity` is written
here, after the monotone variant of Models Genesis (Zhou et al. 2021). The
geometric augmentations (rotation, flips, crops) are MONAI's transforms, in
:mod:`cmbstudy.training.sampling_2p5d`.

:func:`jitter_brain` is not in the paper: real CMB sets such as VALDO come
skull-stripped with a mask of their own, so a training sample's brain mask is
eroded or dilated by a voxel or two and the image cut to it, and the brain's
edge is no cue for what is and is not a CMB.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["bezier_intensity", "jitter_brain"]


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


def jitter_brain(unmasked: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                 max_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """The image cut to its brain mask eroded or dilated in-plane by up to ``max_voxels``.

    The radius is drawn uniformly from ``-max_voxels..max_voxels`` (negative:
    erosion, 0: the mask as it is); the structuring element is the in-plane
    cross, applied to every slice (or channel) alike.

    Args:
        unmasked: ``(C, H, W)`` or ``(D, H, W)`` image before the brain mask (z-scores).
        brain: the brain mask, same shape.
        rng: source of the radius.
        max_voxels: largest erosion or dilation (0: the mask unchanged).

    Returns:
        ``(image, brain)``: float32 image, 0 outside the new mask, and the new bool mask.
    """
    if unmasked.shape != brain.shape:
        raise ValueError(f"image {unmasked.shape} and brain {brain.shape} differ in shape")
    radius = int(rng.integers(-max_voxels, max_voxels + 1)) if max_voxels > 0 else 0
    mask = np.asarray(brain, dtype=bool)
    cross = ndimage.generate_binary_structure(2, 1)[None]
    if radius > 0:
        mask = ndimage.binary_dilation(mask, structure=cross, iterations=radius)
    elif radius < 0:
        mask = ndimage.binary_erosion(mask, structure=cross, iterations=-radius, border_value=0)
    return np.where(mask, unmasked, 0.0).astype(np.float32), mask
