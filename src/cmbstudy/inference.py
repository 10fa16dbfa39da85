"""Whole-volume inference: 2.5D slices -> 3D probability map -> lesion list.

Detection follows the paper (Cho et al. 2025, Sec. 2.4): every axial slice is
predicted with its two neighbours as input, the slice probabilities form a 3D
map that is mapped back onto the input grid (linear interpolation), thresholded,
and split into 3D connected components (:func:`cmbstudy.metrics.find_lesions`);
each component is one detected CMB.

Timing: ``seconds_model`` is the network on every slice of a subject,
``seconds_post`` the restoration to the input grid, thresholding, connected
components and the lesion table; preprocessing (N4, brain mask, resampling,
read from the cache) and writing files are excluded, as the paper reports
"forward inference and post-processing" (0.22 s per subject on a GPU).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm import tqdm

from . import __version__
from .config import Profile, TrainConfig, profile_from_mapping
from .datasets import load_subjects
from .errors import ConfigError, InputError
from .io import atomic_output_dir, check_output_dir, save_nifti
from .metrics import Lesions, centroids_to_mm, find_lesions
from .models import model_from_config
from .patches import is_volumetric, predict_volume_3d, volume_voxel_mm
from .preprocess import PreprocessedVolume, load_preprocessed
from .slices import volume_stacks
from .splits import load_splits

__all__ = [
    "CACHE_ENV_VAR",
    "PredictionSummary",
    "resolve_device",
    "default_cache_dir",
    "autocast",
    "predict_logits",
    "predict_volume",
    "lesion_table",
    "load_run_profile",
    "predict_dataset",
]

CACHE_ENV_VAR = "CMBSTUDY_CACHE"
SPLITS = ("all", "val", "train")
LESION_COLUMNS = (
    "lesion_id", "x_vox", "y_vox", "z_vox", "x_mm", "y_mm", "z_mm", "n_voxels", "volume_mm3", "max_prob",
)


@dataclass(frozen=True)
class PredictionSummary:
    """What :func:`predict_dataset` wrote."""

    out: Path  # prediction folder
    run_dir: Path  # training run whose best checkpoint was used
    n_subjects: int  # subjects predicted
    n_lesions: int  # lesions detected over all subjects
    threshold: float  # probability threshold
    seconds_per_subject: float  # mean model + post-processing time (preprocessing excluded)
    device: str  # torch device used

    def __str__(self) -> str:
        return (
            f"predicted {self.n_subjects} subjects -> {self.out}\n"
            f"  lesions detected: {self.n_lesions} (threshold {self.threshold:g})\n"
            f"  seconds per subject: {self.seconds_per_subject:.3f} "
            f"(model + post-processing, {self.device})"
        )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for but not available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {device!r} is not a device: use auto, cpu or cuda") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    return resolved


def default_cache_dir(anchor: Path) -> Path:
    """Preprocessing cache: ``$CMBSTUDY_CACHE``, else ``.cmbstudy_cache`` beside ``anchor``.

    Runs of several folds in one folder (``results/train/fold0``, ``fold1``...)
    and predictions from those runs share one cache; entries are keyed by the
    preprocessing settings and input files (:func:`cmbstudy.preprocess.load_preprocessed`).
    """
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path(anchor).resolve().parent / ".cmbstudy_cache"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; plain fp32 (a no-op context) elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def predict_logits(
    model: torch.nn.Module,
    image: np.ndarray,
    batch_size: int,
    device: str | torch.device,
    voxel_mm: Sequence[float] | None = None,
    patch_size: Sequence[int] | None = None,
) -> np.ndarray:
    """Logits of every voxel of a ``(Z, S, S)`` volume, as ``(Z, S, S)`` float32.

    2.5D networks: slices are stacked with their neighbours
    (:func:`cmbstudy.slices.volume_stacks`) and run ``batch_size`` at a time in
    eval mode; the model must return ``(B, 1, H, W)`` logits in eval mode and
    is moved to ``device``. Volumetric networks (``input_kind = "3d"``):
    :func:`cmbstudy.patches.predict_volume_3d` with ``patch_size`` windows
    (default ``TrainConfig().patch_size``), ``batch_size`` windows at a time,
    at the model's ``spacing_mm`` (which needs ``voxel_mm``, the volume's voxel
    size in mm along Z, Y, X, when > 0).

    Raises:
        ConfigError: ``batch_size`` < 1, or a volumetric model with ``spacing_mm > 0`` and no ``voxel_mm``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    device = resolve_device(device)
    if is_volumetric(model):
        patch = TrainConfig().patch_size if patch_size is None else patch_size
        spacing = float(getattr(model, "spacing_mm", 0.0))
        return predict_volume_3d(model, image, voxel_mm, spacing, patch, batch_size, device)
    memory = torch.channels_last  # NHWC: 4x faster depthwise 13x13 on CPU too
    model.to(device=device, memory_format=memory)
    stacks = volume_stacks(np.asarray(image, dtype=np.float32))
    out = np.empty((stacks.shape[0],) + stacks.shape[2:], dtype=np.float32)
    with _eval_mode(model), torch.inference_mode(), autocast(device):
        for start in range(0, stacks.shape[0], batch_size):
            batch = torch.from_numpy(stacks[start : start + batch_size]).to(device, memory_format=memory)
            logits = model(batch)
            out[start : start + batch.shape[0]] = logits[:, 0].float().cpu().numpy()
    return out


def predict_volume(
    model: torch.nn.Module,
    volume: PreprocessedVolume,
    batch_size: int,
    device: str | torch.device,
    patch_size: Sequence[int] | None = None,
) -> np.ndarray:
    """CMB probability of every voxel of ``volume.image``: ``(Z, S, S)`` float32 in [0, 1].

    Sigmoid of :func:`predict_logits` (the voxel size comes from
    ``volume.geometry``; ``patch_size`` is the sliding window of volumetric
    models), on the preprocessed grid; map it to the input grid with
    ``volume.restore(prob, order=1)``.
    """
    logits = predict_logits(model, volume.image, batch_size, device, volume_voxel_mm(volume), patch_size)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def lesion_table(lesions: Lesions, affine: np.ndarray) -> pd.DataFrame:
    """One row per lesion: centroid in voxels (input array indices) and scanner mm, size, max prob.

    Columns: lesion_id (1..n, the instance label), x_vox, y_vox, z_vox, x_mm,
    y_mm, z_mm, n_voxels, volume_mm3 (voxels x voxel volume from ``affine``),
    max_prob.
    """
    affine = np.asarray(affine, dtype=float)
    mm = centroids_to_mm(lesions.centroids, affine)
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
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


def load_run_profile(run_dir: Path) -> Profile:
    """The resolved profile a training run wrote (``RUN/profile.yaml``).

    Raises:
        InputError: the file is missing or not a profile.
    """
    path = Path(run_dir) / "profile.yaml"
    if not path.is_file():
        raise InputError(f"{path} does not exist: give a run folder written by `cmbstudy train`")
    try:
        return profile_from_mapping(yaml.safe_load(path.read_text()), str(path))
    except ConfigError as exc:
        raise InputError(f"{path} is not a valid profile: {exc}") from exc


def _split_ids(run_dir: Path, split: str) -> set[str] | None:
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if split == "all":
        return None
    payload = load_splits(Path(run_dir) / "split.json")
    return set(payload["folds"][int(payload["fold"])][split])


def predict_dataset(
    run_dir: Path,
    data_root: Path,
    out: Path,
    threshold: float | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    split: str = "all",
    subject_ids: Sequence[str] | None = None,
) -> PredictionSummary:
    """Detect CMBs in the subjects of ``data_root`` with a run's best checkpoint.

    Uses the run's ``profile.yaml`` (model and preprocessing settings, threshold
    and connectivity of ``evaluation``) and ``checkpoint_best.pt``. Writes the
    prediction folder (``PRED/sub-<id>/``: probability and int16 instance NIfTIs on
    the input grid with the input affine, ``lesions.tsv`` per subject,
    ``predictions.tsv``, ``prediction.json``) atomically.

    Args:
        split: ``"all"`` subjects, or only the run fold's ``"val"`` or ``"train"`` subjects.
        subject_ids: predict only these subjects (of the split); None: all of it.

    Raises:
        InputError: missing run files, or split subjects absent from ``data_root``.
        ConfigError: bad threshold, split or device.
        OutputError: ``out`` holds results and ``overwrite`` is false.
    """
    run_dir, out = Path(run_dir), Path(out)
    check_output_dir(out, overwrite)
    profile = load_run_profile(run_dir)
    checkpoint_path = run_dir / "checkpoint_best.pt"
    if not checkpoint_path.is_file():
        raise InputError(f"{checkpoint_path} does not exist: train the run first (cmbstudy train)")
    threshold = profile.evaluation.threshold if threshold is None else float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: use a probability in (0, 1]")
    wanted = _split_ids(run_dir, split)
    subjects = load_subjects(Path(data_root))
    if wanted is not None:
        missing = sorted(wanted - {s.subject_id for s in subjects})
        if missing:
            raise InputError(f"{split} subjects {missing} of {run_dir} are not in {data_root}")
        subjects = [s for s in subjects if s.subject_id in wanted]
    if subject_ids is not None:
        missing = sorted(set(subject_ids) - {s.subject_id for s in subjects})
        if missing:
            raise InputError(f"subjects {missing[:5]} are not among the {split} subjects of {data_root}")
        subjects = [s for s in subjects if s.subject_id in set(subject_ids)]
    dev = resolve_device(device)
    model = model_from_config(profile.model)
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    cache = default_cache_dir(run_dir)
    rows = []
    with atomic_output_dir(out, overwrite) as tmp:
        for subject in tqdm(subjects, desc="predict", unit="subject", disable=not progress):
            # one subject at a time keeps memory flat; preprocessing is outside the timing
            volume = load_preprocessed([subject], profile.preprocess, cache, progress=False)[0]
            start = time.perf_counter()
            prob = predict_volume(model, volume, profile.train.val_batch_size, dev, profile.train.patch_size)
            model_done = time.perf_counter()
            prob_input = np.clip(volume.restore(prob, order=1), 0.0, 1.0).astype(np.float32)
            lesions = find_lesions(prob_input, threshold, profile.evaluation.connectivity)
            affine = np.asarray(volume.geometry.original_affine, dtype=float)
            table = lesion_table(lesions, affine)
            post_done = time.perf_counter()
            if lesions.n > np.iinfo(np.int16).max:
                raise InputError(f"subject {volume.subject_id}: {lesions.n} lesions exceed int16 labels")
            folder = tmp / f"sub-{volume.subject_id}"
            stem = folder / f"sub-{volume.subject_id}"
            save_nifti(prob_input, affine, f"{stem}_desc-cmb_probseg.nii.gz", np.float32)
            save_nifti(lesions.labels, affine, f"{stem}_desc-cmb_dseg.nii.gz", np.int16)
            table.to_csv(f"{stem}_lesions.tsv", sep="\t", index=False, float_format="%.4f")
            rows.append(
                {
                    "subject_id": volume.subject_id,
                    "cmb_count": lesions.n,
                    "seconds_model": model_done - start,
                    "seconds_post": post_done - model_done,
                    "seconds_total": post_done - start,
                }
            )
        frame = pd.DataFrame(rows, columns=["subject_id", "cmb_count", "seconds_model", "seconds_post", "seconds_total"])
        frame.to_csv(tmp / "predictions.tsv", sep="\t", index=False, float_format="%.4f")
        seconds = float(frame["seconds_total"].mean()) if rows else float("nan")
        info = {
            "run_dir": str(run_dir.resolve()),
            "model": profile.model.name,
            "profile": profile.name,
            "threshold": threshold,
            "connectivity": profile.evaluation.connectivity,
            "split": split,
            "checkpoint_epoch": int(state.get("epoch", -1)),
            "cmbstudy_version": __version__,
            "device": str(dev),
            "n_subjects": len(rows),
            "seconds_per_subject": seconds,
            "timing": "model + post-processing (restore, threshold, components); preprocessing excluded",
        }
        (tmp / "prediction.json").write_text(json.dumps(info, indent=2))
    return PredictionSummary(
        out=out, run_dir=run_dir, n_subjects=len(rows), n_lesions=int(frame["cmb_count"].sum()),
        threshold=threshold, seconds_per_subject=seconds, device=str(dev),
    )
