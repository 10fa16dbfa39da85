"""Axes helpers every figure of the study shares: a new Figure or a given Axes, grey slices, view limits.

Every figure function draws on a given matplotlib Axes or builds its own
:class:`matplotlib.figure.Figure` (never through pyplot's global state, never
``show``), so figures draw under the Agg backend and a notebook displays the
returned Figure once.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..arrays import as_2d
from ..errors import ConfigError

__all__ = ["new_axes", "set_view_limits", "show_slice"]


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its Figure, or a new constrained-layout Figure of ``figsize`` inches with one Axes."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def set_view_limits(ax: Axes, box: tuple[float, float, float, float], origin: str) -> None:
    """Show columns x0..x1 and rows y0..y1 (pixel centres) with the image's origin."""
    x0, x1, y0, y1 = box
    ax.set_xlim(x0 - 0.5, x1 + 0.5)
    ax.set_ylim((y0 - 0.5, y1 + 0.5) if origin == "lower" else (y1 + 0.5, y0 - 0.5))


def show_slice(
    ax: Axes, image_slice: np.ndarray, origin: str = "upper", percentiles: tuple[float, float] = (1.0, 99.5)
) -> None:
    """Draw an (H, W) slice in grey with a robust display range (percentiles of its non-zero pixels).

    Raises:
        InputError: the slice is not 2D.
        ConfigError: ``origin`` is not "upper" or "lower".
    """
    if origin not in ("upper", "lower"):
        raise ConfigError(f"origin {origin!r} must be 'upper' or 'lower'")
    img = as_2d(image_slice, "image slice").astype(float)
    values = img[np.isfinite(img) & (img != 0)]
    lo, hi = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin=origin, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
