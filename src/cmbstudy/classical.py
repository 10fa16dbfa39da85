"""A classical CMB detector: dark-blob Laplacian-of-Gaussian on the magnitude image.

The baseline every learned detector must beat.  Per axial slice, the magnitude
is divided by its local brain mean (Gaussian, sigma 8 mm) so that bias fields
cancel; the scale-normalised LoG ``sigma^2 * LoG`` of that ratio is taken at a
few in-plane scales (dark blobs give positive responses) and the maximum over
scales is the score.  Candidates are 3D local maxima (3x3x3) of the score
inside the brain (eroded by one voxel in-plane) whose score and darkness
(1 - ratio) exceed two thresholds.  :func:`tune_classical` picks both thresholds
by a grid search maximising the pooled F1 of the paper's 4-voxel rule on
training cases; :func:`evaluate_classical` scores held-out cases the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from .metrics import match_paper, summarize_detection

__all__ = ["ClassicalParams", "ClassicalDetection", "DetectionCase", "compute_score", "detect_classical",
           "tune_classical", "evaluate_classical", "load_detection_cases"]


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


@dataclass(frozen=True)
class DetectionCase:
    """One volume with its reference, for tuning and evaluation."""

    image: np.ndarray  # (X, Y, Z) magnitude
    brain: np.ndarray  # (X, Y, Z) bool
    voxel_mm: tuple[float, float, float]
    ref_centroids: np.ndarray  # (n, 3) voxel coordinates of the reference CMBs


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
    s_local = [8.0 / voxel_mm[0], 8.0 / voxel_mm[1], 0.0]
    num = ndimage.gaussian_filter(image * brain, s_local)
    den = ndimage.gaussian_filter(brain.astype(np.float32), s_local)
    ratio = np.where(brain, image * den / np.maximum(num, 1e-6), 1.0).astype(np.float32)
    score = np.full(image.shape, -np.inf, dtype=np.float32)
    for s in sigmas_mm:
        sig = (s / voxel_mm[0], s / voxel_mm[1], 0.0)
        log = (ndimage.gaussian_filter(ratio, sig, order=(2, 0, 0))
               + ndimage.gaussian_filter(ratio, sig, order=(0, 2, 0))) * (s / voxel_mm[0]) ** 2  # in-plane LoG
        score = np.maximum(score, log.astype(np.float32))
    score = np.where(brain, score, 0.0).astype(np.float32)
    darkness = np.where(brain, 1.0 - ratio, 0.0).astype(np.float32)
    return score, darkness


def _peaks(
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
    idx, s, d = _peaks(score, darkness, np.asarray(brain, bool), voxel_mm, params.edge_mm)
    keep = (s >= params.threshold) & (d >= params.darkness)
    return ClassicalDetection(score, idx[keep], s[keep])


def _candidates(cases: Sequence[DetectionCase], sigmas_mm: Sequence[float], edge_mm: float) -> list[tuple]:
    out = []
    for case in cases:
        score, darkness = compute_score(case.image, case.brain, case.voxel_mm, sigmas_mm)
        out.append(_peaks(score, darkness, np.asarray(case.brain, bool), case.voxel_mm, edge_mm))
    return out


def _pooled(cands: list[tuple], cases: Sequence[DetectionCase], t: float, d: float, max_distance: float) -> dict:
    counts = []
    for (idx, s, dk), case in zip(cands, cases):
        m = match_paper(idx[(s >= t) & (dk >= d)], case.ref_centroids, max_distance)
        counts.append((m.n_tp, m.n_fp, m.n_fn))
    return summarize_detection(counts)


def tune_classical(
    cases: Sequence[DetectionCase],
    sigmas_mm: Sequence[float] = (1.5, 2.5, 3.5),
    thresholds: Sequence[float] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3),
    darkness_levels: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    max_distance: float = 4.0,
    edge_mm: float = 3.0,
) -> tuple[ClassicalParams, dict]:
    """Grid search of (threshold, darkness) maximising pooled F1 (paper rule) on ``cases``.

    Returns:
        the best parameters and their pooled summary (:func:`cmbstudy.metrics.summarize_detection`).

    Raises:
        ValueError: no cases.
    """
    if not cases:
        raise ValueError("tune_classical needs at least one case")
    cands = _candidates(cases, sigmas_mm, edge_mm)
    best: tuple[float, float, float, dict] | None = None
    for t in thresholds:
        for d in darkness_levels:
            summary = _pooled(cands, cases, t, d, max_distance)
            f1 = summary["f1"] if np.isfinite(summary["f1"]) else 0.0
            if best is None or f1 > best[0]:
                best = (f1, t, d, summary)
    assert best is not None
    return ClassicalParams(tuple(float(s) for s in sigmas_mm), float(best[1]), float(best[2]), edge_mm), best[3]


def evaluate_classical(cases: Sequence[DetectionCase], params: ClassicalParams, max_distance: float = 4.0) -> dict:
    """Pooled precision, recall, F1 and FP per subject of the detector on ``cases`` (paper rule)."""
    return _pooled(_candidates(cases, params.sigmas_mm, params.edge_mm), cases, params.threshold, params.darkness, max_distance)


def load_detection_cases(root: str | Path) -> tuple[list[DetectionCase], list[str]]:
    """Detection cases (magnitude, brain mask, voxel size, CMB-mask component centroids) of a dataset.

    Subjects without a CMB mask or a brain mask are skipped.

    Returns:
        the cases and their subject ids, sorted by id.
    """
    from .datasets import load_subjects
    from .io import load_image, load_mask, voxel_sizes
    from .metrics import find_lesions

    cases, ids = [], []
    for sub in load_subjects(Path(root)):
        if sub.mask_path is None or sub.brain_mask_path is None:
            continue
        img = load_image(sub.image_path)
        mask = np.asarray(load_mask(sub.mask_path, reference=img).dataobj)
        brain = np.asarray(load_mask(sub.brain_mask_path, reference=img).dataobj) > 0
        cases.append(DetectionCase(np.asarray(img.dataobj), brain, voxel_sizes(img), find_lesions(mask).centroids))
        ids.append(sub.subject_id)
    return cases, ids
