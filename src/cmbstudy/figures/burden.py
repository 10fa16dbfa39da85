"""Figures of burden assessment: the ARIA-H confusion (Table 6), counts against counts (Fig. 4), Bland-Altman.

Every function draws on a given matplotlib Axes or builds its own
:class:`matplotlib.figure.Figure` (see :mod:`cmbstudy.figures.axes`); the
statistics they print are computed by the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..data.aria_h import ARIA_H_CATEGORIES
from ..errors import InputError
from ..formatting import format_value
from .axes import new_axes

if TYPE_CHECKING:  # types only: figures import no compute module
    from ..evaluation.stats import CountAgreement

__all__ = ["LIMITS_OF_AGREEMENT_SD", "plot_aria_h_confusion", "plot_count_scatter", "plot_count_difference"]

#: Bland-Altman limits of agreement: the bias plus and minus this many standard deviations of the
#: differences (the normal quantile holding 95 % of them).
LIMITS_OF_AGREEMENT_SD = 1.96


def _check_confusion(matrix: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(matrix)
    if arr.shape != (4, 4) or not np.all(np.isfinite(arr)) or (arr < 0).any() or not np.all(arr == np.round(arr)):
        raise InputError(f"{name} ARIA-H confusion must be a 4x4 matrix of non-negative counts, got {arr.tolist()}")
    return arr.astype(np.int64)


def plot_aria_h_confusion(
    confusion: np.ndarray,
    paper: np.ndarray | None = None,
    ours_label: str = "ours",
    paper_label: str = "paper",
) -> Figure:
    """Heatmap of the 4x4 ARIA-H confusion (rows reference, columns predicted; paper Table 6), the paper's beside it.

    Each title gives the agreement: subjects on the diagonal / all subjects.

    Args:
        confusion: (4, 4) subject counts, categories :data:`cmbstudy.data.aria_h.ARIA_H_CATEGORIES`.
        paper: optional (4, 4) matrix of the paper, drawn on a second Axes.
        ours_label, paper_label: the titles' dataset labels.

    Raises:
        InputError: a matrix is not 4x4 non-negative counts.
    """
    panels = [(ours_label, _check_confusion(confusion, "our"))]
    if paper is not None:
        panels.append((paper_label, _check_confusion(paper, "the paper's")))
    fig = Figure(figsize=(3.6 * len(panels), 3.4), layout="constrained")
    for ax, (label, matrix) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        frame = pd.DataFrame(matrix, index=list(ARIA_H_CATEGORIES), columns=list(ARIA_H_CATEGORIES))
        sns.heatmap(frame, annot=True, fmt="d", cmap="Blues", cbar=False, square=True, linewidths=0.5, ax=ax)
        total = int(matrix.sum())
        agree = int(np.trace(matrix))
        share = f" ({100 * agree / total:.0f}%)" if total else ""
        ax.set_title(f"{label}\n{agree}/{total} agree{share}", fontsize="small")
        ax.set_xlabel("predicted ARIA-H category")
        ax.set_ylabel("reference ARIA-H category")
    return fig


def plot_count_scatter(
    true_counts: Sequence[float],
    pred_counts: Sequence[float],
    agreement: "CountAgreement",
    ax: Axes | None = None,
    paper: Mapping[str, float] | None = None,
) -> Figure:
    """Predicted vs reference CMB count per subject with Spearman rho, Fisher-z CI and a regression band (paper Fig. 4).

    Args:
        true_counts, pred_counts: (n,) CMB counts per subject.
        agreement: their :func:`cmbstudy.evaluation.stats.compute_count_agreement` (rho, CI, p,
            and the regression of predicted on reference counts, None when undefined).
        ax: Axes to draw on; None makes a new Figure.
        paper: optional paper values with keys ``rho``, ``ci_low``, ``ci_high``, ``n``
            (0.93, 0.89, 0.96, 72), printed under ours.

    Returns:
        The Figure; the line has ``gid`` "fit", the band "band".
    """
    x, y = np.asarray(true_counts, dtype=float), np.asarray(pred_counts, dtype=float)
    rho, lo, hi, p, n = agreement.rho, agreement.ci_low, agreement.ci_high, agreement.p, agreement.n
    fit, confidence = agreement.fit, agreement.confidence
    fig, ax = new_axes(ax, (4.2, 4.0))
    top = max(float(x.max()), float(y.max()), 1.0)
    ax.plot([0, top], [0, top], linestyle=":", color="grey", linewidth=1, label="y = x")
    ax.scatter(x, y, s=22, alpha=0.6, color="tab:blue", edgecolor="none", label="subjects")
    if fit is not None:
        band = f"{confidence:.0%} band"
        ax.fill_between(fit.grid, fit.lo, fit.hi, color="tab:red", alpha=0.2, gid="band", label=band)
        ax.plot(fit.grid, fit.fit, color="tab:red", gid="fit", label=f"fit y = {fit.slope:.2f} x + {fit.intercept:.2f}")
    p_text = "p < 0.001" if np.isfinite(p) and p < 1e-3 else f"p = {format_value(p, 3)}"
    lines = [f"Spearman ρ = {format_value(rho, 2)} ({confidence:.0%} CI {format_value(lo, 2)}–{format_value(hi, 2)}), {p_text}, n = {n}"]
    if paper is not None:
        lines.append(
            f"paper: ρ = {format_value(paper['rho'], 2)} (CI {format_value(paper['ci_low'], 2)}–{format_value(paper['ci_high'], 2)}), "
            f"n = {int(paper['n'])}"
        )
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, va="top", fontsize="x-small", gid="stats")
    ax.set_xlabel("reference CMB count")
    ax.set_ylabel("predicted CMB count")
    ax.legend(loc="lower right", fontsize="x-small")
    return fig


def plot_count_difference(
    true_counts: Sequence[float], pred_counts: Sequence[float], ax: Axes | None = None
) -> Figure:
    """Bland-Altman plot of CMB counts: predicted - reference against their mean, per subject.

    Lines: the mean difference (bias, ``gid`` "bias") and the limits of agreement
    bias +/- :data:`LIMITS_OF_AGREEMENT_SD` sd (``gid`` "loa", sample sd; left out with fewer than 2 subjects).

    Args:
        true_counts, pred_counts: (n,) CMB counts per subject.
        ax: Axes to draw on; None makes a new Figure.

    Raises:
        InputError: lengths differ or no subject.
    """
    x, y = np.asarray(true_counts, dtype=float).ravel(), np.asarray(pred_counts, dtype=float).ravel()
    if x.shape != y.shape or x.size == 0:
        raise InputError(f"need as many predicted as reference counts (>= 1), got {y.size} and {x.size}")
    diff, mean = y - x, (x + y) / 2
    bias = float(diff.mean())
    fig, ax = new_axes(ax, (4.2, 3.4))
    ax.scatter(mean, diff, s=22, alpha=0.6, color="tab:blue", edgecolor="none")
    ax.axhline(bias, color="tab:red", gid="bias", label=f"bias {bias:+.2f}")
    if x.size > 1:
        half = LIMITS_OF_AGREEMENT_SD * float(diff.std(ddof=1))
        for value in (bias - half, bias + half):
            ax.axhline(value, color="tab:red", linestyle="--", linewidth=0.8, gid="loa")
        ax.lines[-1].set_label(f"limits of agreement ±{half:.2f}")
    ax.axhline(0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("mean of reference and predicted count")
    ax.set_ylabel("predicted − reference count")
    ax.legend(fontsize="x-small", loc="best")
    return fig
