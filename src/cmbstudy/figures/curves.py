"""Curves and bars of training runs: one run's history, every fold's, the CBAM ablation (Table 8), and
what a training budget buys (the learning curve of ``benchmarks/learning_curve.py``)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..errors import InputError
from ..formatting import as_float
from .axes import new_axes

__all__ = ["plot_training_history", "plot_fold_histories", "plot_cbam_ablation", "plot_learning_curve"]

_HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "val_precision", "val_recall", "val_f1", "val_fp_per_subject")


def plot_training_history(history: pd.DataFrame, title: str | None = None) -> Figure:
    """Loss, learning rate, validation P/R/F1 and validation FP/subject per epoch (``RUN/history.csv``).

    Four Axes (2 x 2). Validation columns are empty on epochs without validation;
    those epochs are skipped. The best validation F1 (the selected checkpoint) is starred.

    Args:
        history: columns epoch, lr, train_loss, val_precision, val_recall, val_f1,
            val_fp_per_subject (val_loss drawn when present), as written by :mod:`cmbstudy.training.loop`.
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


def plot_fold_histories(histories: Mapping[int, pd.DataFrame], title: str | None = None) -> Figure:
    """Training loss and validation F1 per epoch of every fold on one figure (two Axes).

    Args:
        histories: fold -> ``RUN/history.csv`` as a DataFrame (epoch, train_loss, val_f1).

    Raises:
        InputError: no fold given, or a history without epoch / train_loss / val_f1.
    """
    if not histories:
        raise InputError("plot_fold_histories needs the history of at least one fold")
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    ax_loss, ax_f1 = fig.subplots(1, 2)
    for fold, history in sorted(histories.items()):
        missing = {"epoch", "train_loss", "val_f1"} - set(history.columns)
        if missing:
            raise InputError(f"history of fold {fold} lacks {sorted(missing)}: read RUN/history.csv")
        line, = ax_loss.plot(history["epoch"], history["train_loss"], label=f"fold {fold}")
        val = history.dropna(subset=["val_f1"])
        ax_f1.plot(val["epoch"], val["val_f1"], marker="o", color=line.get_color(), label=f"fold {fold}")
    ax_loss.set(xlabel="epoch", ylabel="training loss (Dice + focal)")
    ax_f1.set(xlabel="epoch", ylabel="validation F1 (paper rule)", ylim=(0, 1.02))
    ax_f1.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_cbam_ablation(
    ours: Mapping[str, Mapping[str, float] | None], paper: Mapping[str, Mapping[str, float]],
    ours_label: str, paper_label: str,
) -> Figure:
    """Table 8 as bars: F1 and FP/subject of every CBAM arm, the paper's bars beside ours.

    Args:
        ours: arm ("Without CBAM", "CBAM-Skip1", ...) -> scores (``f1``, ``fp_per_subject`` and
            their ``_ci_low`` / ``_ci_high``); None or absent: not run (no bar). Our bars carry
            their 95% bootstrap intervals.
        paper: arm -> {"f1", "fp_per_subject", ...} (:data:`cmbstudy.study.paper.TABLE8`); the
            bars follow its order, then any arm only we have.
        ours_label, paper_label: the legend's labels of the two sets of bars.
    """
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    arms = [*paper, *(k for k in ours if k not in paper)]
    x = np.arange(len(arms))
    for ax, metric, label in zip(fig.subplots(1, 2), ("f1", "fp_per_subject"), ("F1", "FP per subject")):
        ax.bar(x - 0.2, [as_float(paper.get(k, {}).get(metric)) for k in arms], 0.4,
               label=paper_label, color="tab:gray")
        scores = [ours.get(k) for k in arms]
        values = np.array([s[metric] if s else np.nan for s in scores])
        low = np.array([s[f"{metric}_ci_low"] if s else np.nan for s in scores])
        high = np.array([s[f"{metric}_ci_high"] if s else np.nan for s in scores])
        errors = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0)
        ax.bar(x + 0.2, values, 0.4, yerr=errors, capsize=3, label=ours_label, color="tab:blue")
        ax.set_xticks(x, arms, rotation=15)
        ax.set(xlabel="CBAM on the skip connections", ylabel=label)
        if metric == "f1":
            ax.set_ylim(0, 1.02)
    fig.axes[0].legend(fontsize="small", loc="lower right")
    return fig


def plot_learning_curve(points: pd.DataFrame, marked_epochs: int | None = None, metric: str = "f1",
                        title: str | None = None) -> Figure:
    """Test-set ``metric`` against training seconds, one line per training seed, with its 95% interval.

    Args:
        points: one row per run with columns seed, epochs, train_seconds, ``metric``, ``<metric>_ci_low``
            and ``<metric>_ci_high`` (``benchmarks/learning_curve.py``).
        marked_epochs: the epochs of the profile the study runs: its points are ringed.
        title: Axes title.

    Raises:
        InputError: a column is missing or there is no row.
    """
    needed = ["seed", "epochs", "train_seconds", metric, f"{metric}_ci_low", f"{metric}_ci_high"]
    missing = [c for c in needed if c not in points.columns]
    if missing or points.empty:
        raise InputError(f"learning-curve points lack column(s) {missing} or rows")
    fig, ax = new_axes(None, (5.2, 3.6))
    for seed, runs in points.sort_values("train_seconds").groupby("seed", sort=True):
        minutes = runs["train_seconds"] / 60
        (line,) = ax.plot(minutes, runs[metric], marker="o", label=f"training seed {seed}", gid=f"seed {seed}")
        ax.fill_between(minutes, runs[f"{metric}_ci_low"], runs[f"{metric}_ci_high"], color=line.get_color(),
                        alpha=0.15, linewidth=0)
        chosen = runs[runs["epochs"] == marked_epochs]
        ax.plot(chosen["train_seconds"] / 60, chosen[metric], marker="o", markersize=12, markerfacecolor="none",
                markeredgecolor="black", linestyle="none", gid=f"seed {seed} profile point")
    ax.set_xscale("log")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel(f"test {metric}")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize="small", title="ring: the study's profile" if marked_epochs else None)
    if title:
        ax.set_title(title)
    return fig
