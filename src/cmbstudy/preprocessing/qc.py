"""Quality control of preprocessing: each stage of one subject, and the cache timing.

:func:`cmbstudy.preprocessing.preprocess_image` returns only the final volume; this
module recomputes the intermediate stages of a subject (input, brain mask, N4
corrected image and bias field) with the same public functions, so that notebook
02 can show what every step did (:func:`cmbstudy.figures.qc.plot_preprocessing_qc`),
and times the preprocessing of a whole dataset while it fills the shared cache.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from ..config import PreprocessConfig
from ..data.datasets import Subject
from ..data.io import load_image, load_mask, to_canonical, voxel_sizes
from ..errors import InputError
from .bias import n4_correct
from .brain import extract_brain
from .cache import fill_cache, load_preprocessed
from .geometry import PreprocessedVolume

__all__ = [
    "PreprocessingStages",
    "qc_config",
    "describe_config",
    "select_qc_subjects",
    "compute_preprocessing_stages",
    "fill_preprocessing_cache",
    "mean_seconds_per_subject",
    "describe_geometry",
]


@dataclass(frozen=True)
class PreprocessingStages:
    """One subject through preprocessing; 3D arrays are canonical RAS (X, Y, Z)."""

    subject_id: str  # BIDS label without "sub-"
    modality: str  # "gre" | "swi"
    raw: np.ndarray  # (X, Y, Z) float32 input magnitude
    brain: np.ndarray  # (X, Y, Z) bool brain mask
    corrected: np.ndarray  # (X, Y, Z) float32 after N4 (the input when N4 is off)
    bias_field: np.ndarray  # (X, Y, Z) float32 input / corrected inside the brain, 1 outside
    final: PreprocessedVolume  # (Z, S, S) cropped, resampled, z-scored volume (from the cache)
    voxel_mm: tuple[float, float, float]  # canonical voxel sizes (mm)


def compute_preprocessing_stages(subject: Subject, cfg: PreprocessConfig, cache_dir: Path) -> PreprocessingStages:
    """The intermediate stages of ``subject`` under ``cfg``; the final volume comes from ``cache_dir``.

    Raises:
        InputError: unreadable files, or a ``"mask"`` brain extraction without a brain mask.
    """
    image = load_image(subject.image_path)
    canonical = to_canonical(image)
    raw = np.asarray(canonical.dataobj, dtype=np.float32)
    spacing = tuple(float(v) for v in voxel_sizes(canonical))
    if cfg.brain_extraction == "mask":
        if subject.brain_mask_path is None:
            raise InputError(f"subject {subject.subject_id} has no brain mask: set preprocess.brain_extraction")
        brain = np.asarray(to_canonical(load_mask(subject.brain_mask_path, reference=image)).dataobj) > 0
    elif cfg.brain_extraction == "deepbet":
        final = load_preprocessed([subject], cfg, cache_dir, progress=False)[0]
        brain = final.restore(final.brain.astype(np.uint8), order=0) > 0  # input grid, as the cache used
        brain = np.asarray(to_canonical(nib.Nifti1Image(brain.astype(np.uint8), image.affine)).dataobj) > 0
    else:
        brain = extract_brain(raw, cfg.brain_extraction)
    corrected = n4_correct(raw, brain, spacing, cfg.n4_shrink, cfg.n4_iterations) if cfg.n4 else raw
    with np.errstate(divide="ignore", invalid="ignore"):
        field = np.where(brain & (corrected > 0), raw / corrected, 1.0).astype(np.float32)
    final = load_preprocessed([subject], cfg, cache_dir, progress=False)[0]
    return PreprocessingStages(subject.subject_id, subject.modality, raw, brain, corrected, field, final, spacing)


def fill_preprocessing_cache(subjects: Sequence[Subject], cfg: PreprocessConfig, cache_dir: Path,
                             workers: int = 1) -> pd.DataFrame:
    """Preprocess every subject into ``cache_dir`` (the cache training and inference read), over up to
    ``workers`` processes (:func:`~cmbstudy.preprocessing.cache.fill_cache`: the same cache for any number).

    Returns:
        One row per subject: subject_id, modality, seconds (wall time of its preprocessing, or of reading its
        entry), from_cache (True when the entry already existed and was only read).
    """
    done = fill_cache(subjects, cfg, cache_dir, workers, progress=False)
    rows = [{"subject_id": subject.subject_id, "modality": subject.modality, "seconds": seconds,
             "from_cache": from_cache} for subject, (seconds, from_cache) in zip(subjects, done)]
    return pd.DataFrame(rows, columns=["subject_id", "modality", "seconds", "from_cache"])


def qc_config(cfg: PreprocessConfig, n4_shrink: int = 0) -> PreprocessConfig:
    """``cfg`` with another N4 shrink factor; 0 (or less) keeps the profile's."""
    return cfg if n4_shrink <= 0 else dataclasses.replace(cfg, n4_shrink=n4_shrink)


def describe_config(cfg: PreprocessConfig) -> pd.DataFrame:
    """The preprocessing settings as a one-column table (field -> value)."""
    return pd.Series({key: str(value) for key, value in dataclasses.asdict(cfg).items()}, name="value").to_frame()


def select_qc_subjects(subjects: Sequence[Subject], modalities: Sequence[str] = ("gre", "swi")) -> list[Subject]:
    """The first subject of each modality in ``modalities`` that the dataset has, in that order."""
    return [next(s for s in subjects if s.modality == m) for m in modalities if any(s.modality == m for s in subjects)]


def mean_seconds_per_subject(timing: pd.DataFrame) -> float:
    """Mean seconds of the subjects preprocessed now (of every subject when all came from the cache)."""
    computed = timing[~timing["from_cache"]]
    return float((computed if len(computed) else timing)["seconds"].mean()) if len(timing) else math.nan


def describe_geometry(stages: Sequence[PreprocessingStages]) -> pd.DataFrame:
    """Input and output shapes and voxel sizes, and the crop side, of each subject shown (columns)."""
    return pd.DataFrame({
        f"sub-{s.subject_id} ({s.modality.upper()})": {
            "input shape (X, Y, Z)": s.final.geometry.canonical_shape,
            "input voxel (mm)": tuple(round(v, 2) for v in s.voxel_mm),
            "crop side (voxels)": s.final.geometry.box_size,
            "output shape (Z, S, S)": s.final.image.shape,
            "output voxel (mm)": tuple(round(v, 2) for v in s.final.geometry.output_voxel_mm),
        }
        for s in stages
    })
