"""One path from a preprocessed volume to detected CMBs, shared by ``predict`` and ``detect``.

The network on every axial slice with its two neighbours (Cho et al. 2026,
Sec. 2.2; :func:`~cmbstudy.inference.sliding_window.predict_volume`), the
probability map restored onto the input grid, then the lesion rule
(:func:`cmbstudy.inference.second_look.find_detections`): one stage as the
paper has it, or candidates and the second look. ``predict`` and ``detect``
differ only in how they find their inputs and what they add (reports,
locations); both write what :func:`detection_map` returns as the probability
map, so that ``evaluate`` finds the same lesions in it.

Timing: ``seconds_model`` is the network on every slice, ``seconds_post`` the
restoration, the lesion rule (the second look included) and nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..evaluation.operating_point import OperatingPoint, apply_operating_point, centroids_inside
from ..preprocessing.geometry import PreprocessedVolume
from .model_store import DetectionModel
from .second_look import Detections, SecondLook, find_detections
from .sliding_window import predict_volume

__all__ = ["VolumeDetection", "describe_rule", "map_rule", "detection_map", "detect_preprocessed"]

# the smallest threshold of a two-stage map: every detected CMB carries a score at least this high
_MAP_FLOOR = 1e-6


@dataclass(frozen=True)
class VolumeDetection:
    """What :func:`detect_preprocessed` found in one volume, for each lesion rule asked for."""

    probability: np.ndarray  # (X, Y, Z) float32 the network's probability on the input grid
    brain: np.ndarray  # (X, Y, Z) bool brain mask on the input grid
    detections: tuple[Detections, ...]  # one per rule, in the order given
    maps: tuple[np.ndarray, ...]  # one per rule: what the prediction folder stores (:func:`detection_map`)
    seconds_model: float  # the network on every slice
    seconds_post: float  # restoration and every lesion rule
    voxel_mm: np.ndarray  # (3,) the input grid's voxel size, as the second look measured with it


def describe_rule(point: OperatingPoint, second_look: SecondLook | None = None) -> str:
    """The lesion rule in words, for summaries and reports: one stage (the paper's method) or two, with the screen
    of ``second_look`` (the model's) where it has one."""
    single = (f"probability >= {point.threshold:g}, components of at least {point.min_voxels} voxel(s), "
              f"{point.connectivity}-connected, centroid in the brain")
    if point.second_look is None:
        return f"one stage (the paper's method): {single}"
    screen = second_look is not None and second_look.settings.screen_probability > 0
    looked = ("a screen that drops the blobs plainly not a CMB, and each candidate left looked at again" if screen
              else "each looked at again")
    return (f"two stages: candidates (the network's map at a low threshold and dark blobs), {looked} in 3D and kept "
            f"at a second-look score >= {point.second_look:g}")


def map_rule(point: OperatingPoint) -> tuple[float, int]:
    """The threshold and smallest size at which the map of :func:`detection_map` gives the lesions found.

    One stage: the rule's own. Two stages: the second look's threshold on its scores, any size.
    """
    if point.second_look is None:
        return float(point.threshold), int(point.min_voxels)
    return max(float(point.second_look), _MAP_FLOOR), 1


def detection_map(probability: np.ndarray, brain: np.ndarray, point: OperatingPoint, found: Detections
                  ) -> np.ndarray:
    """The map written as ``_desc-cmb_probseg``: its components at :func:`map_threshold` are the lesions found.

    One stage: the network's probability, with the components that the brain rule dropped set to 0.
    Two stages: each detected CMB's voxels carry its second-look score (at least :func:`map_rule`'s threshold),
    everything else 0.
    """
    if point.second_look is None:
        out = probability.copy()
        everything = apply_operating_point(probability, OperatingPoint(point.threshold, 1,
                                                                       connectivity=point.connectivity))
        outside = ~centroids_inside(everything.centroids, brain)
        if outside.any():
            out[np.isin(everything.labels, np.flatnonzero(outside) + 1)] = 0.0
        return out
    out = np.zeros_like(probability, dtype=np.float32)
    labels = found.lesions.labels
    if found.lesions.n:
        floor = map_rule(point)[0]
        lookup = np.concatenate([[0.0], np.maximum(found.scores, floor)]).astype(np.float32)
        out = lookup[labels]
    return out


def detect_preprocessed(model: DetectionModel, volume: PreprocessedVolume, points: Sequence[OperatingPoint],
                        device: torch.device, image: np.ndarray | None = None, phase: np.ndarray | None = None
                        ) -> VolumeDetection:
    """The network's map of ``volume`` and its lesions under each rule of ``points`` (one network pass).

    ``image`` is the scan as read (input grid), which the second look looks at; a two-stage rule needs it.
    ``phase`` is the phase image beside it (:func:`cmbstudy.data.io.load_phase`), or None.

    Raises:
        ConfigError: a two-stage rule when the model has no second look.
    """
    if any(p.second_look is not None for p in points) and model.second_look is None:
        raise ConfigError(f"{model.source} has no second look: detect with its single stage (--single-stage)")
    profile = model.profile
    start = time.perf_counter()
    prob = predict_volume(model.network, volume, profile.train.val_batch_size, device, profile.train.patch_size)
    model_done = time.perf_counter()
    probability = np.clip(volume.restore(prob, order=1), 0.0, 1.0).astype(np.float32)
    brain = volume.input_brain()
    found, maps = [], []
    for point in points:
        detections = find_detections(probability, point, brain, image, volume.input_voxel_mm, model.second_look,
                                     phase)
        found.append(detections)
        maps.append(detection_map(probability, brain, point, detections))
    return VolumeDetection(probability, brain, tuple(found), tuple(maps), model_done - start,
                           time.perf_counter() - model_done, np.asarray(volume.input_voxel_mm, dtype=float))
