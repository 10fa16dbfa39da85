"""The lesion rule of a detector (its operating point): what makes a probability map into detected CMBs.

One object, :class:`OperatingPoint`, holds the whole rule: a probability
threshold, 3D connected components of a connectivity, the smallest component
kept (``min_voxels``), the brain rule (a component whose centroid lies outside
the brain mask is dropped: the network sees zeros there, what it reports there
is not a CMB), and, for a two-stage detector, the second look's threshold
(:mod:`cmbstudy.inference.second_look`). Its defaults come from the profile's
``evaluation`` section (:meth:`OperatingPoint.from_config`), in one place.
:func:`apply_operating_point` is the single-stage rule, used alike by training's
validation and mining, calibration, evaluation, ``predict`` and ``detect``
(:func:`cmbstudy.inference.second_look.find_detections` adds the second look).

:func:`choose_operating_point` picks the threshold and the minimum size that
maximise the pooled lesion-wise F1 (paper rule) on a run's validation subjects,
so the operating point of a run is never chosen on the data it is scored on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import EvalConfig
from ..errors import ConfigError
from .lesions import CONNECTIVITIES, Lesions, find_lesions
from .matching import match_paper
from .scores import summarize_detection

__all__ = [
    "THRESHOLDS",
    "MIN_SIZES",
    "BRAIN_RULE",
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
#: The brain rule, in words (written into every prediction folder and summary).
BRAIN_RULE = "components whose centroid lies outside the brain mask are dropped"


@dataclass(frozen=True)
class OperatingPoint:
    """The lesion rule: how a probability map becomes lesions (the module docstring).

    Attributes:
        threshold: probability threshold (inclusive) before connected components.
        min_voxels: components with fewer voxels are dropped.
        source: where it comes from ("profile", "validation", "--threshold").
        validation: the pooled validation scores at this point (empty when not calibrated).
        connectivity: 6, 18 or 26, of the components.
        second_look: the second look's threshold on its score (a two-stage detector); None: one stage.
    """

    threshold: float
    min_voxels: int = 1
    source: str = "profile"
    validation: Mapping[str, Any] | None = None
    connectivity: int = 26
    second_look: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ConfigError(f"threshold {self.threshold!r} must be a probability in (0, 1], e.g. 0.5")
        if int(self.min_voxels) < 1:
            raise ConfigError(f"minimum lesion size {self.min_voxels!r} must be at least 1 voxel")
        if isinstance(self.connectivity, bool) or self.connectivity not in CONNECTIVITIES:
            raise ConfigError(f"connectivity {self.connectivity!r} is not supported: use 6, 18 or 26")
        if self.second_look is not None and not 0.0 <= float(self.second_look) <= 1.0:
            raise ConfigError(f"second-look threshold {self.second_look!r} must be a score in [0, 1]")

    @classmethod
    def from_config(cls, evaluation: EvalConfig, source: str = "profile") -> OperatingPoint:
        """The rule a profile's ``evaluation`` section sets before any calibration (single stage)."""
        return cls(float(evaluation.threshold), int(evaluation.min_voxels), source,
                   connectivity=int(evaluation.connectivity))

    @property
    def stages(self) -> int:
        """1 for the network alone, 2 with the second look."""
        return 1 if self.second_look is None else 2

    @property
    def single_stage(self) -> OperatingPoint:
        """The same rule without the second look (the paper's method)."""
        return dataclasses.replace(self, second_look=None)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``operating_point.json`` and ``prediction.json``."""
        return {"threshold": float(self.threshold), "min_voxels": int(self.min_voxels), "source": self.source,
                "validation": dict(self.validation or {}), "connectivity": int(self.connectivity),
                "second_look": None if self.second_look is None else float(self.second_look),
                "brain_rule": BRAIN_RULE}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OperatingPoint:
        """The inverse of :meth:`to_json` (a missing minimum size is 1, connectivity 26, no second look)."""
        second = data.get("second_look")
        return cls(float(data["threshold"]), int(data.get("min_voxels", 1)), str(data.get("source", "file")),
                   data.get("validation") or None, int(data.get("connectivity", 26)),
                   None if second is None else float(second))


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


def apply_operating_point(probability: np.ndarray, point: OperatingPoint, brain: np.ndarray | None = None
                          ) -> Lesions:
    """The lesions of an (X, Y, Z) probability map at ``point``: threshold, components, size and brain rules.

    The single-stage rule (the second look, where ``point`` has one, is
    :func:`cmbstudy.inference.second_look.find_detections`).

    Args:
        brain: (X, Y, Z) bool brain mask on the same grid; components whose centroid (rounded)
            lies outside it are dropped. None keeps every component (a map already restricted to the brain).
    """
    lesions = find_lesions(probability, point.threshold, point.connectivity)
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
        return OperatingPoint(float(fallback), 1, "profile (no validation lesion to calibrate on)",
                              connectivity=connectivity)
    best: tuple[tuple[float, ...], OperatingPoint] | None = None
    for threshold in thresholds:
        found = [apply_operating_point(p, OperatingPoint(threshold, connectivity=connectivity), b)
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
                best = (key, OperatingPoint(float(threshold), int(size), "validation", scores, connectivity))
    if best is None:
        return OperatingPoint(float(fallback), 1, "profile (no validation lesion to calibrate on)",
                              connectivity=connectivity)
    return best[1]
