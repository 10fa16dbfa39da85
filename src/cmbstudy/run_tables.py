"""Tables and figures built from the study's runs: Table 3 (folds), Tables 5, 7 and 8, training curves.

Every table puts the paper's figures beside ours, each labelled by the data they
come from (:data:`cmbstudy.paper.PAPER_DATASET_LABEL` and ``"ours (<dataset>)"``).
Our numbers are pooled over the subjects evaluated (paper rule), with 95%
bootstrap intervals over subjects where the evaluation gives them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import InputError
from .paper import METRICS, PAPER_DATASET_LABEL, TABLE3_FOLD_F1, TABLE3_MEAN_SD, TABLE8
from .results import RunRecord
from .stats import mean_sd

__all__ = ["summary_scores", "compare_with_paper", "cross_validation_table", "plot_fold_histories",
           "plot_cbam_ablation"]

CI_COLUMN = "F1 95% CI"


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def summary_scores(summary: Mapping[str, Any]) -> dict[str, float]:
    """precision, recall, f1, fp_per_subject and their ``_ci_low`` / ``_ci_high`` from an evaluation summary.

    ``summary`` is ``EvaluationReport.summary`` or the ``"summary"`` of an ``eval-*.json`` (null -> NaN).
    """
    scores = {m: _number(summary.get(m)) for m in METRICS}
    for metric in METRICS:
        low, high = (summary.get("ci95", {}) or {}).get(metric) or (None, None)
        scores[f"{metric}_ci_low"], scores[f"{metric}_ci_high"] = _number(low), _number(high)
    return scores


def _ci_text(scores: Mapping[str, float]) -> str:
    low, high = scores.get("f1_ci_low", math.nan), scores.get("f1_ci_high", math.nan)
    return "" if math.isnan(low) or math.isnan(high) else f"[{low:.3f}, {high:.3f}]"


def compare_with_paper(
    ours: Mapping[str, Mapping[str, Any] | None],
    paper: Mapping[str, Mapping[str, float]],
    dataset_label: str,
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Rows (row label, data source): the paper's figures, then ours, for every label of ``paper``.

    Args:
        ours: row label -> evaluation summary (or :func:`summary_scores` output); None: not run,
            which leaves our row empty (NaN) and says so in the CI column.
        paper: row label -> the paper's metrics (e.g. :data:`cmbstudy.paper.TABLE5`).
        dataset_label: the data our numbers come from, e.g. "synthetic cohort".
        metrics: columns, in order.

    Raises:
        InputError: ``dataset_label`` is empty.
    """
    if not str(dataset_label).strip():
        raise InputError("dataset_label must name the data our numbers come from, e.g. 'synthetic cohort'")
    rows, index = [], []
    for label, published in paper.items():
        rows.append({**{m: _number(published.get(m)) for m in metrics}, CI_COLUMN: ""})
        index.append((label, PAPER_DATASET_LABEL))
        summary = ours.get(label)
        if summary is None:
            rows.append({**{m: math.nan for m in metrics}, CI_COLUMN: "not run"})
        else:
            scores = summary_scores(summary)
            rows.append({**{m: scores[m] for m in metrics}, CI_COLUMN: _ci_text(scores)})
        index.append((label, f"ours ({dataset_label})"))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["", "data"]),
                        columns=[*metrics, CI_COLUMN])


def cross_validation_table(records: Sequence[RunRecord], dataset_label: str) -> pd.DataFrame:
    """Table 3: our precision, recall, F1 and FP/subject per fold with the paper's fold F1 beside them.

    Our folds are numbered from 0, the paper's from 1: row "fold k" pairs our fold k
    with the paper's fold k + 1. The last two rows are the mean and the sample SD
    (ddof = 1) over our folds and the paper's published mean and SD.

    Raises:
        InputError: no runs given.
    """
    if not records:
        raise InputError("cross_validation_table needs at least one finished run")
    ours_col = f"F1, ours ({dataset_label})"
    paper_col = f"F1, {PAPER_DATASET_LABEL}"
    rows, index = [], []
    for record in sorted(records, key=lambda r: r.fold):
        scores = summary_scores(record.evaluation["summary"])
        paper_f1 = TABLE3_FOLD_F1[record.fold] if record.fold < len(TABLE3_FOLD_F1) else math.nan
        rows.append({"precision": scores["precision"], "recall": scores["recall"], ours_col: scores["f1"],
                     "FP/subject": scores["fp_per_subject"], paper_col: paper_f1})
        index.append(f"fold {record.fold} (paper fold {record.fold + 1})")
    frame = pd.DataFrame(rows, index=pd.Index(index, name="our fold (paper fold)"))
    stats = {column: mean_sd(frame[column].dropna()) if frame[column].notna().any() else (math.nan, math.nan)
             for column in ("precision", "recall", ours_col, "FP/subject")}
    frame.loc["mean"] = {**{c: v[0] for c, v in stats.items()}, paper_col: TABLE3_MEAN_SD[0]}
    frame.loc["sd"] = {**{c: v[1] for c, v in stats.items()}, paper_col: TABLE3_MEAN_SD[1]}
    return frame


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
    ours: Mapping[int, Mapping[str, Any] | None], dataset_label: str,
    paper: Mapping[int, Mapping[str, float]] = TABLE8,
) -> Figure:
    """Table 8 as bars: F1 and FP/subject by the number of skips with CBAM, the paper's bars beside ours.

    Args:
        ours: skips with CBAM (0..3, 3 = all) -> evaluation summary; None or absent: not run
            (no bar). Our bars carry their 95% bootstrap intervals.
        paper: skips -> {"f1", "fp_per_subject"} (default :data:`cmbstudy.paper.TABLE8`).
    """
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    skips = sorted(set(paper) | set(ours))
    x = np.arange(len(skips))
    for ax, metric, label in zip(fig.subplots(1, 2), ("f1", "fp_per_subject"), ("F1", "FP per subject")):
        ax.bar(x - 0.2, [_number(paper.get(k, {}).get(metric)) for k in skips], 0.4,
               label=PAPER_DATASET_LABEL, color="tab:gray")
        scores = [summary_scores(ours[k]) if ours.get(k) is not None else None for k in skips]
        values = np.array([s[metric] if s else np.nan for s in scores])
        low = np.array([s[f"{metric}_ci_low"] if s else np.nan for s in scores])
        high = np.array([s[f"{metric}_ci_high"] if s else np.nan for s in scores])
        errors = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0)
        ax.bar(x + 0.2, values, 0.4, yerr=errors, capsize=3, label=f"ours ({dataset_label})", color="tab:blue")
        ax.set_xticks(x, ["all" if k == 3 else str(k) for k in skips])
        ax.set(xlabel="skip connections with CBAM", ylabel=label)
        if metric == "f1":
            ax.set_ylim(0, 1.02)
    fig.axes[0].legend(fontsize="small", loc="lower right")
    return fig
