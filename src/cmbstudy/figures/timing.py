"""Where the time of a build goes: each training run's seconds, stacked by what they were spent on."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import InputError
from .axes import new_axes

__all__ = ["plot_time_breakdown"]


def plot_time_breakdown(runs: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Horizontal stacked bars: minutes of each training run by part (every column but ``notebook``).

    Args:
        runs: :attr:`cmbstudy.study.tables.beyond.StudyTimings.runs` (index run, one column of
            seconds per part, and ``notebook``, their total).
        ax: Axes to draw on; None makes a new Figure.
        title: Axes title.

    Raises:
        InputError: no row, or no part column.
    """
    parts = [c for c in runs.columns if c != "notebook"]
    if runs.empty or not parts:
        raise InputError("plot_time_breakdown needs one row per run and at least one column of seconds")
    fig, ax = new_axes(ax, (6.0, 0.4 * len(runs) + 1.2))
    left = np.zeros(len(runs))
    labels = [str(v) for v in runs.index]
    for part in parts:
        minutes = runs[part].to_numpy(dtype=float) / 60
        ax.barh(labels, minutes, left=left, label=part, gid=part)
        left += minutes
    ax.invert_yaxis()
    ax.set_xlabel("minutes (this build's machine)")
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title, fontsize="small")
    return fig
