"""Table 5 of Cho et al. (2026): trained on one modality, tested on the other.

The main network is trained on the GRE subjects (and, separately, the SWI
subjects) of the first comparison fold and tested on every test subject of the
other modality (``RUN/eval-test.json``, paper rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from ...config import Profile
from ...formatting import as_float
from ..paper import TABLE5
from ..runs import (
    MODALITIES,
    dataset_label,
    describe_missing_modality,
    load_runs,
    run_name,
)
from ..test_set import resolve_test_set
from .format import ComparedRow, compare_with_paper, summary_scores

__all__ = ["DIRECTIONS", "CrossModality", "summarize_cross_modality"]

#: Table 5's rows: the modality trained on -> the row label (tested on the other one).
DIRECTIONS: Mapping[str, str] = {"gre": "GRE -> SWI", "swi": "SWI -> GRE"}


@dataclass(frozen=True)
class CrossModality:
    """What notebook 07 shows.

    Attributes:
        fold: the fold the two runs were trained on.
        note: markdown on why the table is empty or incomplete ("" when it is complete).
        f1: training modality ("gre", "swi") -> our F1 on the other modality (NaN when absent).
        scores: training modality -> our :func:`summary_scores` on the other one (absent: not run).
        table: Table 5 beside the paper's.
    """

    fold: int
    dataset: str
    note: str
    f1: Mapping[str, float]
    table: pd.DataFrame
    scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def summarize_cross_modality(results_dir: Path | str, data_root: Path | str, test_root: Path | str,
                             profile: Profile) -> CrossModality:
    """Table 5 from the runs ``<main>-gre-fold<k>`` and ``<main>-swi-fold<k>`` of the first comparison fold."""
    fold = next(f for f in profile.study.comparison_folds if f < profile.train.n_folds)
    names = {m: run_name(profile.study.main, fold, m) for m in MODALITIES}
    runs, missing = load_runs(results_dir, list(names.values()))
    test_set = resolve_test_set(profile, data_root, test_root, results_dir)
    reasons = [r for r in (describe_missing_modality(data_root, m, profile.train.n_folds, test_set)
                           for m in MODALITIES) if r]
    note = ""
    if not profile.study.cross_modality:
        note = "**This profile does not train the cross-modality runs** (`study.cross_modality` is false)."
    elif reasons:
        note = "**Cross-modality cannot be evaluated on this dataset:** " + "; ".join(reasons) + "."
    elif missing:
        note = f"**Runs not found:** {', '.join(missing)} (run notebook 03 for them)."
    summaries = {m: runs[name].evaluation["summary"] if name in runs else None for m, name in names.items()}
    rows = [ComparedRow(DIRECTIONS[m], summary_scores(summaries[m]) if summaries[m] else None,
                        TABLE5[DIRECTIONS[m]]) for m in MODALITIES]
    f1 = {m: as_float(summaries[m]["f1"]) if summaries[m] else math.nan for m in MODALITIES}
    label = dataset_label(test_root)
    scores = {m: summary_scores(summaries[m]) for m in MODALITIES if summaries[m]}
    return CrossModality(fold, label, note, f1, compare_with_paper(rows, label), scores)
