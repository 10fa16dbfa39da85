"""Calibration of a trained run: its lesion rule chosen on its own validation subjects.

After training, the checkpoint that the run keeps predicts every validation
subject; the threshold and the minimum lesion size that maximise the pooled
lesion-wise F1 there (:func:`cmbstudy.evaluation.operating_point.choose_operating_point`)
are the single stage's. With ``second_look.enabled``, the second look is then
trained on the same subjects' candidates and its threshold chosen out of fold
(:mod:`cmbstudy.training.second_look`): ``RUN/second_look.joblib`` and its
report ``RUN/second_look.json``. The whole rule is written to
``RUN/operating_point.json``, which ``predict``, ``evaluate`` and ``detect``
then use unless ``--threshold`` or ``--single-stage`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.special import expit

from ..config import Profile
from ..data.io import load_magnitude_and_phase, load_mask, write_json
from ..data.run_folder import OPERATING_POINT
from ..evaluation.operating_point import OperatingPoint, choose_operating_point
from ..inference.model_store import SECOND_LOOK
from ..inference.second_look import save_second_look
from ..inference.sliding_window import predict_logits
from ..preprocessing.geometry import PreprocessedVolume, volume_voxel_mm
from .second_look import SecondLookCase, fit_second_look

#: The second look's report where none could be trained (else it is the sidecar of ``second_look.joblib``).
SECOND_LOOK_REPORT = "second_look.json"

__all__ = ["validation_probabilities", "calibrate_run"]


def validation_probabilities(model: torch.nn.Module, volumes: Sequence[PreprocessedVolume], profile: Profile,
                             device: torch.device) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each validation subject's probability map and brain mask on its input grid."""
    probabilities, brains = [], []
    for volume in volumes:
        logits = predict_logits(model, volume.image, profile.train.val_batch_size, device, volume_voxel_mm(volume),
                                profile.train.patch_size)
        probabilities.append(volume.restore(expit(logits.astype(np.float64)).astype(np.float32), 1))
        brains.append(volume.input_brain())
    return probabilities, brains


def calibrate_run(model: torch.nn.Module, volumes: Sequence[PreprocessedVolume], references: Sequence[np.ndarray],
                  profile: Profile, device: torch.device, out: Path, images: Sequence[Path] = (),
                  training: Sequence[tuple[PreprocessedVolume, Path, Path]] = (), cache: Path | None = None
                  ) -> OperatingPoint:
    """Choose the run's lesion rule on its validation subjects; write ``RUN/operating_point.json``.

    With ``second_look.enabled``, ``images`` (the validation subjects' scans) and ``training`` (each
    training subject's preprocessed volume, scan and CMB mask), the second look is trained too; its image model
    is kept under ``cache`` for runs on the same training subjects (:mod:`cmbstudy.training.fit_cache`).
    """
    probabilities, brains = validation_probabilities(model, volumes, profile, device)
    ev, out = profile.evaluation, Path(out)
    point = choose_operating_point(probabilities, references, brains, ev.match_distance_voxels, ev.connectivity,
                                   fallback=ev.threshold)
    (out / SECOND_LOOK).unlink(missing_ok=True)
    (out / SECOND_LOOK_REPORT).unlink(missing_ok=True)
    if profile.second_look.enabled and images and training:
        cases, blobs = [], []
        for p, b, v, r, path in zip(probabilities, brains, volumes, references, images):
            image, phase = load_magnitude_and_phase(path)
            cases.append(SecondLookCase(p, image, b, v.input_voxel_mm, np.asarray(r), phase))
        for v, path, mask in training:
            image, phase = load_magnitude_and_phase(path)
            blobs.append(SecondLookCase(np.zeros(v.geometry.original_shape, np.float32), image, v.input_brain(),
                                        v.input_voxel_mm, np.asarray(load_mask(mask).dataobj), phase))
        second, point, report = fit_second_look(cases, blobs, profile.second_look, point, ev.match_distance_voxels,
                                                profile.seed, cache=cache)
        if second is not None:
            save_second_look(second, out / SECOND_LOOK, {"run": out.name, "report": report})
        else:
            write_json(out / SECOND_LOOK_REPORT, report)
    write_json(out / OPERATING_POINT, point.to_json())
    return point
