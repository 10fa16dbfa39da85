"""Table 3 of Cho et al. (2026): the main network of every cross-validation fold on the test set, mean and SD.

Each fold's model (its checkpoint and operating point chosen on that fold's
validation subjects) scores the same test set, as the paper reports per fold.
Our folds are numbered from 0, the paper's from 1: row "fold k" pairs our fold k
with the paper's fold k + 1. The last two rows are the mean and the sample SD
(ddof = 1) over our folds beside the paper's. A second table shows what each
fold chose on its validation subjects, and the validation scores there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ...config import Profile
from ...data.run_folder import HISTORY
from ...errors import InputError
from ...evaluation.stats import format_mean_sd, mean_sd
from ..paper import METRICS, TABLE3_FOLDS, TABLE3_MEAN_SD
from ..runs import RunRecord, dataset_label, load_runs, run_name
from .format import ComparedRow, compare_with_paper, summary_scores

__all__ = ["cross_validation_scores", "cross_validation_table", "selection_table", "CrossValidation",
           "summarize_cross_validation"]


def cross_validation_scores(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Our precision, recall, F1 and FP/subject per fold (rows by fold), with their CIs, and mean and SD rows.

    Raises:
        InputError: no runs given.
    """
    if not records:
        raise InputError("cross_validation_scores needs at least one finished run")
    ordered = sorted(records, key=lambda r: r.fold)
    frame = pd.DataFrame([summary_scores(r.evaluation["summary"]) for r in ordered],
                         index=pd.Index([r.fold for r in ordered], name="fold"))
    stats = {m: mean_sd(frame[m].dropna()) if frame[m].notna().any() else (math.nan, math.nan) for m in METRICS}
    frame.loc["mean"] = {m: v[0] for m, v in stats.items()}
    frame.loc["sd"] = {m: v[1] for m, v in stats.items()}
    return frame


def cross_validation_table(scores: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Table 3 as printed: our fold k beside the paper's fold k + 1, then the means and SDs."""
    rows = []
    for fold in scores.index:
        ours = scores.loc[fold].to_dict()
        if fold in ("mean", "sd"):
            paper = {m: TABLE3_MEAN_SD[m][0 if fold == "mean" else 1] for m in METRICS}
            ours = {m: ours[m] for m in METRICS}  # no interval for a mean or an SD
            rows.append(ComparedRow(str(fold), ours, paper))
        else:
            paper = TABLE3_FOLDS[fold] if fold < len(TABLE3_FOLDS) else {}
            rows.append(ComparedRow(f"fold {fold} (paper fold {fold + 1})", ours, paper))
    return compare_with_paper(rows, dataset, index_name="our fold (paper fold)")


def selection_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Per fold: the operating point chosen on its validation subjects and the validation scores there."""
    rows = [{"fold": r.fold, "threshold": r.operating_point.get("threshold"),
             "min_voxels": r.operating_point.get("min_voxels"), "validation subjects": r.validation.get("n_subjects"),
             **{f"validation {m}": r.validation.get(m) for m in METRICS}} for r in sorted(records, key=lambda r: r.fold)]
    return pd.DataFrame(rows).set_index("fold") if rows else pd.DataFrame()


@dataclass(frozen=True)
class CrossValidation:
    """What notebook 04 shows: Table 3 on the test set, every fold's history, and what each fold chose.

    Attributes:
        records: the finished fold runs, by fold; missing: the names of the missing ones.
        note: markdown on the missing runs ("" when none is missing).
        scores: :func:`cross_validation_scores` (None without runs); table: Table 3 as printed.
        f1_mean, f1_sd, f1_mean_sd: our fold F1 mean, SD and "mean ± sd" text; paper_mean_sd likewise.
        histories: fold -> its ``history.csv``.
        selection: :func:`selection_table`; n_test_subjects: the subjects every fold is scored on.
    """

    dataset: str
    records: tuple[RunRecord, ...]
    missing: tuple[str, ...]
    note: str
    scores: pd.DataFrame | None
    table: pd.DataFrame
    f1_mean: float
    f1_sd: float
    f1_mean_sd: str
    paper_mean_sd: str
    histories: Mapping[int, pd.DataFrame]
    selection: pd.DataFrame
    n_test_subjects: int


def summarize_cross_validation(results_dir: Path | str, test_root: Path | str, profile: Profile) -> CrossValidation:
    """Table 3: ``study.main`` at every fold of ``study.cv_folds`` that the split has, on the test set.

    Raises:
        InputError: an unreadable run.
    """
    main = profile.study.main
    folds = [f for f in profile.study.cv_folds if f < profile.train.n_folds]
    runs, missing = load_runs(results_dir, [run_name(main, f) for f in folds])
    records = tuple(runs[n] for n in sorted(runs))
    label = dataset_label(test_root)
    note = (f"**Runs not found** (not trained by this profile, or notebook 03 not run): {', '.join(missing)}."
            if missing else "")
    scores = cross_validation_scores(records) if records else None
    table = cross_validation_table(scores, label) if scores is not None else pd.DataFrame()
    # the folds whose F1 is defined, as in the table's mean and SD rows
    defined = scores["f1"].drop(index=["mean", "sd"]).dropna() if scores is not None else pd.Series(dtype=float)
    f1_text = format_mean_sd(list(defined)) if len(defined) else "n/a"
    return CrossValidation(
        dataset=label, records=records, missing=tuple(missing), note=note, scores=scores, table=table,
        f1_mean=float(scores.loc["mean", "f1"]) if scores is not None else math.nan,
        f1_sd=float(scores.loc["sd", "f1"]) if scores is not None else math.nan,
        f1_mean_sd=f1_text, paper_mean_sd="{:.3f} ± {:.3f}".format(*TABLE3_MEAN_SD["f1"]),
        histories={r.fold: pd.read_csv(r.run_dir / HISTORY) for r in records},
        selection=selection_table(records),
        n_test_subjects=int(records[0].evaluation["summary"].get("n_subjects", 0)) if records else 0,
    )
