"""Hard-negative mining: the network's own false positives on its training subjects.

After a warm-up, the network being trained predicts a seeded subset of its
training subjects; every predicted component whose centroid lies beyond the
paper's match distance of every reference lesion is a false positive, and its
most probable voxel becomes the centre of later ``hard`` training samples
(:mod:`cmbstudy.training.plan`). Dou et al. (2016) train their second stage on
the first stage's false positives in the same way. No mimic label is used, so
mining works the same on real data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.special import expit

from ..config import Profile
from ..evaluation.lesions import find_lesions
from ..evaluation.matching import match_paper
from ..evaluation.operating_point import OperatingPoint, apply_operating_point
from ..inference.sliding_window import predict_logits
from ..preprocessing.geometry import volume_voxel_mm
from .plan import SliceVolume

__all__ = ["mining_subjects", "false_positive_points", "mine_hard_negatives"]


def mining_subjects(n_volumes: int, n_mine: int, seed: int, epoch: int) -> np.ndarray:
    """Indices of the training volumes predicted at ``epoch``: ``n_mine`` of them (0: all), drawn with the seed."""
    if n_mine <= 0 or n_mine >= n_volumes:
        return np.arange(n_volumes)
    return np.sort(np.random.default_rng([seed, epoch, 2]).choice(n_volumes, n_mine, replace=False))


def false_positive_points(index: int, probability: np.ndarray, mask: np.ndarray, point: OperatingPoint,
                          match_distance: float, brain: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(index, z, y, x)``: the most probable voxel of each detected lesion that matches no reference lesion.

    The arrays are ``(Z, S, S)`` on the preprocessed grid; the lesions are those of the lesion rule
    ``point`` (:func:`~cmbstudy.evaluation.operating_point.apply_operating_point`, brain rule with
    ``brain``); matching is the paper's centroid rule (:func:`cmbstudy.evaluation.matching.match_paper`).
    """
    pred = apply_operating_point(probability, point, brain)
    ref = find_lesions(np.asarray(mask), 0.5, point.connectivity)
    match = match_paper(pred.centroids, ref.centroids, match_distance)
    if not len(match.fp):
        return np.zeros((0, 4), np.int64)
    where = ndimage.maximum_position(probability, pred.labels, index=match.fp + 1)
    return np.asarray([(index, *(int(v) for v in voxel)) for voxel in where], dtype=np.int64).reshape(-1, 4)


def mine_hard_negatives(model: torch.nn.Module, volumes: Sequence[SliceVolume], indices: Sequence[int],
                        profile: Profile, device: torch.device) -> np.ndarray:
    """``(n, 4)`` rows ``(volume, z, y, x)``: false positives of ``model`` on ``volumes[indices]``.

    Detected with the profile's lesion rule before calibration (as validation detects), matched
    within ``evaluation.match_distance_voxels``. The model is left in eval mode.
    """
    ev, rows = profile.evaluation, []
    point = OperatingPoint.from_config(ev)
    model.eval()
    for index in indices:
        volume = volumes[int(index)]
        logits = predict_logits(model, volume.image, profile.train.val_batch_size, device, volume_voxel_mm(volume),
                                profile.train.patch_size)
        probability = expit(logits.astype(np.float64)).astype(np.float32)
        rows.append(false_positive_points(int(index), probability, volume.mask, point, ev.match_distance_voxels,
                                          np.asarray(volume.brain, bool)))
    return np.concatenate(rows) if rows else np.zeros((0, 4), np.int64)
