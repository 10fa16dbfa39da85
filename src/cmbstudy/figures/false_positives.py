"""The figure of what the false positives are: false positives per subject by kind (brain edge, mimic type)."""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import InputError
from .axes import new_axes

__all__ = ["plot_fp_breakdown"]


def plot_fp_breakdown(summary: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Horizontal bars: false positives per subject for each mimic type.

    Args:
        summary: :func:`cmbstudy.study.tables.errors.summarize_error_kinds` or ``summarize_fp_mimics``
            (index kind or mimic, column per_subject, share).
        ax: Axes to draw on; None makes a new Figure.
        title: Axes title.

    Raises:
        InputError: no ``per_subject`` column or no row.
    """
    if "per_subject" not in summary.columns or summary.empty:
        raise InputError("plot_fp_breakdown needs summarize_fp_mimics() rows with a per_subject column")
    fig, ax = new_axes(ax, (5.0, 0.45 * len(summary) + 1.0))
    labels = [str(v) for v in summary.index]
    ax.barh(labels, summary["per_subject"].to_numpy(dtype=float), color="goldenrod")
    ax.invert_yaxis()
    ax.set_xlabel("false positives per subject")
    if title:
        ax.set_title(title, fontsize="small")
    return fig
