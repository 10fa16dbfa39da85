"""FROC curves: sensitivity against false positives per subject, several methods on one log axis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..errors import InputError
from .axes import new_axes

if TYPE_CHECKING:  # types only: figures import no compute module
    from ..evaluation.scores import FrocCurve

__all__ = ["plot_froc"]


def plot_froc(
    curves: Mapping[str, "FrocCurve"],
    ax: Axes | None = None,
    fp_rates: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0),
    title: str | None = None,
    marks: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """FROC curves of several methods on one Axes: sensitivity vs false positives per subject (log x).

    Points with 0 FP/subject are drawn near the left edge of the log axis (at half
    the smallest positive value shown). Dotted verticals mark ``fp_rates``; a dot on a
    curve marks the method's operating point (``marks``).

    Args:
        curves: method name -> :class:`cmbstudy.evaluation.scores.FrocCurve`; each line has ``gid`` = its name.
        ax: Axes to draw on; None makes a new Figure.
        fp_rates: FP/subject rates to mark.
        title: Axes title.
        marks: method name -> (FP/subject, sensitivity) of its operating point, drawn as a
            marker in the colour of its curve (``gid`` = "<name> operating point").

    Raises:
        InputError: no curve.
    """
    if not curves:
        raise InputError("plot_froc needs at least one FROC curve")
    positive = [c.fp_per_subject[c.fp_per_subject > 0] for c in curves.values()]
    smallest = min([float(v.min()) for v in positive if v.size] + [min(fp_rates, default=1.0)])
    floor = smallest / 2
    fig, ax = new_axes(ax, (4.8, 3.6))
    for name, curve in curves.items():
        (line,) = ax.step(np.maximum(curve.fp_per_subject, floor), curve.sensitivity, where="post", label=name,
                          gid=name)
        if marks and name in marks and np.all(np.isfinite(marks[name])):
            fp, sensitivity = marks[name]
            ax.plot([max(fp, floor)], [sensitivity], marker="o", markersize=6, color=line.get_color(),
                    markeredgecolor="black", linestyle="none", gid=f"{name} operating point")
    for rate in fp_rates:
        ax.axvline(rate, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlim(left=floor / 1.5)
    if len(fp_rates):
        ax.set_xticks(list(fp_rates), [f"{r:g}" for r in fp_rates])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per subject")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    return fig
