"""Tuning and scoring the classical LoG detector (:mod:`cmbstudy.models.baselines.classical`).

:func:`tune_classical` picks its two thresholds by a grid search maximising the
pooled F1 of the paper's 4-voxel rule on training cases; :func:`evaluate_classical`
scores held-out cases the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.datasets import load_subjects
from ..data.io import load_image, load_mask, voxel_sizes
from ..evaluation.lesions import find_lesions
from ..evaluation.matching import match_paper
from ..evaluation.scores import summarize_detection
from ..models.baselines.classical import ClassicalParams, compute_score, find_peaks

__all__ = ["DetectionCase", "tune_classical", "evaluate_classical", "load_detection_cases"]


@dataclass(frozen=True)
class DetectionCase:
    """One volume with its reference, for tuning and evaluation."""

    image: np.ndarray  # (X, Y, Z) magnitude
    brain: np.ndarray  # (X, Y, Z) bool
    voxel_mm: tuple[float, float, float]
    ref_centroids: np.ndarray  # (n, 3) voxel coordinates of the reference CMBs


def _candidates(cases: Sequence[DetectionCase], sigmas_mm: Sequence[float], edge_mm: float) -> list[tuple]:
    out = []
    for case in cases:
        score, darkness = compute_score(case.image, case.brain, case.voxel_mm, sigmas_mm)
        out.append(find_peaks(score, darkness, np.asarray(case.brain, bool), case.voxel_mm, edge_mm))
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
        the best parameters and their pooled summary (:func:`cmbstudy.evaluation.scores.summarize_detection`).

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
