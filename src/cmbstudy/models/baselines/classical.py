"""A classical CMB detector: dark-blob Laplacian-of-Gaussian on the magnitude image.

The floor every learned detector must beat (no weights). Per axial slice, the
magnitude is divided by its local brain mean (Gaussian, sigma 8 mm) so that
bias fields cancel; the scale-normalised LoG ``sigma^2 * LoG`` of that ratio is
taken at a few in-plane scales (dark blobs give positive responses) and the
maximum over scales is the score. Candidates are 3D local maxima (3x3x3) of
the score inside the brain (eroded by one voxel in-plane) whose score and
darkness (1 - ratio) exceed two thresholds. The two thresholds are tuned on
training subjects by :func:`cmbstudy.training.classical.tune_classical`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["ClassicalParams", "ClassicalDetection", "local_ratio", "compute_score", "find_peaks", "detect_classical"]


@dataclass(frozen=True)
class ClassicalParams:
    """Settings of the classical detector."""

    sigmas_mm: tuple[float, ...] = (1.5, 2.5, 3.5)  # in-plane LoG scales (mm)
    threshold: float = 0.1  # minimum score (scale-normalised LoG of the intensity ratio)
    darkness: float = 0.2  # minimum 1 - (intensity / local brain mean)
    edge_mm: float = 3.0  # ignore candidates closer than this to the brain-mask edge (in-plane erosion)


@dataclass(frozen=True)
class ClassicalDetection:
    """Output of :func:`detect_classical` for one volume."""

    score: np.ndarray  # (X, Y, Z) float32 LoG score (0 outside the brain)
    centroids: np.ndarray  # (n, 3) float voxel coordinates of the detections
    peak_scores: np.ndarray  # (n,) score at each detection


def local_ratio(image: np.ndarray, brain: np.ndarray, voxel_mm: Sequence[float], sigma_mm: float) -> np.ndarray:
    """(X, Y, Z) float32: the image over its in-plane local brain mean (Gaussian of ``sigma_mm``), 1 outside ``brain``.

    Tissue is about 1 and a CMB well below it, whatever the scanner's scale and bias field.
    """
    image = np.nan_to_num(np.asarray(image, dtype=np.float32))
    brain = np.asarray(brain, dtype=bool)
    sigma = (sigma_mm / float(voxel_mm[0]), sigma_mm / float(voxel_mm[1]), 0.0)
    num = ndimage.gaussian_filter(image * brain, sigma)
    den = ndimage.gaussian_filter(brain.astype(np.float32), sigma)
    return np.where(brain, image * den / np.maximum(num, 1e-6), 1.0).astype(np.float32)


def compute_score(
    image: np.ndarray, brain: np.ndarray, voxel_mm: Sequence[float], sigmas_mm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """LoG score and darkness, both (X, Y, Z) float32, 0 outside ``brain``.

    Raises:
        ValueError: image and brain shapes differ or a scale is not positive.
    """
    image = np.asarray(image, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    if image.shape != brain.shape:
        raise ValueError(f"image shape {image.shape} and brain mask shape {brain.shape} differ")
    if min(sigmas_mm) <= 0:
        raise ValueError(f"LoG scales {tuple(sigmas_mm)} must be positive (mm)")
    ratio = local_ratio(image, brain, voxel_mm, 8.0)
    score = np.full(image.shape, -np.inf, dtype=np.float32)
    for s in sigmas_mm:
        sig = (s / voxel_mm[0], s / voxel_mm[1], 0.0)
        log = (ndimage.gaussian_filter(ratio, sig, order=(2, 0, 0))
               + ndimage.gaussian_filter(ratio, sig, order=(0, 2, 0))) * (s / voxel_mm[0]) ** 2  # in-plane LoG
        score = np.maximum(score, log.astype(np.float32))
    score = np.where(brain, score, 0.0).astype(np.float32)
    darkness = np.where(brain, 1.0 - ratio, 0.0).astype(np.float32)
    return score, darkness


def find_peaks(
    score: np.ndarray, darkness: np.ndarray, brain: np.ndarray, voxel_mm: Sequence[float], edge_mm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps = max(1, int(round(edge_mm / voxel_mm[0])))
    inner = ndimage.binary_erosion(brain, np.ones((3, 3, 1), bool), iterations=steps)
    peak = (score == ndimage.maximum_filter(score, size=3)) & inner & (score > 0)
    idx = np.argwhere(peak)
    return idx.astype(np.float64), score[peak], darkness[peak]


def detect_classical(
    image: np.ndarray, brain: np.ndarray, voxel_mm: Sequence[float], params: ClassicalParams = ClassicalParams()
) -> ClassicalDetection:
    """Detect dark blobs in one magnitude volume (X, Y, Z) inside ``brain``."""
    score, darkness = compute_score(image, brain, voxel_mm, params.sigmas_mm)
    idx, s, d = find_peaks(score, darkness, np.asarray(brain, bool), voxel_mm, params.edge_mm)
    keep = (s >= params.threshold) & (d >= params.darkness)
    return ClassicalDetection(score, idx[keep], s[keep])
