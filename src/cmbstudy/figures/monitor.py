"""The report of ``cmbstudy monitor``: each new CMB on the baseline and the registered follow-up, side by side.

Page 1: the new count and the ARIA-H severity, the registration's quality and
the rule. Then one row per new CMB (six per page): the baseline's axial slice
and the follow-up's, registered onto the baseline, cropped around the CMB and
circled, with the darkness each scan shows there. Slices are shown as stored
(voxel axes), with the in-plane voxel aspect ratio kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.patches import Circle

__all__ = ["ROWS_PER_PAGE", "plot_pair_crops", "plot_severity_matrix", "plot_threshold_choice",
           "write_monitoring_report"]

ROWS_PER_PAGE = 6
_HALF_MM = 24.0  # half the side of each crop


def _crop(image: np.ndarray, centre: np.ndarray, half: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    z = int(np.clip(round(float(centre[2])), 0, image.shape[2] - 1))
    x0 = max(0, int(round(centre[0])) - half[0])
    y0 = max(0, int(round(centre[1])) - half[1])
    return image[x0:x0 + 2 * half[0] + 1, y0:y0 + 2 * half[1] + 1, z], (x0, y0)


def plot_pair_crops(baseline: np.ndarray, followup: np.ndarray, rows: list[Mapping[str, Any]],
                    voxel_mm: np.ndarray, title: str) -> Figure:
    """One figure row per lesion of ``rows`` (``x/y/z_vox`` in the baseline's space): baseline | follow-up."""
    fig = Figure(figsize=(7.5, 1.9 * max(1, len(rows)) + 0.6))
    axes = fig.subplots(max(1, len(rows)), 2, squeeze=False)
    half = (int(round(_HALF_MM / voxel_mm[0])), int(round(_HALF_MM / voxel_mm[1])))
    ranges = [tuple(np.percentile(image[image != 0], [1, 99])) if np.any(image != 0) else (0.0, 1.0)
              for image in (baseline, followup)]  # one grey scale per scan, for every row
    for (left, right), row in zip(axes, rows):
        centre = np.array([row["x_vox"], row["y_vox"], row["z_vox"]], dtype=float)
        for ax, image, (lo, hi), name, dark in (
                (left, baseline, ranges[0], "baseline", row["darkness_baseline"]),
                (right, followup, ranges[1], "follow-up (registered)", row["darkness_followup"])):
            crop, (x0, y0) = _crop(image, centre, half)
            ax.imshow(crop.T, cmap="gray", origin="lower", vmin=lo, vmax=hi,
                      aspect=voxel_mm[1] / voxel_mm[0], interpolation="nearest")
            ax.add_patch(Circle((centre[0] - x0, centre[1] - y0), radius=4.0 / voxel_mm[0], fill=False,
                                color="#d62728", linewidth=1.2))
            ax.set_title(f"#{row['lesion_id']} {name}, slice {int(round(centre[2]))}: darkness {dark:.2f}",
                         fontsize=7)
            ax.set_axis_off()
    for left, right in axes[len(rows):]:
        left.set_axis_off()
        right.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _summary_page(summary: Mapping[str, Any]) -> Figure:
    fig = Figure(figsize=(7.5, 4.0))
    reg = summary["registration"]
    lines = [
        f"New CMBs: {summary['new_count']}    ARIA-H severity: {summary['aria_h_severity']}",
        f"persistent {summary['persistent_count']}, not seen on the follow-up {summary['not_seen_count']}; "
        f"the naive rule would call {summary['new_count_naive']} new",
        f"baseline {summary['baseline']} ({summary['baseline_cmb_count']} CMBs found); "
        f"follow-up {summary['followup']} ({summary['followup_cmb_count']})",
        f"registration: {reg['method']}; brains overlap (Dice) {reg['brain_dice']:.3f} (refused below "
        f"{reg['min_brain_dice']:g}); rotation {reg['rotation_deg']:.1f} deg, translation {reg['translation_mm']:.1f} mm",
        f"pairing: {summary['pairing']['rule']}",
        f"severity: {summary['severity_rule']}",
        f"detector: {summary['method']}",
        summary["intended_use"],
    ]
    fig.text(0.03, 0.95, f"ARIA-H monitoring: sub-{summary['subject_id']}", fontsize=12, weight="bold", va="top")
    for i, line in enumerate(lines):
        fig.text(0.03, 0.85 - i * 0.1, line, fontsize=7, va="top", wrap=True)
    return fig


def write_monitoring_report(result, path: Path, summary: Mapping[str, Any]) -> Path:
    """Write the PDF of one monitored pair (:class:`cmbstudy.inference.monitor.PairResult`) to ``path``."""
    baseline = np.asarray(result.baseline.image.dataobj, dtype=np.float32)
    voxel_mm = np.linalg.norm(np.asarray(result.baseline.image.affine)[:3, :3], axis=0)
    table = result.lesions
    new = [dict(r) for _, r in table[table["status"] == "new"].iterrows()] if len(table) else []
    with PdfPages(path) as pdf:
        pdf.savefig(_summary_page(summary))
        for start in range(0, len(new), ROWS_PER_PAGE):
            pdf.savefig(plot_pair_crops(baseline, result.followup_in_baseline, new[start:start + ROWS_PER_PAGE],
                                        voxel_mm, f"new CMBs {start + 1}-{min(len(new), start + ROWS_PER_PAGE)} "
                                                  f"of {len(new)}"))
    return Path(path)


def plot_severity_matrix(matrix) -> Figure:
    """The severity of each pair, reference (rows) against ours (columns), as an annotated heat map (seaborn)."""
    import seaborn as sns

    fig = Figure(figsize=(4.2, 3.4))
    ax = fig.subplots()
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, linewidths=0.5, linecolor="white")
    ax.set_xlabel("ours (new CMBs found)")
    ax.set_ylabel("reference")
    ax.set_title("ARIA-H severity per pair", fontsize=10)
    fig.tight_layout()
    return fig


def plot_threshold_choice(development, chosen: float, single_scan: float | None) -> Figure:
    """New-CMB precision, recall and F1 on the development pairs against the second look's threshold (the rows
    of :func:`cmbstudy.evaluation.monitoring.choose_threshold`), with monitoring's choice and the single-scan one."""
    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.subplots()
    for column, style in (("precision", ":"), ("recall", "--"), ("f1", "-")):
        ax.plot(development.index, development[column], style, label="F1" if column == "f1" else column)
    ax.axvline(chosen, color="black", linewidth=1, label=f"chosen for monitoring ({chosen:g})")
    if single_scan is not None:
        ax.axvline(single_scan, color="grey", linewidth=1, linestyle="-.",
                   label=f"chosen for one scan ({single_scan:g})")
    ax.set_xlabel("second look's threshold")
    ax.set_ylabel("new CMBs")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("development pairs", fontsize=10)
    fig.tight_layout()
    return fig
