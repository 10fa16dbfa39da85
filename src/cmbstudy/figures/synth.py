"""Figures of notebook 01: dipole field, blooming, example slices, cohort overview."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.datasets import SMALL_DIAMETER_MM, load_subjects
from ..data.io import load_image, load_mask

if TYPE_CHECKING:  # types only: figures import no compute module
    from ..synth.experiments import SphereFieldCheck

__all__ = ["MIMIC_COLOURS", "plot_sphere_field", "plot_blooming", "plot_example_slices", "plot_cohort"]

MIMIC_COLOURS: dict[int, tuple[str, str]] = {
    1: ("vein", "tab:blue"), 2: ("calcification", "tab:green"), 3: ("air-tissue artefact", "tab:orange"),
    4: ("deep-nuclei iron", "tab:purple"),
}


def plot_sphere_field(check: "SphereFieldCheck") -> Figure:
    """Central x-z plane of the FFT field and profiles along z (theta = 0) and x (theta = 90 deg)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    g = check.grid
    cx, cy, cz = (n // 2 for n in g.shape)
    lim = np.abs(check.analytic).max()
    axes[0].imshow(check.numeric[:, cy, :].T, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0].set_title("FFT field dB/B0 (x-z plane), B0 along z")
    for ax, axis, label in ((axes[1], 2, "along B0 (theta = 0)"), (axes[2], 0, "across B0 (theta = 90 deg)")):
        line = [cx, cy, cz]
        sl = tuple(slice(None) if a == axis else line[a] for a in range(3))
        pos = g.origin[axis] + g.spacing[axis] * np.arange(g.shape[axis])
        ax.plot(pos, check.numeric[sl], label="FFT dipole kernel")
        ax.plot(pos, check.analytic[sl], "--", label="(dchi/3)(a/r)^3(3cos^2-1)")
        ax.set_xlabel("mm")
        ax.set_ylabel("dB/B0 (ppm)")
        ax.set_title(label)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_blooming(rows: Sequence[dict]) -> Figure:
    """Apparent CMB volume against TE (per B0) and against slice thickness."""
    table = pd.DataFrame(list(rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for b0, part in table[table.experiment == "te_b0"].groupby("b0_tesla"):
        axes[0].plot(part.te_ms, part.volume_mm3, "o-", label=f"{b0:g} T")
    sl = table[table.experiment == "slice"]
    axes[1].plot(sl.slice_mm, sl.volume_mm3, "o-", color="tab:red", label="3 T, TE 20 ms")
    for ax, xlabel in ((axes[0], "TE (ms)"), (axes[1], "slice thickness (mm)")):
        ax.axhline(table.true_volume_mm3.iloc[0], color="k", ls=":", label="true volume")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("apparent volume (mm$^3$)")
        ax.legend(fontsize=8)
    axes[0].set_title("blooming vs TE and B0")
    axes[1].set_title("blooming vs slice thickness")
    fig.tight_layout()
    return fig


def plot_example_slices(root: str | Path, n_per_modality: int = 2) -> Figure:
    """Slices with the most CMBs of the first GRE and SWI subjects; CMBs in red, each mimic class outlined."""
    subjects = load_subjects(Path(root))
    chosen = [s for m in ("gre", "swi") for s in [x for x in subjects if x.modality == m][:n_per_modality]]
    fig, axes = plt.subplots(1, max(1, len(chosen)), figsize=(4 * max(1, len(chosen)), 4.4), squeeze=False)
    for ax, sub in zip(axes[0], chosen):
        img = np.asarray(load_image(sub.image_path).dataobj)
        cmb = np.asarray(load_mask(sub.mask_path).dataobj) if sub.mask_path else np.zeros(img.shape, np.uint8)
        mimic = np.asarray(load_image(sub.extra_paths["mimic"], allow_zero=True).dataobj).astype(int) \
            if "mimic" in sub.extra_paths else np.zeros(img.shape, int)
        z = int(np.argmax(cmb.sum(axis=(0, 1)))) if cmb.any() else img.shape[2] // 2
        ax.imshow(img[:, :, z].T, origin="lower", cmap="gray")
        for label, (_, colour) in MIMIC_COLOURS.items():
            if (mimic[:, :, z] == label).any():
                ax.contour((mimic[:, :, z] == label).T, [0.5], colors=colour, linewidths=0.6, origin="lower")
        if cmb[:, :, z].any():
            ax.contour(cmb[:, :, z].T, [0.5], colors="red", linewidths=1.0, origin="lower")
        ax.set_title(f"sub-{sub.subject_id} {sub.modality.upper()} {sub.site} z={z}", fontsize=9)
        ax.axis("off")
    handles = [plt.Line2D([], [], color="red", label="CMB")] + [
        plt.Line2D([], [], color=c, label=n) for n, c in MIMIC_COLOURS.values()]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_cohort(cats: pd.DataFrame, lesions: pd.DataFrame, participants: pd.DataFrame) -> Figure:
    """Subjects per ARIA-H category, CMB size histogram and subjects per site.

    Args:
        cats, lesions: :func:`cmbstudy.synth.cohort.cohort_tables` of the cohort.
        participants: its ``participants.tsv`` (:func:`cmbstudy.data.datasets.load_participants`).
    """
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    x = np.arange(len(cats))
    axes[0].bar(x - 0.2, cats.subjects, 0.4, label="this cohort")
    axes[0].bar(x + 0.2, cats.expected_here, 0.4, label="paper proportions")
    axes[0].set_xticks(x, cats.index)
    axes[0].set_title("subjects per ARIA-H category")
    axes[0].legend(fontsize=8)
    if len(lesions):
        axes[1].hist(lesions.diameter_mm, bins=np.arange(2, 10.5, 0.5), color="tab:red")
        axes[1].axvline(SMALL_DIAMETER_MM, color="k", ls=":", label=f"small (<= {SMALL_DIAMETER_MM:g} mm)")
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel("true CMB diameter (mm)")
    axes[1].set_title("CMB sizes")
    participants.groupby(["site", "modality"]).size().unstack(fill_value=0).plot.bar(ax=axes[2], rot=0)
    axes[2].set_title("subjects per site")
    fig.tight_layout()
    return fig
