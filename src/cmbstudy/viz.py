"""Figures of the study: ARIA-H confusion, count scatter, FROC, training curves, comparison tables.

Every function draws on a given matplotlib Axes or builds its own
:class:`matplotlib.figure.Figure` (never through pyplot's global state, never
``show``), so the module runs under the Agg backend and a notebook displays the
returned Figure once. Detection overlays (TP blue, FP yellow, FN red) are in
:mod:`cmbstudy.overlays`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .errors import ConfigError, InputError
from .metrics import ARIA_H_CATEGORIES, FrocCurve
from .overlays import new_axes
from .paper import PAPER_DATASET_LABEL
from .stats import LinearFit, linear_fit_with_band, spearman_with_ci

__all__ = [
    "PAPER_DATASET_LABEL",
    "plot_aria_h_confusion",
    "plot_count_scatter",
    "plot_count_difference",
    "plot_fp_breakdown",
    "plot_froc",
    "plot_training_history",
    "format_comparison_table",
]

_HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "val_precision", "val_recall", "val_f1", "val_fp_per_subject")


def _check_confusion(matrix: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(matrix)
    if arr.shape != (4, 4) or not np.all(np.isfinite(arr)) or (arr < 0).any() or not np.all(arr == np.round(arr)):
        raise InputError(f"{name} ARIA-H confusion must be a 4x4 matrix of non-negative counts, got {arr.tolist()}")
    return arr.astype(np.int64)


def plot_aria_h_confusion(
    confusion: np.ndarray,
    paper: np.ndarray | None = None,
    ours_label: str = "ours",
    paper_label: str = PAPER_DATASET_LABEL,
) -> Figure:
    """Heatmap of the 4x4 ARIA-H confusion (rows reference, columns predicted; paper Table 6), the paper's beside it.

    Each title gives the agreement: subjects on the diagonal / all subjects.

    Args:
        confusion: (4, 4) subject counts, categories :data:`cmbstudy.metrics.ARIA_H_CATEGORIES`.
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


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def plot_count_scatter(
    true_counts: Sequence[float],
    pred_counts: Sequence[float],
    fit: LinearFit | None = None,
    ax: Axes | None = None,
    paper: Mapping[str, float] | None = None,
    confidence: float = 0.95,
) -> Figure:
    """Predicted vs reference CMB count per subject with Spearman rho, Fisher-z CI and a regression band (paper Fig. 4).

    Args:
        true_counts, pred_counts: (n,) CMB counts per subject.
        fit: regression of predicted on reference counts
            (:func:`cmbstudy.stats.linear_fit_with_band`); None computes it, and leaves
            the line out when it is undefined (fewer than 3 subjects, constant counts).
        ax: Axes to draw on; None makes a new Figure.
        paper: optional paper values with keys ``rho``, ``ci_low``, ``ci_high``, ``n``
            (0.93, 0.89, 0.96, 72), printed under ours.
        confidence: coverage of the CI and of the band.

    Returns:
        The Figure; the line has ``gid`` "fit", the band "band".

    Raises:
        ValueError: from :func:`cmbstudy.stats.spearman_with_ci` (lengths differ, fewer than 2 subjects).
    """
    rho, lo, hi, p, n = spearman_with_ci(true_counts, pred_counts, confidence)
    x, y = np.asarray(true_counts, dtype=float), np.asarray(pred_counts, dtype=float)
    if fit is None:
        try:
            fit = linear_fit_with_band(x, y, confidence=confidence)
        except ValueError:
            fit = None
    fig, ax = new_axes(ax, (4.2, 4.0))
    top = max(float(x.max()), float(y.max()), 1.0)
    ax.plot([0, top], [0, top], linestyle=":", color="grey", linewidth=1, label="y = x")
    ax.scatter(x, y, s=22, alpha=0.6, color="tab:blue", edgecolor="none", label="subjects")
    if fit is not None:
        band = f"{confidence:.0%} band"
        ax.fill_between(fit.grid, fit.lo, fit.hi, color="tab:red", alpha=0.2, gid="band", label=band)
        ax.plot(fit.grid, fit.fit, color="tab:red", gid="fit", label=f"fit y = {fit.slope:.2f} x + {fit.intercept:.2f}")
    p_text = "p < 0.001" if np.isfinite(p) and p < 1e-3 else f"p = {_fmt(p, 3)}"
    lines = [f"Spearman ρ = {_fmt(rho)} ({confidence:.0%} CI {_fmt(lo)}–{_fmt(hi)}), {p_text}, n = {n}"]
    if paper is not None:
        lines.append(
            f"paper: ρ = {_fmt(paper['rho'])} (CI {_fmt(paper['ci_low'])}–{_fmt(paper['ci_high'])}), "
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
    bias +/- 1.96 sd (``gid`` "loa", sample sd; left out with fewer than 2 subjects).

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
        half = 1.96 * float(diff.std(ddof=1))
        for value in (bias - half, bias + half):
            ax.axhline(value, color="tab:red", linestyle="--", linewidth=0.8, gid="loa")
        ax.lines[-1].set_label(f"limits of agreement ±{half:.2f}")
    ax.axhline(0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("mean of reference and predicted count")
    ax.set_ylabel("predicted − reference count")
    ax.legend(fontsize="x-small", loc="best")
    return fig


def plot_fp_breakdown(summary: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Horizontal bars: false positives per subject for each mimic type.

    Args:
        summary: :func:`cmbstudy.breakdown.summarize_fp_mimics` (index mimic, column per_subject, share).
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


def plot_froc(
    curves: Mapping[str, FrocCurve],
    ax: Axes | None = None,
    fp_rates: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0),
    title: str | None = None,
) -> Figure:
    """FROC curves of several methods on one Axes: sensitivity vs false positives per subject (log x).

    Points with 0 FP/subject are drawn near the left edge of the log axis (at half
    the smallest positive value shown). Dotted verticals mark ``fp_rates``.

    Args:
        curves: method name -> :class:`cmbstudy.metrics.FrocCurve`; each line has ``gid`` = its name.
        ax: Axes to draw on; None makes a new Figure.
        fp_rates: FP/subject rates to mark.
        title: Axes title.

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
        ax.step(np.maximum(curve.fp_per_subject, floor), curve.sensitivity, where="post", label=name, gid=name)
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


def plot_training_history(history: pd.DataFrame, title: str | None = None) -> Figure:
    """Loss, learning rate, validation P/R/F1 and validation FP/subject per epoch (``RUN/history.csv``).

    Four Axes (2 x 2). Validation columns are empty on epochs without validation;
    those epochs are skipped. The best validation F1 (the selected checkpoint) is starred.

    Args:
        history: columns epoch, lr, train_loss, val_precision, val_recall, val_f1,
            val_fp_per_subject (val_loss drawn when present), as written by :mod:`cmbstudy.training`.
        title: figure title.

    Raises:
        InputError: a column is missing or the history is empty.
    """
    missing = [c for c in _HISTORY_COLUMNS if c not in history.columns]
    if missing or history.empty:
        raise InputError(f"training history lacks column(s) {missing} or rows: read a history.csv written by training")
    fig = Figure(figsize=(8.0, 5.6), layout="constrained")
    (ax_loss, ax_lr), (ax_f1, ax_fp) = fig.subplots(2, 2)
    epoch = history["epoch"].to_numpy()
    ax_loss.plot(epoch, history["train_loss"], label="train")
    if "val_loss" in history.columns and history["val_loss"].notna().any():
        val = history.dropna(subset=["val_loss"])
        ax_loss.plot(val["epoch"], val["val_loss"], marker=".", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss (Dice + focal)")
    ax_loss.legend(fontsize="small")
    ax_lr.plot(epoch, history["lr"], color="tab:green")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", yscale="log")
    val = history.dropna(subset=["val_f1"])
    for column in ("val_precision", "val_recall", "val_f1"):
        ax_f1.plot(val["epoch"], val[column], marker=".", label=column.removeprefix("val_"))
    if not val.empty:
        best = val.loc[val["val_f1"].idxmax()]
        ax_f1.plot(
            [best["epoch"]], [best["val_f1"]], marker="*", markersize=12, color="k", linestyle="none", label="best F1"
        )
    ax_f1.set(xlabel="epoch", ylabel="validation (lesion-wise)", ylim=(0, 1.02))
    ax_f1.legend(fontsize="small")
    ax_fp.plot(val["epoch"], val["val_fp_per_subject"], marker=".", color="tab:orange")
    ax_fp.set(xlabel="epoch", ylabel="validation FP per subject")
    if title:
        fig.suptitle(title)
    return fig


def format_comparison_table(
    ours: Mapping[str, float],
    paper: Mapping[str, float],
    dataset_label: str,
    paper_label: str = PAPER_DATASET_LABEL,
) -> pd.DataFrame:
    """The paper's figures beside ours, one row per metric, each column labelled by its dataset.

    Columns: ``paper_label`` (default "paper (VALDO + private cohorts)"),
    ``"ours (<dataset_label>)"`` (e.g. "ours (synthetic cohort)") and
    ``"ours - paper"``. Rows: the paper's metrics in its order, then any metric only
    we report; a metric one side lacks is NaN.

    Raises:
        ConfigError: ``dataset_label`` is empty.
    """
    if not str(dataset_label).strip():
        raise ConfigError("dataset_label must name the data our numbers come from, e.g. 'synthetic cohort'")
    metrics = list(paper) + [k for k in ours if k not in paper]
    ours_col = f"ours ({dataset_label})"
    frame = pd.DataFrame(
        {
            paper_label: [float(paper.get(m, np.nan)) for m in metrics],
            ours_col: [float(ours.get(m, np.nan)) for m in metrics],
        },
        index=pd.Index(metrics, name="metric"),
    )
    frame["ours - paper"] = frame[ours_col] - frame[paper_label]
    return frame
