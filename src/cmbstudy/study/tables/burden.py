"""Table 6 and Fig. 4 of Cho et al. (2026): burden categories and CMB counts, predicted against reference.

On the test set, as the main network's comparison-fold model predicts it (the
model every other method is compared with): the 4 x 4 ARIA-H confusion with its
agreement and linearly weighted kappa, and Spearman's rho of the counts with a
Fisher-z CI and a regression line, beside the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from ...config import Profile
from ...data.aria_h import ARIA_H_CATEGORIES
from ...errors import InputError
from ...evaluation.stats import CountAgreement, compute_count_agreement
from ...formatting import as_float
from ..paper import FIG4_SPEARMAN, PAPER_DATASET_LABEL, TABLE6_CONFUSION
from ..runs import dataset_label, load_runs, run_name, test_report

__all__ = ["compute_agreement", "Burden", "summarize_burden"]


def compute_agreement(confusion: np.ndarray) -> dict[str, float]:
    """Agreement of a k x k confusion of ordered categories (rows reference, columns predicted).

    Args:
        confusion: (k, k) non-negative subject counts, e.g. the ARIA-H confusion (paper Table 6).

    Returns:
        ``n`` subjects, ``agreement`` (fraction on the diagonal) and ``weighted_kappa``
        (Cohen's kappa with linear weights |i - j| / (k - 1), from scikit-learn; NaN when the
        kappa is undefined, e.g. one category only).

    Raises:
        InputError: not a square matrix of non-negative counts.
    """
    arr = np.asarray(confusion)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or (arr < 0).any() or not np.all(arr == np.round(arr)):
        raise InputError(f"confusion must be a square matrix of non-negative counts, got {arr.tolist()}")
    n = int(arr.sum())
    out = {"n": float(n), "agreement": float(np.trace(arr)) / n if n else float("nan"), "weighted_kappa": float("nan")}
    rows, cols = np.nonzero(arr)
    if n and (len(set(rows)) > 1 or len(set(cols)) > 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            kappa = cohen_kappa_score(
                rows, cols, labels=list(range(arr.shape[0])), weights="linear", sample_weight=arr[rows, cols]
            )
        out["weighted_kappa"] = float(kappa) if np.isfinite(kappa) else float("nan")
    return out


@dataclass(frozen=True)
class Burden:
    """What notebook 08 shows.

    Attributes:
        note: markdown on missing runs ("" when none is missing).
        per_subject: subject_id, n_ref, n_pred of every subject predicted.
        confusion: our 4 x 4 ARIA-H confusion (zeros without runs); ours, paper: their agreement.
        confusion_table, agreement_table: the two beside the paper's.
        counts: Spearman rho and the regression of predicted on reference counts; counts_table:
            rho and its CI beside the paper's.
        mean_abs_count_difference: mean |predicted - reference| count (NaN without runs).
    """

    dataset: str
    note: str
    per_subject: pd.DataFrame
    confusion: np.ndarray
    ours: dict[str, float]
    paper: dict[str, float]
    confusion_table: pd.DataFrame
    agreement_table: pd.DataFrame
    counts: CountAgreement
    counts_table: pd.DataFrame
    mean_abs_count_difference: float

    @property
    def ours_label(self) -> str:
        """The column and title label of our numbers."""
        return f"ours ({self.dataset})"


def summarize_burden(results_dir: Path | str, test_root: Path | str, profile: Profile) -> Burden:
    """Table 6 and Fig. 4 from ``study.main`` at the first comparison fold, on the test set."""
    name = run_name(profile.study.main, profile.study.comparison_folds[0])
    runs, missing = load_runs(results_dir, [name])
    label, ours_label = dataset_label(test_root), f"ours ({dataset_label(test_root)})"
    note = (f"**Runs not found** (not trained by this profile, or notebook 03 not run): {', '.join(missing)}."
            if missing else "")
    report = test_report(results_dir, name) if runs else None
    per_subject = pd.DataFrame(report.per_subject if report else [], columns=["subject_id", "n_ref", "n_pred"])
    confusion = np.asarray(report.summary["aria_h_confusion"]) if report else np.zeros((4, 4), dtype=int)
    ours, theirs = compute_agreement(confusion), compute_agreement(TABLE6_CONFUSION)
    categories = [f"reference {c}" for c in ARIA_H_CATEGORIES]
    confusion_table = pd.concat({
        ours_label: pd.DataFrame(confusion, index=categories, columns=list(ARIA_H_CATEGORIES)),
        PAPER_DATASET_LABEL: pd.DataFrame(TABLE6_CONFUSION, index=categories, columns=list(ARIA_H_CATEGORIES)),
    }, axis=1)
    agreement_table = pd.DataFrame({PAPER_DATASET_LABEL: theirs, ours_label: ours}).rename(
        index={"n": "subjects", "agreement": "fraction on the diagonal", "weighted_kappa": "weighted κ (linear)"}
    ).round(3)
    counts = compute_count_agreement(per_subject["n_ref"], per_subject["n_pred"])
    counts_table = pd.DataFrame({
        PAPER_DATASET_LABEL: [FIG4_SPEARMAN["rho"], FIG4_SPEARMAN["ci_low"], FIG4_SPEARMAN["ci_high"],
                              FIG4_SPEARMAN["n"]],
        ours_label: [counts.rho, counts.ci_low, counts.ci_high, counts.n],
    }, index=["Spearman ρ", "95% CI low", "95% CI high", "subjects"]).round(3)
    return Burden(
        dataset=label, note=note, per_subject=per_subject, confusion=confusion, ours=ours, paper=theirs,
        confusion_table=confusion_table, agreement_table=agreement_table, counts=counts,
        counts_table=counts_table,
        mean_abs_count_difference=as_float(report.summary["mean_abs_count_difference"]) if report else math.nan,
    )
