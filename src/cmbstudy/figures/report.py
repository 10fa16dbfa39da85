"""The one-page PNG report of ``cmbstudy detect``: what a reader checks first.

A header (CMB count, ARIA-H category, scan, model, threshold, the research-use
statement) above a montage of axial slices: the slices that hold a detection,
each detection circled and numbered as in the lesion table, or evenly spaced
slices through the brain when nothing was detected. Slices are shown in the
canonical RAS orientation (nibabel's closest canonical: flips and permutations
of the input grid, no resampling), patient's right on the right of each panel
(neurological convention), with the in-plane voxel aspect ratio kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from scipy import ndimage

from ..data.io import to_canonical, voxel_sizes

__all__ = ["MAX_PANELS", "select_report_slices", "plot_detection_report"]

MAX_PANELS = 12  # slices shown at most on one page


def select_report_slices(labels: np.ndarray, image: np.ndarray, max_panels: int = MAX_PANELS) -> list[int]:
    """Axial slice indices (canonical axis 2) to show.

    Args:
        labels: (X, Y, Z) canonical instance labels (0 background).
        image: (X, Y, Z) canonical image, used when there is no detection.
        max_panels: most slices returned.

    Returns:
        The centroid slice of every lesion (sorted, unique; evenly thinned to
        ``max_panels`` when more), else ``min(max_panels, 8)`` evenly spaced
        slices over the slices holding non-zero image voxels.
    """
    n = int(labels.max()) if labels.size else 0
    if n:
        centres = ndimage.center_of_mass(labels > 0, labels, np.arange(1, n + 1))
        slices = sorted({int(round(c[2])) for c in centres})
        if len(slices) > max_panels:
            slices = [slices[i] for i in np.linspace(0, len(slices) - 1, max_panels).round().astype(int)]
        return slices
    nonzero = np.flatnonzero(np.abs(image).sum(axis=(0, 1)) > 0)
    lo, hi = (int(nonzero[0]), int(nonzero[-1])) if nonzero.size else (0, image.shape[2] - 1)
    count = min(max_panels, 8, hi - lo + 1)
    return sorted({int(v) for v in np.linspace(lo, hi, count + 2)[1:-1].round()}) or [lo]


def plot_detection_report(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    header: Mapping[str, Any],
    path: str | Path,
    max_panels: int = MAX_PANELS,
) -> Path:
    """Write the report page as PNG.

    Args:
        image: (X, Y, Z) input scan on its own grid.
        labels: (X, Y, Z) int instance labels of the detections (same grid; 1..n = lesion ids).
        affine: 4x4 voxel-to-mm affine of that grid.
        header: ``count``, ``category``, ``scan``, ``model``, ``threshold``,
            ``intended_use`` (and optionally ``modality``).
        path: PNG file to write.
        max_panels: most slices shown.

    Returns:
        ``path``.
    """
    canon = to_canonical(nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine))
    lab = np.asarray(to_canonical(nib.Nifti1Image(np.asarray(labels, dtype=np.int32), affine)).dataobj)
    data = np.asarray(canon.dataobj, dtype=np.float32)
    vx, vy, _ = voxel_sizes(canon)
    slices = select_report_slices(lab, data, max_panels)
    n = int(lab.max()) if lab.size else 0
    centres = ndimage.center_of_mass(lab > 0, lab, np.arange(1, n + 1)) if n else []
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] if n else np.zeros(0)
    values = data[data != 0]
    lo, hi = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)

    cols = min(4, len(slices))
    rows = int(np.ceil(len(slices) / cols))
    fig = Figure(figsize=(3.2 * cols + 0.4, 3.2 * rows + 2.0), dpi=100)
    grid = fig.add_gridspec(rows, cols, top=1 - 1.45 / (3.2 * rows + 2.0), bottom=0.02, left=0.02, right=0.98,
                            wspace=0.05, hspace=0.12)
    for k, z in enumerate(slices):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.imshow(data[:, :, z].T, cmap="gray", origin="lower", vmin=lo, vmax=hi, aspect=vy / vx,
                  interpolation="nearest")
        for i, centre in enumerate(centres):
            if int(round(centre[2])) != z:
                continue
            radius = max(4.0, 2.0 * np.cbrt(sizes[i]))
            ax.add_patch(Circle((centre[0], centre[1]), radius, fill=False, color="yellow", linewidth=1.2))
            ax.text(centre[0] + radius, centre[1] + radius, str(i + 1), color="yellow", fontsize=9,
                    fontweight="bold")
        ax.set_title(f"axial slice {z}", fontsize=9)
        ax.text(0.01, 0.5, "L", transform=ax.transAxes, color="white", fontsize=8, va="center")
        ax.text(0.97, 0.5, "R", transform=ax.transAxes, color="white", fontsize=8, va="center")
        ax.set_axis_off()
    shown = sum(1 for c in centres if int(round(c[2])) in slices)
    lines = [
        f"Cerebral microbleeds: {header['count']}    ARIA-H category: {header['category']}",
        f"Scan: {header['scan']}" + (f"  ({str(header['modality']).upper()})" if "modality" in header else ""),
        f"Model: {header['model']}    threshold {float(header['threshold']):g}",
        (f"{shown} of {n} detections circled on their centroid slice" if n
         else "No detection: evenly spaced slices shown"),
    ]
    fig.text(0.02, 1 - 0.15 / (3.2 * rows + 2.0), "\n".join(lines), va="top", fontsize=11, family="sans-serif")
    fig.text(0.02, 1 - 1.0 / (3.2 * rows + 2.0), str(header["intended_use"]).upper(), va="top",
             fontsize=10, color="darkred", fontweight="bold")
    path = Path(path)
    fig.savefig(path, facecolor="white")  # a pyplot-free Figure: no backend is touched
    return path
