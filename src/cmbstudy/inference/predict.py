"""Prediction of a dataset with a training run's model: ``cmbstudy predict``.

Detection follows the paper (Cho et al. 2026, Sec. 2.4): every axial slice is
predicted with its two neighbours as input (:mod:`~cmbstudy.inference.sliding_window`),
the slice probabilities form a 3D map that is mapped back onto the input grid
(linear interpolation), thresholded, and split into 3D connected components;
each component is one detected CMB. The threshold and the smallest lesion kept
are the run's operating point, chosen on its validation subjects
(``RUN/operating_point.json``), unless ``threshold`` is given; components
whose centroid lies outside the brain mask are dropped, and the probability
map written carries 0 on them
(:func:`cmbstudy.evaluation.operating_point.apply_operating_point`). The
folder written is :mod:`cmbstudy.data.prediction_folder`.

Timing: ``seconds_model`` is the network on every slice of a subject,
``seconds_post`` the restoration to the input grid, thresholding, connected
components and the lesion table; preprocessing (N4, brain mask, resampling,
read from the cache) and writing files are excluded, as the paper reports
"forward inference and post-processing" (0.22 s per subject on a GPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import __version__
from ..config import Profile
from ..data.datasets import Subject, load_subjects
from ..data.io import (
    atomic_output_dir,
    check_output_dir,
    load_magnitude_and_phase,
    load_scan,
    save_nifti,
    write_json,
)
from ..data.prediction_folder import (
    DSEG_SUFFIX,
    LESION_COLUMNS,
    LESIONS_SUFFIX,
    PREDICTION_INFO,
    PREDICTIONS_TABLE,
    PROBSEG_SUFFIX,
    subject_stem,
)
from ..data.run_folder import load_run_split
from ..device import resolve_device
from ..errors import ConfigError, InputError
from ..evaluation.lesions import (
    Lesions,
    centroids_to_mm,
    voxel_volume_mm3,
)
from ..evaluation.operating_point import BRAIN_RULE, OperatingPoint
from ..preprocessing.brain import resolve_brain_extraction
from ..preprocessing.cache import default_cache_dir, load_preprocessed
from .model_store import DetectionModel, load_detection_model
from .pipeline import detect_preprocessed, map_rule
from .second_look import Detections

__all__ = ["SPLITS", "PredictionSummary", "lesion_table", "predict_dataset"]

SPLITS = ("all", "val", "train", "test")
_TIMING_COLUMNS = ["subject_id", "cmb_count", "n_candidates", "seconds_model", "seconds_post", "seconds_total"]


@dataclass(frozen=True)
class PredictionSummary:
    """What :func:`predict_dataset` wrote."""

    out: Path  # prediction folder
    model_source: str  # run folder, checkpoint or packaged model used
    n_subjects: int  # subjects predicted
    n_lesions: int  # lesions detected over all subjects
    threshold: float  # probability threshold (one stage)
    min_voxels: int  # smallest lesion kept (voxels; one stage)
    seconds_per_subject: float  # mean model + post-processing time (preprocessing excluded)
    device: str  # torch device used
    second_look: float | None = None  # the second look's threshold (None: one stage, the paper's method)

    def __str__(self) -> str:
        rule = (f"threshold {self.threshold:g}, at least {self.min_voxels} voxels, one stage"
                if self.second_look is None else f"candidates of any size, second look at {self.second_look:g}")
        return (
            f"predicted {self.n_subjects} subjects with {self.model_source} -> {self.out}\n"
            f"  lesions detected: {self.n_lesions} ({rule})\n"
            f"  seconds per subject: {self.seconds_per_subject:.3f} "
            f"(model + post-processing, {self.device})"
        )


def lesion_table(lesions: Lesions, affine: np.ndarray) -> pd.DataFrame:
    """One row per lesion: centroid in voxels (input array indices) and scanner mm, size, max prob.

    Columns: lesion_id (1..n, the instance label), x_vox, y_vox, z_vox, x_mm,
    y_mm, z_mm, n_voxels, volume_mm3 (voxels x voxel volume from ``affine``),
    max_prob.
    """
    affine = np.asarray(affine, dtype=float)
    mm = centroids_to_mm(lesions.centroids, affine)
    voxel_mm3 = voxel_volume_mm3(affine)
    table = pd.DataFrame(
        {
            "lesion_id": np.arange(1, lesions.n + 1, dtype=np.int64),
            "x_vox": lesions.centroids[:, 0], "y_vox": lesions.centroids[:, 1],
            "z_vox": lesions.centroids[:, 2],
            "x_mm": mm[:, 0], "y_mm": mm[:, 1], "z_mm": mm[:, 2],
            "n_voxels": lesions.n_voxels.astype(np.int64),
            "volume_mm3": lesions.n_voxels * voxel_mm3,
            "max_prob": lesions.max_prob,
        }
    )
    return table[list(LESION_COLUMNS)]


def _select_subjects(run_dir: Path | None, data_root: Path, split: str, subject_ids: Sequence[str] | None
                     ) -> list[Subject]:
    """The subjects of ``data_root`` in the run fold's ``split`` ("all": every one), optionally only ``subject_ids``."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    subjects = load_subjects(Path(data_root))
    if split != "all" and run_dir is not None:
        wanted = set(load_run_split(run_dir, split))
        missing = sorted(wanted - {s.subject_id for s in subjects})
        if missing:
            raise InputError(f"{split} subjects {missing} of {run_dir} are not in {data_root}")
        subjects = [s for s in subjects if s.subject_id in wanted]
    if subject_ids is not None:
        missing = sorted(set(subject_ids) - {s.subject_id for s in subjects})
        if missing:
            raise InputError(f"subjects {missing[:5]} are not among the {split} subjects of {data_root}")
        subjects = [s for s in subjects if s.subject_id in set(subject_ids)]
    return subjects


def _write_subject(out: Path, subject_id: str, affine: np.ndarray, found: Detections, detection_map: np.ndarray
                   ) -> None:
    """A subject's three files under ``out`` (names from :mod:`cmbstudy.data.prediction_folder`)."""
    lesions = found.lesions
    if lesions.n > np.iinfo(np.int16).max:
        raise InputError(f"subject {subject_id}: {lesions.n} lesions exceed int16 labels")
    stem = subject_stem(out, subject_id)
    save_nifti(detection_map, affine, f"{stem}{PROBSEG_SUFFIX}", np.float32)
    save_nifti(lesions.labels, affine, f"{stem}{DSEG_SUFFIX}", np.int16)
    lesion_table(lesions, affine).to_csv(f"{stem}{LESIONS_SUFFIX}", sep="\t", index=False, float_format="%.4f")


def _predict_subject(model: DetectionModel, subject: Subject, profile: Profile, points: Sequence[OperatingPoint],
                     device: torch.device, cache: Path, outs: Sequence[Path]) -> list[dict[str, Any]]:
    """Predict one subject once, write its files under each of ``outs`` (one per rule of ``points``); returns
    its row of ``predictions.tsv`` in each."""
    # one subject at a time keeps memory flat; preprocessing is outside the timing
    volume = load_preprocessed([subject], profile.preprocess, cache, progress=False)[0]
    image = phase = None
    if any(p.second_look is not None for p in points):
        image, phase = load_magnitude_and_phase(subject.image_path)
    result = detect_preprocessed(model, volume, points, device, image, phase)
    affine = np.asarray(volume.geometry.original_affine, dtype=float)
    rows = []
    for out, found, detection_map in zip(outs, result.detections, result.maps):
        _write_subject(out, volume.subject_id, affine, found, detection_map)
        rows.append({"subject_id": volume.subject_id, "cmb_count": found.lesions.n,
                     "n_candidates": found.n_candidates, "seconds_model": result.seconds_model,
                     "seconds_post": result.seconds_post,
                     "seconds_total": result.seconds_model + result.seconds_post})
    return rows


def _subject_brain(subject: Subject, profile: Profile, choice: str) -> tuple[Profile, str]:
    """The profile whose brain extraction fits ``subject`` (``choice`` as ``--brain-extraction``), and why."""
    has_mask = subject.brain_mask_path is not None
    if choice == "auto" and has_mask:
        method, reason = "mask", "auto: the dataset's brain mask"
    else:
        data = np.asarray(load_scan(subject.image_path)[0].dataobj) \
            if choice == "auto" else np.zeros(0)
        method, reason = resolve_brain_extraction(choice, data, has_mask)
    preprocess = dataclasses.replace(profile.preprocess, brain_extraction=method)
    return dataclasses.replace(profile, preprocess=preprocess), reason


def predict_dataset(
    model: str | Path | DetectionModel | None,
    data_root: Path,
    out: Path,
    threshold: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    split: str = "all",
    subject_ids: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    brain_extraction: str = "auto",
    single_stage: bool = False,
    single_stage_out: Path | None = None,
) -> PredictionSummary:
    """Detect CMBs in the subjects of ``data_root`` with a model.

    ``model`` is what ``--model`` names (:func:`cmbstudy.inference.model_store.load_detection_model`):
    a training run folder (its ``profile.yaml`` and ``checkpoint_best.pt``), a
    checkpoint, the packaged model (None), or a loaded model. Its profile gives the
    preprocessing, network and connectivity; its calibrated operating point the
    threshold and smallest lesion. Writes the prediction folder (``PRED/sub-<id>/``:
    probability and int16 instance NIfTIs on the input grid with the input affine,
    ``lesions.tsv`` per subject, ``predictions.tsv``, ``prediction.json``) atomically.

    Args:
        split: ``"all"`` subjects, only the run fold's ``"val"`` or ``"train"`` subjects, or the
            ``"test"`` subjects the run held out (these three need a run folder).
        subject_ids: predict only these subjects (of the split); None: all of it.
        overrides: ``--set section.key=value`` on the model's profile.
        brain_extraction: as ``--brain-extraction`` (:func:`~cmbstudy.preprocessing.brain.resolve_brain_extraction`):
            ``auto`` uses the dataset's brain mask where it has one.
        single_stage: detect with the network alone (the paper's method) although the model has a second look.
        single_stage_out: a second folder, written from the same network pass with the single-stage rule
            (the study's paper tables beside its two-stage ones); ignored for a model without a second look.

    Raises:
        InputError: missing run files, or split subjects absent from ``data_root``.
        ConfigError: bad threshold, split, device, override, or a split without a run folder.
        OutputError: ``out`` holds results and ``overwrite`` is false.
    """
    out = Path(out)
    check_output_dir(out, overwrite)
    loaded = model if isinstance(model, DetectionModel) else load_detection_model(model, overrides)
    run_dir = Path(loaded.source) if Path(loaded.source).is_dir() else None
    if split != "all" and run_dir is None:
        raise ConfigError(f"--split {split} needs the model's training run folder (--model RUN), "
                          f"not {loaded.source}: it holds the fold's subjects")
    point = loaded.point_for(threshold, single_stage)
    points = [point]
    outs = [out]
    if single_stage_out is not None and point.second_look is not None:
        check_output_dir(Path(single_stage_out), overwrite)
        points.append(point.single_stage)
        outs.append(Path(single_stage_out))
    subjects = _select_subjects(run_dir, Path(data_root), split, subject_ids)
    dev = resolve_device(device)
    cache = default_cache_dir(run_dir if run_dir is not None else out)
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_output_dir(o, overwrite)) for o in outs]
        rows: list[list[dict]] = [[] for _ in outs]
        for subject in tqdm(subjects, desc="predict", unit="subject", disable=not progress):
            profile, reason = _subject_brain(subject, loaded.profile, brain_extraction)
            for kept, row in zip(rows, _predict_subject(loaded, subject, profile, points, dev, cache, tmps)):
                kept.append({**row, "brain_extraction": reason})
        summaries = [_write_info(tmp, loaded, rule, run_dir, brain_extraction, split, dev, kept)
                     for tmp, rule, kept in zip(tmps, points, rows)]
    return dataclasses.replace(summaries[0], out=out)


def _write_info(tmp: Path, loaded: DetectionModel, point: OperatingPoint, run_dir: Path | None,
                brain_extraction: str, split: str, dev: torch.device, rows: list[dict]) -> PredictionSummary:
    """Write a prediction folder's ``predictions.tsv`` and ``prediction.json``; returns what it holds."""
    frame = pd.DataFrame(rows, columns=_TIMING_COLUMNS + ["brain_extraction"])
    frame.to_csv(tmp / PREDICTIONS_TABLE, sep="\t", index=False, float_format="%.4f")
    seconds = float(frame["seconds_total"].mean()) if rows else float("nan")
    map_threshold, map_min_voxels = map_rule(point)
    info = {
        "model": loaded.name,
        "model_source": loaded.source,
        "run_dir": str(run_dir.resolve()) if run_dir is not None else None,
        "profile": loaded.profile.name,
        "stages": point.stages,
        "threshold": map_threshold,
        "min_voxels": map_min_voxels,
        "operating_point": point.to_json(),
        "brain_rule": BRAIN_RULE,
        "brain_extraction": brain_extraction,
        "connectivity": point.connectivity,
        "match_distance_voxels": float(loaded.profile.evaluation.match_distance_voxels),
        "split": split,
        "checkpoint_epoch": int(loaded.provenance.get("epoch") or -1),
        "cmbstudy_version": __version__,
        "device": str(dev),
        "n_subjects": len(rows),
        "seconds_per_subject": seconds,
        "timing": "model + post-processing (restore, lesion rule, second look); preprocessing excluded",
    }
    write_json(tmp / PREDICTION_INFO, info)
    return PredictionSummary(
        out=tmp, model_source=loaded.source, n_subjects=len(rows), n_lesions=int(frame["cmb_count"].sum()),
        threshold=point.threshold, min_voxels=point.min_voxels, seconds_per_subject=seconds, device=str(dev),
        second_look=point.second_look,
    )
