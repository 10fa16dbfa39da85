"""The preprocessing QC figure of notebook 02: each stage of a few subjects, before and after.

The stages come from :func:`cmbstudy.preprocessing.qc.compute_preprocessing_stages`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError

if TYPE_CHECKING:
    from ..preprocessing.qc import PreprocessingStages

__all__ = ["plot_preprocessing_qc"]


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    """(X, Y, Z) canonical -> the (Y, X) axial plane at ``z`` for ``imshow(origin="lower")``."""
    return volume[:, :, z].T


def _zscore(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (values.std() or 1.0)


def plot_preprocessing_qc(stages: Sequence["PreprocessingStages"]) -> Figure:
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

