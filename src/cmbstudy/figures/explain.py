"""Figures of the network's explanations: Grad-CAM maps side by side and CBAM attention (paper Figs. 5-6).

Each figure shows one axial slice, then the same slice under each map
(:func:`cmbstudy.explain.compute_gradcam`, :func:`cmbstudy.explain.compute_cbam_maps`)
on a shared 0-1 colour bar, reference lesions circled, optionally zoomed on a box.
Figures are :class:`matplotlib.figure.Figure` objects, so they draw under Agg.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ..arrays import as_2d
from ..errors import InputError
from .axes import set_view_limits, show_slice

__all__ = [
    "plot_gradcam_comparison",
    "plot_cbam_maps",
]


def _draw_centroids(ax: Axes, centroids: np.ndarray | None, radius: float) -> None:
    if centroids is None:
        return
    for row, col in np.asarray(centroids, dtype=float).reshape(-1, 2):
        circle = Circle((col, row), radius, fill=False, edgecolor="white", linestyle="--", linewidth=1, gid="lesion")
        ax.add_patch(circle)


def _map_panels(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    cmap: str,
    alpha: float,
    colorbar_label: str,
    lesion_centroids: np.ndarray | None,
    zoom_box: Sequence[float] | None,
    origin: str,
    image_title: str,
) -> Figure:
    img = as_2d(image, "image slice")
    if not maps:
        raise InputError("no map to plot: give at least one named (H, W) map")
    arrays = {name: as_2d(m, f"map {name!r}") for name, m in maps.items()}
    wrong = [name for name, m in arrays.items() if m.shape != img.shape]
    if wrong:
        raise InputError(f"map(s) {wrong} differ in shape from the image slice {img.shape}")
    h, w = img.shape
    box = (0.0, w - 1.0, 0.0, h - 1.0) if zoom_box is None else tuple(float(v) for v in zoom_box)
    aspect = (box[3] - box[2] + 1) / (box[1] - box[0] + 1)
    fig = Figure(figsize=(2.8 * (len(arrays) + 1) + 0.6, 2.8 * aspect + 0.4), layout="constrained")
    axes = fig.subplots(1, len(arrays) + 1, squeeze=False)[0]
    radius = max(3.0, 0.04 * max(box[1] - box[0], box[3] - box[2]))
    show_slice(axes[0], img, origin)
    axes[0].set_title(image_title, fontsize="small")
    _draw_centroids(axes[0], lesion_centroids, radius)
    set_view_limits(axes[0], box, origin)
    shown = None
    for ax, (name, arr) in zip(axes[1:], arrays.items()):
        show_slice(ax, img, origin)
        shown = ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, origin=origin, interpolation="bilinear")
        _draw_centroids(ax, lesion_centroids, radius)
        set_view_limits(ax, box, origin)
        ax.set_title(name, fontsize="small")
    fig.colorbar(shown, ax=list(axes), shrink=0.85, label=colorbar_label)
    return fig


def plot_gradcam_comparison(
    image: np.ndarray,
    cams: Mapping[str, np.ndarray],
    lesion_centroids: np.ndarray | None = None,
    zoom_box: Sequence[float] | None = None,
    origin: str = "upper",
    alpha: float = 0.5,
) -> Figure:
    """The same slice with each model's Grad-CAM over it, one colour bar (paper Figs. 5-6).

    Args:
        image: (H, W) slice in display orientation (e.g. the centre channel of the input).
        cams: label -> (H, W) map in [0, 1] (a (1, 1, H, W) output of
            :func:`cmbstudy.explain.compute_gradcam` is accepted), e.g. {"without CBAM": ..., "with CBAM": ...}.
        lesion_centroids: optional (n, 2) reference lesion centres (row, column), circled.
        zoom_box: (x0, x1, y0, y1) columns and rows to enlarge (Fig. 6); None shows the whole slice.
        origin: "upper" or "lower", as the slice should be shown.
        alpha: opacity of the maps.

    Returns:
        Figure with 1 + len(cams) image Axes and a colour-bar Axes (jet: low blue, high red).

    Raises:
        InputError: a map differs in shape from the image, no map, or a slice is not 2D.
    """
    return _map_panels(image, cams, "jet", alpha, "Grad-CAM activation", lesion_centroids, zoom_box, origin, "image")


def plot_cbam_maps(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    lesion_centroids: np.ndarray | None = None,
    zoom_box: Sequence[float] | None = None,
    origin: str = "upper",
    alpha: float = 0.6,
) -> Figure:
    """CBAM spatial attention of each skip (:func:`cmbstudy.explain.compute_cbam_maps`, one sample) over the slice.

    Args:
        image: (H, W) slice in display orientation.
        maps: skip name -> (H, W) attention in (0, 1) ((1, 1, H, W) accepted).
        lesion_centroids, zoom_box, origin, alpha: as in :func:`plot_gradcam_comparison`.

    Returns:
        Figure with 1 + len(maps) image Axes and a colour-bar Axes (viridis, 0 to 1).

    Raises:
        InputError: as :func:`plot_gradcam_comparison`.
    """
    return _map_panels(
        image, maps, "viridis", alpha, "CBAM spatial attention", lesion_centroids, zoom_box, origin, "image"
    )
