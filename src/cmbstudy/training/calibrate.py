"""Calibration of a trained run: its operating point chosen on its own validation subjects.

After training, the checkpoint that the run keeps predicts every validation
subject; the threshold and the minimum lesion size that maximise the pooled
lesion-wise F1 there (:func:`cmbstudy.evaluation.operating_point.choose_operating_point`)
are written to ``RUN/operating_point.json``, which ``predict``, ``evaluate`` and
``detect`` then use unless ``--threshold`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.special import expit

from ..config import Profile
from ..data.io import write_json
from ..data.run_folder import OPERATING_POINT
from ..evaluation.operating_point import OperatingPoint, choose_operating_point
from ..inference.sliding_window import predict_logits
from ..preprocessing.geometry import PreprocessedVolume, volume_voxel_mm

__all__ = ["validation_probabilities", "calibrate_run"]


def validation_probabilities(model: torch.nn.Module, volumes: Sequence[PreprocessedVolume], profile: Profile,
                             device: torch.device) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each validation subject's probability map and brain mask on its input grid."""
    probabilities, brains = [], []
    for volume in volumes:
        logits = predict_logits(model, volume.image, profile.train.val_batch_size, device, volume_voxel_mm(volume),
                                profile.train.patch_size)
        probabilities.append(volume.restore(expit(logits.astype(np.float64)).astype(np.float32), 1))
        brains.append(volume.restore(volume.brain.astype(np.uint8), 0) > 0)
    return probabilities, brains


def calibrate_run(model: torch.nn.Module, volumes: Sequence[PreprocessedVolume], references: Sequence[np.ndarray],
                  profile: Profile, device: torch.device, out: Path) -> OperatingPoint:
    """Choose the run's operating point on its validation subjects and write ``RUN/operating_point.json``."""
    probabilities, brains = validation_probabilities(model, volumes, profile, device)
    ev = profile.evaluation
    point = choose_operating_point(probabilities, references, brains, ev.match_distance_voxels, ev.connectivity,
                                   fallback=ev.threshold)
    write_json(Path(out) / OPERATING_POINT, point.to_json())
    return point
