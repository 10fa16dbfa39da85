"""The reports of ``cmbstudy detect``: a PNG page a reader checks first, and a complete PDF.

The PNG: a header (CMB count, ARIA-H category, scan, model, threshold, the
research-use statement) above a montage of axial slices: the slices that hold
a detection, each detection circled and numbered as in the lesion table, or
evenly spaced slices through the brain when nothing was detected (12 slices
at most). The PDF (:func:`plot_detection_pdf`, as SHiVAi gives one): that
summary page, then pages of 12 slices that together hold every detection,
each circled and numbered, then the lesion table (id, location, diameter,
probability, slice). Slices are shown in the
canonical RAS orientation (nibabel's closest canonical: flips and permutations
of the input grid, no resampling), patient's right on the right of each panel
(neurological convention), with the in-plane voxel aspect ratio kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from scipy import ndimage

from ..data.io import to_canonical, voxel_sizes

__all__ = ["MAX_PANELS", "select_report_slices", "plot_detection_report", "plot_detection_pdf", "write_detection_reports"]

MAX_PANELS = 12  # slices shown at most on one page
_TABLE_ROWS = 32  # lesion-table rows per PDF page


def select_report_slices(labels: np.ndarray, image: np.ndarray, max_panels: int = MAX_PANELS) -> list[int]:
    """Axial slice indices (canonical axis 2) to show.

    Args:
        labels: (X, Y, Z) canonical instance labels (0 background).
        image: (X, Y, Z) canonical image, used when there is no detection.
        max_panels: most slices returned (0: every slice that holds a detection).

    Returns:
        The centroid slice of every lesion (sorted, unique; evenly thinned to
        ``max_panels`` when more), else ``min(max_panels, 8)`` evenly spaced
        slices over the slices holding non-zero image voxels.
    """
    n = int(labels.max()) if labels.size else 0
    if n:
        centres = ndimage.center_of_mass(labels > 0, labels, np.arange(1, n + 1))
        slices = sorted({int(round(c[2])) for c in centres})
        if max_panels and len(slices) > max_panels:
            slices = [slices[i] for i in np.linspace(0, len(slices) - 1, max_panels).round().astype(int)]
        return slices
    nonzero = np.flatnonzero(np.abs(image).sum(axis=(0, 1)) > 0)
    lo, hi = (int(nonzero[0]), int(nonzero[-1])) if nonzero.size else (0, image.shape[2] - 1)
    count = min(max_panels, 8, hi - lo + 1)
    return sorted({int(v) for v in np.linspace(lo, hi, count + 2)[1:-1].round()}) or [lo]


class _Scan:
    """The scan and its detections in canonical orientation, as every page draws them."""

    def __init__(self, image: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> None:
        canon = to_canonical(nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine))
        self.labels = np.asarray(to_canonical(nib.Nifti1Image(np.asarray(labels, dtype=np.int32), affine)).dataobj)
        self.data = np.asarray(canon.dataobj, dtype=np.float32)
        vx, vy, _ = voxel_sizes(canon)
        self.aspect = vy / vx
        self.n = int(self.labels.max()) if self.labels.size else 0
        self.centres = ndimage.center_of_mass(self.labels > 0, self.labels, np.arange(1, self.n + 1)) if self.n else []
        self.sizes = np.bincount(self.labels.ravel(), minlength=self.n + 1)[1:] if self.n else np.zeros(0)
        values = self.data[self.data != 0]
        self.window = tuple(np.percentile(values, [1, 99])) if values.size else (0.0, 1.0)

    def draw(self, fig: Figure, grid: Any, slices: list[int], cols: int) -> None:
        for k, z in enumerate(slices):
            ax = fig.add_subplot(grid[k // cols, k % cols])
            ax.imshow(self.data[:, :, z].T, cmap="gray", origin="lower", vmin=self.window[0], vmax=self.window[1],
                      aspect=self.aspect, interpolation="nearest")
            for i, centre in enumerate(self.centres):
                if int(round(centre[2])) != z:
                    continue
                radius = max(4.0, 2.0 * np.cbrt(self.sizes[i]))
                ax.add_patch(Circle((centre[0], centre[1]), radius, fill=False, color="yellow", linewidth=1.2))
                ax.text(centre[0] + radius, centre[1] + radius, str(i + 1), color="yellow", fontsize=9,
                        fontweight="bold")
            ax.set_title(f"axial slice {z}", fontsize=9)
            ax.text(0.01, 0.5, "L", transform=ax.transAxes, color="white", fontsize=8, va="center")
            ax.text(0.97, 0.5, "R", transform=ax.transAxes, color="white", fontsize=8, va="center")
            ax.set_axis_off()


def _montage(scan: _Scan, header: Mapping[str, Any], slices: list[int], note: str) -> Figure:
    cols = min(4, len(slices))
    rows = int(np.ceil(len(slices) / cols))
    height = 3.2 * rows + 2.0
    fig = Figure(figsize=(3.2 * cols + 0.4, height), dpi=100)
    grid = fig.add_gridspec(rows, cols, top=1 - 1.45 / height, bottom=0.02, left=0.02, right=0.98,
                            wspace=0.05, hspace=0.12)
    scan.draw(fig, grid, slices, cols)
    lines = [
        f"Cerebral microbleeds: {header['count']}    ARIA-H category: {header['category']}",
        f"Scan: {header['scan']}" + (f"  ({str(header['modality']).upper()})" if "modality" in header else ""),
        f"Model: {header['model']}    "
        + (f"second-look score >= {float(header['threshold']):g}" if header.get("stages") == 2
           else f"threshold {float(header['threshold']):g}")
        + (f"    {str(header['method']).split(':')[0]}" if header.get("method") else ""),
        note,
    ]
    fig.text(0.02, 1 - 0.15 / height, "\n".join(lines), va="top", fontsize=11, family="sans-serif")
    fig.text(0.02, 1 - 1.0 / height, str(header["intended_use"]).upper(), va="top",
             fontsize=10, color="darkred", fontweight="bold")
    return fig


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
        header: ``count``, ``category``, ``scan``, ``model``, ``threshold`` (the rule's: the probability's for
            one stage, the second-look score's for ``stages`` 2), ``intended_use`` (and optionally ``modality``,
            ``stages`` and ``method``: one stage or two).
        path: PNG file to write.
        max_panels: most slices shown.

    Returns:
        ``path``.
    """
    scan = _Scan(image, labels, affine)
    slices = select_report_slices(scan.labels, scan.data, max_panels)
    shown = sum(1 for c in scan.centres if int(round(c[2])) in slices)
    note = (f"{shown} of {scan.n} detections circled on their centroid slice"
            + ("" if shown == scan.n else "; the PDF report shows every one") if scan.n
            else "No detection: evenly spaced slices shown")
    fig = _montage(scan, header, slices, note)
    path = Path(path)
    fig.savefig(path, facecolor="white")  # a pyplot-free Figure: no backend is touched
    return path


def _table_page(rows: pd.DataFrame, title: str) -> Figure:
    fig = Figure(figsize=(8.27, 11.69), dpi=100)  # A4 portrait
    ax = fig.add_axes((0.05, 0.04, 0.9, 0.88))
    ax.set_axis_off()
    fig.text(0.05, 0.96, title, fontsize=12, fontweight="bold", va="top")
    if len(rows):
        table = ax.table(cellText=rows.to_numpy().tolist(), colLabels=list(rows.columns), loc="upper center",
                         cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.scale(1.0, 1.3)
    else:
        ax.text(0.5, 0.9, "No detection.", ha="center", fontsize=11)
    return fig


def plot_detection_pdf(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    header: Mapping[str, Any],
    table: pd.DataFrame,
    path: str | Path,
) -> Path:
    """Write the multi-page PDF report: summary, every detection circled, the lesion table.

    Args:
        image, labels, affine, header: as :func:`plot_detection_report`.
        table: the lesion table of ``cmbstudy detect`` (``lesion_id``, ``z_vox``,
            ``equivalent_diameter_mm``, ``max_prob`` and, when known, ``location``).
        path: PDF file to write.

    Returns:
        ``path``.
    """
    scan = _Scan(image, labels, affine)
    every = select_report_slices(scan.labels, scan.data, max_panels=0)
    path = Path(path)
    with PdfPages(path, metadata={"Title": f"CMB detection: {header['scan']}", "Creator": "cmbstudy"}) as pdf:
        note = (f"{scan.n} detection(s) on {len(every)} slice(s), every one circled in this report" if scan.n
                else "No detection: evenly spaced slices shown")
        pdf.savefig(_montage(scan, header, every[:MAX_PANELS], note), facecolor="white")
        for start in range(MAX_PANELS, len(every), MAX_PANELS):  # without detection, every holds <= 8 slices
            chunk = every[start:start + MAX_PANELS]
            pdf.savefig(_montage(scan, header, chunk, f"slices {chunk[0]}-{chunk[-1]} (continued)"),
                        facecolor="white")
        columns = {"lesion_id": "id", "location": "location", "equivalent_diameter_mm": "diameter (mm)",
                   "max_prob": "probability", "z_vox": "slice"}
        rows = table[[c for c in columns if c in table.columns]].rename(columns=columns).copy()
        for name, digits in (("diameter (mm)", 1), ("probability", 2), ("slice", 0)):
            if name in rows:
                rows[name] = rows[name].map(lambda v, d=digits: f"{v:.{d}f}")
        pages = range(0, max(len(rows), 1), _TABLE_ROWS)
        for k, start in enumerate(pages):
            title = f"Lesion table ({len(rows)} detections)" + (f", page {k + 1} of {len(pages)}" if len(pages) > 1 else "")
            pdf.savefig(_table_page(rows.iloc[start:start + _TABLE_ROWS], title), facecolor="white")
    return path


def write_detection_reports(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    header: Mapping[str, Any],
    table: pd.DataFrame,
    stem: str | Path,
) -> dict[str, Path]:
    """The PNG page and the PDF report of one scan: ``{stem}_report.png`` and ``{stem}_report.pdf``.

    The signature of :data:`cmbstudy.inference.detect.ReportWriter`, which ``cmbstudy detect`` passes.
    """
    return {"report": plot_detection_report(image, labels, affine, header, Path(f"{stem}_report.png")),
            "report_pdf": plot_detection_pdf(image, labels, affine, header, table, Path(f"{stem}_report.pdf"))}
