"""The operating point of a detector: its probability threshold, minimum size and brain rule, chosen on validation.

A probability map becomes lesions by a threshold, 3D connected components, and
two rules: components smaller than ``min_voxels`` are dropped, and so are
components whose centroid lies outside the brain mask (the network sees zeros
there; what it reports there is not a CMB). :func:`choose_operating_point`
picks the threshold and the minimum size that maximise the pooled lesion-wise
F1 (paper rule) on a run's validation subjects, so the operating point of a
run is never chosen on the data it is scored on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .lesions import Lesions, find_lesions
from .matching import match_paper
from .scores import summarize_detection

__all__ = [
    "THRESHOLDS",
    "MIN_SIZES",
    "OperatingPoint",
    "select_lesions",
    "centroids_inside",
    "apply_operating_point",
    "choose_operating_point",
]

#: Probability thresholds tried by :func:`choose_operating_point`.
THRESHOLDS: tuple[float, ...] = (*(round(0.05 * k, 2) for k in range(1, 20)), 0.975, 0.99)
#: Minimum component sizes (voxels of the evaluation grid) tried with each threshold.
MIN_SIZES: tuple[int, ...] = (1, 2, 3, 5)


@dataclass(frozen=True)
class OperatingPoint:
    """How a probability map becomes lesions.

    Attributes:
        threshold: probability threshold (inclusive) before connected components.
        min_voxels: components with fewer voxels are dropped.
        source: where it comes from ("profile", "validation", "--threshold").
        validation: the pooled validation scores at this point (empty when not calibrated).
    """

    threshold: float
    min_voxels: int = 1
    source: str = "profile"
    validation: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ConfigError(f"threshold {self.threshold!r} must be a probability in (0, 1], e.g. 0.5")
        if int(self.min_voxels) < 1:
            raise ConfigError(f"minimum lesion size {self.min_voxels!r} must be at least 1 voxel")

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``operating_point.json`` and ``prediction.json``."""
        return {"threshold": float(self.threshold), "min_voxels": int(self.min_voxels), "source": self.source,
                "validation": dict(self.validation or {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OperatingPoint:
        """The inverse of :meth:`to_json` (a missing minimum size is 1)."""
        return cls(float(data["threshold"]), int(data.get("min_voxels", 1)), str(data.get("source", "file")),
                   data.get("validation") or None)


def select_lesions(lesions: Lesions, keep: np.ndarray) -> Lesions:
    """The lesions where ``keep`` (n,) is True, relabelled 1..m in their order."""
    keep = np.asarray(keep, dtype=bool)
    if keep.all():
        return lesions
    lookup = np.zeros(lesions.n + 1, dtype=np.int32)
    lookup[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return Lesions(lookup[lesions.labels], lesions.centroids[keep], lesions.n_voxels[keep], lesions.max_prob[keep])


def centroids_inside(centroids: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(n,) bool: which (n, 3) voxel centroids, rounded, lie inside the (X, Y, Z) ``brain`` mask."""
    voxels = np.clip(np.rint(centroids).astype(int), 0, np.array(brain.shape) - 1)
    return np.asarray(brain, dtype=bool)[tuple(voxels.T)] if len(voxels) else np.zeros(0, dtype=bool)


def apply_operating_point(probability: np.ndarray, point: OperatingPoint, connectivity: int = 26,
                          brain: np.ndarray | None = None) -> Lesions:
    """The lesions of an (X, Y, Z) probability map at ``point``: threshold, components, size and brain rules.

    Args:
        brain: (X, Y, Z) bool brain mask on the same grid; components whose centroid (rounded)
            lies outside it are dropped. None keeps every component.
    """
    lesions = find_lesions(probability, point.threshold, connectivity)
    keep = lesions.n_voxels >= int(point.min_voxels)
    if brain is not None:
        keep &= centroids_inside(lesions.centroids, brain)
    return select_lesions(lesions, keep)


def choose_operating_point(
    probabilities: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    brains: Sequence[np.ndarray | None] | None = None,
    max_distance: float = 4.0,
    connectivity: int = 26,
    fallback: float = 0.5,
    thresholds: Sequence[float] = THRESHOLDS,
    min_sizes: Sequence[int] = MIN_SIZES,
) -> OperatingPoint:
    """The threshold and minimum size that maximise the pooled lesion-wise F1 of validation subjects (paper rule).

    Ties go to the fewer false positives, then to the higher threshold and the larger minimum
    size. Without any reference lesion (F1 undefined everywhere) the ``fallback`` threshold is
    kept with a minimum size of 1, and ``source`` says so.

    Args:
        probabilities: per subject an (X, Y, Z) probability map on its reference's grid.
        references: per subject the (X, Y, Z) binary reference mask.
        brains: per subject the brain mask of the brain rule (None: no brain rule).

    Raises:
        ConfigError: the sequences differ in length, or no subject is given.
    """
    if not probabilities or len(probabilities) != len(references):
        raise ConfigError(f"calibration needs as many probability maps as references, got "
                          f"{len(probabilities)} and {len(references)}")
    brains = list(brains) if brains is not None else [None] * len(probabilities)
    refs = [find_lesions(np.asarray(r), 0.5, connectivity) for r in references]
    if not sum(ref.n for ref in refs):
        return OperatingPoint(float(fallback), 1, "profile (no validation lesion to calibrate on)")
    best: tuple[tuple[float, ...], OperatingPoint] | None = None
    for threshold in thresholds:
        found = [apply_operating_point(p, OperatingPoint(threshold), connectivity, b)
                 for p, b in zip(probabilities, brains)]
        for size in min_sizes:
            counts = []
            for lesions, ref in zip(found, refs):
                centroids = lesions.centroids[lesions.n_voxels >= size]
                match = match_paper(centroids, ref.centroids, max_distance)
                counts.append((match.n_tp, match.n_fp, match.n_fn))
            summary = summarize_detection(counts)
            if math.isnan(summary["f1"]):
                continue
            key = (summary["f1"], -summary["fp_per_subject"], threshold, size)
            if best is None or key > best[0]:
                scores = {k: summary[k] for k in ("precision", "recall", "f1", "fp_per_subject", "n_subjects")}
                best = (key, OperatingPoint(float(threshold), int(size), "validation", scores))
    if best is None:
        return OperatingPoint(float(fallback), 1, "profile (no validation lesion to calibrate on)")
    return best[1]
