"""The classical LoG detector on hand-made volumes."""

from __future__ import annotations

import numpy as np
import pytest

from cmbstudy.models.baselines.classical import ClassicalParams, detect_classical
from cmbstudy.training.classical import (
    DetectionCase,
    evaluate_classical,
    tune_classical,
)


def _volume(rng: np.random.Generator, centres: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    shape = (41, 43, 9)  # (X, Y, Z)
    img = 1.0 + 0.03 * rng.normal(size=shape)
    xx, yy, zz = np.indices(shape)
    for c in centres:
        d2 = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (2 * (zz - c[2])) ** 2
        img -= 0.7 * np.exp(-d2 / (2 * 1.2**2))
    brain = np.zeros(shape, bool)
    brain[3:-3, 3:-3, :] = True
    return img.astype(np.float32), brain


def test_detects_dark_blobs(rng: np.random.Generator) -> None:
    centres = [(10, 12, 3), (28, 30, 5), (30, 11, 4)]
    img, brain = _volume(rng, centres)
    det = detect_classical(img, brain, (1.0, 1.0, 2.0), ClassicalParams(threshold=0.1, darkness=0.3))
    assert det.score.shape == img.shape and det.score[~brain].max() == 0
    assert len(det.centroids) == 3
    found = sorted(tuple(int(v) for v in c) for c in det.centroids)
    assert found == sorted(centres)


def test_tune_and_evaluate(rng: np.random.Generator) -> None:
    cases = []
    for k in range(3):
        centres = [(10 + k, 12, 3), (28, 30 - k, 5)]
        img, brain = _volume(rng, centres)
        cases.append(DetectionCase(img, brain, (1.0, 1.0, 2.0), np.array(centres, float)))
    params, summary = tune_classical(cases, thresholds=(0.05, 0.1, 5.0), darkness_levels=(0.2, 0.9))
    assert summary["f1"] == 1.0 and params.threshold in (0.05, 0.1) and params.darkness == 0.2
    ev = evaluate_classical(cases, ClassicalParams(threshold=5.0))  # nothing passes
    assert ev["n_tp"] == 0 and ev["n_fn"] == 6 and ev["fp_per_subject"] == 0.0


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="brain mask shape"):
        detect_classical(np.ones((5, 6, 7)), np.ones((5, 6, 8), bool), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="at least one case"):
        tune_classical([])
