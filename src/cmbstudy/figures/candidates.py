"""The two looks on one slice: every candidate of the first look, and what the second look kept and dropped.

The slice is an axial slice of the scan on its input grid, (X, Y) transposed and
drawn with ``origin="lower"`` as the detection overlays are
(:mod:`cmbstudy.figures.overlays`): columns X, rows Y. Points are (x, y) voxel
coordinates of that slice.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..arrays import as_2d
from ..errors import InputError
from .axes import new_axes, show_slice
from .overlays import DETECTION_COLORS

__all__ = ["CANDIDATE_STYLES", "plot_candidates"]

#: Marker, colour and label of each kind of point: kept candidates take the overlays' TP/FP colours.
CANDIDATE_STYLES: dict[str, tuple[str, str, str]] = {
    "screened out": (".", "silver", "dropped by the screen"),
    "dropped": ("x", "silver", "dropped by the second look"),
    "kept, CMB": ("o", DETECTION_COLORS["TP"], "kept: a reference CMB"),
    "kept, not a CMB": ("o", DETECTION_COLORS["FP"], "kept: no reference CMB"),
    "reference": ("s", DETECTION_COLORS["FN"], "reference CMB"),
}


def _points(points: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if not array.size:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] != 2:
        raise InputError(f"{name} must be (n, 2) (x, y) points, got shape {np.shape(points)}")
    return array


def plot_candidates(image_slice: np.ndarray, points: dict[str, np.ndarray], ax: Axes | None = None,
                    title: str | None = None) -> Figure:
    """One axial slice with the first look's candidates and the second look's verdict on each.

    Args:
        image_slice: (X, Y) slice of the scan (drawn transposed, anterior at the top).
        points: kind (a key of :data:`CANDIDATE_STYLES`) -> (n, 2) (x, y) points on the slice.
        ax: Axes to draw on; None makes a new Figure.
        title: Axes title.

    Raises:
        InputError: the slice is not 2D, a kind is unknown or its points are not (n, 2).
    """
    image = as_2d(image_slice, "image slice")
    unknown = sorted(set(points) - set(CANDIDATE_STYLES))
    if unknown:
        raise InputError(f"unknown kinds of point {unknown}: use {sorted(CANDIDATE_STYLES)}")
    fig, ax = new_axes(ax, (5.0, 5.0))
    show_slice(ax, image.T, origin="lower")
    handles = []
    for kind, (marker, colour, label) in CANDIDATE_STYLES.items():
        xy = _points(points.get(kind, np.zeros((0, 2))), kind)
        filled = marker == "x"  # a cross has no face: its colour is its lines'
        style = {"c": colour} if filled else {"facecolors": "none", "edgecolors": colour}
        ax.scatter(xy[:, 0], xy[:, 1], s=70 if kind == "reference" else 40, marker=marker, linewidths=1.2, gid=kind,
                   **style)
        handles.append(Line2D([], [], marker=marker, linestyle="", color=colour, markerfacecolor="none"
                              if not filled else colour, label=f"{label} ({len(xy)})"))
    ax.legend(handles=handles, loc="lower left", fontsize="x-small", framealpha=0.8)
    if title:
        ax.set_title(title, fontsize="small")
    return fig
