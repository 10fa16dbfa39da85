"""Quality control of preprocessing: each stage of one subject, a before/after figure, cache timing.

:func:`cmbstudy.preprocess.preprocess_image` returns only the final volume; this
module recomputes the intermediate stages of a subject (input, brain mask, N4
corrected image and bias field) with the same public functions, so that notebook
02 can show what every step did, and times the preprocessing of a whole dataset
while it fills the shared cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .config import PreprocessConfig
from .datasets import Subject
from .errors import InputError
from .io import load_image, load_mask, to_canonical, voxel_sizes
from .preprocess import PreprocessedVolume, extract_brain, load_preprocessed, n4_correct

__all__ = ["PreprocessingStages", "compute_preprocessing_stages", "fill_preprocessing_cache", "plot_preprocessing_qc"]


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


def fill_preprocessing_cache(subjects: Sequence[Subject], cfg: PreprocessConfig, cache_dir: Path) -> pd.DataFrame:
    """Preprocess every subject into ``cache_dir`` (the cache training and inference read).

    Returns:
        One row per subject: subject_id, modality, seconds (wall time of this call),
        from_cache (True when the entry already existed and was only read).
    """
    rows = []
    for subject in subjects:
        before = set(Path(cache_dir).glob(f"sub-{subject.subject_id}_*.npz")) if Path(cache_dir).is_dir() else set()
        start = time.perf_counter()
        load_preprocessed([subject], cfg, cache_dir, progress=False)
        seconds = time.perf_counter() - start
        after = set(Path(cache_dir).glob(f"sub-{subject.subject_id}_*.npz"))
        rows.append({"subject_id": subject.subject_id, "modality": subject.modality, "seconds": seconds,
                     "from_cache": bool(after) and after <= before})
    return pd.DataFrame(rows, columns=["subject_id", "modality", "seconds", "from_cache"])


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    """(X, Y, Z) canonical -> the (Y, X) axial plane at ``z`` for ``imshow(origin="lower")``."""
    return volume[:, :, z].T


def _zscore(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (values.std() or 1.0)


def plot_preprocessing_qc(stages: Sequence[PreprocessingStages]) -> Figure:
    """One row per subject: input, N4 bias field, corrected image with brain outline, final slice, histograms.

    The axial slice shown is the one with the most brain voxels. The histogram
    compares brain intensities before (input, z-scored for display) and after
    preprocessing (N4, crop, resample, z-score).

    Raises:
        InputError: no subject given.
    """
    if not stages:
        raise InputError("plot_preprocessing_qc needs at least one subject's stages")
    fig = Figure(figsize=(13.0, 2.8 * len(stages)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(stages), 5))
    for row, stage in zip(axes, stages):
        z = int(np.argmax(stage.brain.sum(axis=(0, 1))))
        label = f"sub-{stage.subject_id} ({stage.modality.upper()})"
        inside = stage.raw[stage.brain]
        vmax = float(np.percentile(inside, 99.5)) if inside.size else None
        row[0].imshow(_axial(stage.raw, z), cmap="gray", origin="lower", vmin=0, vmax=vmax)
        row[0].set_title(f"{label}\ninput, slice {z}", fontsize="small")
        field = np.where(stage.brain, stage.bias_field, np.nan)
        shown = row[1].imshow(_axial(field, z), cmap="coolwarm", origin="lower")
        fig.colorbar(shown, ax=row[1], shrink=0.8)
        row[1].set_title("N4 bias field (input / corrected)", fontsize="small")
        row[2].imshow(_axial(stage.corrected, z), cmap="gray", origin="lower", vmin=0, vmax=vmax)
        row[2].contour(_axial(stage.brain.astype(float), z), levels=[0.5], colors="tab:cyan", linewidths=0.8)
        row[2].set_title("N4 corrected, brain mask", fontsize="small")
        final = stage.final.image[z].T  # (Z, X, Y) -> (Y, X)
        row[3].imshow(final, cmap="gray", origin="lower", vmin=-3, vmax=3)
        row[3].set_title(f"final {final.shape[1]}x{final.shape[0]}, z-scored", fontsize="small")
        for ax in row[:4]:
            ax.set_xticks([])
            ax.set_yticks([])
        bins = np.linspace(-5, 5, 81)
        row[4].hist(_zscore(inside), bins=bins, histtype="step", label="input (z-scored)")
        row[4].hist(stage.final.image[stage.final.brain], bins=bins, histtype="step", label="preprocessed")
        row[4].set(xlabel="intensity (brain SD units)", ylabel="voxels")
        row[4].legend(fontsize="x-small")
    return fig

