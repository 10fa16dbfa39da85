"""Tables 7 and 8 of Cho et al. (2026): the network without CBAM, and with CBAM on 1, 2 or every skip.

The arms are ``study.ablation`` and ``study.main``, each trained at the first
comparison fold and scored on the test set. An arm is named after its number of CBAM skips
(``model.cbam_skips`` of its resolved profile, the one switch that turns CBAM
on and off), as the paper names the rows of Table 8: "Without CBAM",
"CBAM-Skip1" (the deepest skip), "CBAM-Skip2" (the two deepest), "CBAM-AllSkip".
Whether CBAM helps is read from the 95% intervals of the two F1s: "cannot
tell" when they overlap (:func:`~cmbstudy.study.tables.format.ordering_verdict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from ...config import Profile, resolve_variant
from ..paper import PAPER_DATASET_LABEL, TABLE7, TABLE8
from ..runs import dataset_label, evaluate_arms
from .format import ComparedRow, compare_with_paper, ordering_verdict, summary_scores

__all__ = ["WITHOUT_CBAM", "ALL_SKIPS", "cbam_arm", "Ablation", "summarize_ablation"]

WITHOUT_CBAM, ALL_SKIPS = "Without CBAM", "CBAM-AllSkip"
# Table 7's rows: the arm each stands for
_TABLE7_ARMS = {"Without CBAM": WITHOUT_CBAM, "With CBAM": ALL_SKIPS}


def cbam_arm(profile: Profile, variant: str) -> str:
    """The Table 8 row of ``variant``: "Without CBAM", "CBAM-Skip<k>" or "CBAM-AllSkip"."""
    model = resolve_variant(profile, variant).model
    skips, n_skips = model.cbam_skips, len(model.widths)
    if skips == 0:
        return WITHOUT_CBAM
    return ALL_SKIPS if skips < 0 or skips >= n_skips else f"CBAM-Skip{skips}"


@dataclass(frozen=True)
class Ablation:
    """What notebook 09 shows.

    Attributes:
        folds: the fold of every arm; note: markdown on missing runs ("" when none is missing).
        scores: arm (Table 8's row label) -> our :func:`summary_scores` (absent: not run).
        f1_without, f1_with: our F1 without CBAM and with CBAM on every skip (NaN when absent).
        verdict: CBAM on every skip against none: "above", "below" or "cannot tell".
        table7, table8: the tables beside the paper's.
    """

    dataset: str
    folds: tuple[int, ...]
    note: str
    scores: Mapping[str, Mapping[str, float]]
    f1_without: float
    f1_with: float
    verdict: str
    table7: pd.DataFrame
    table8: pd.DataFrame

    @property
    def ours_label(self) -> str:
        """The legend label of our bars."""
        return f"ours ({self.dataset})"

    @property
    def paper_label(self) -> str:
        """The legend label of the paper's bars."""
        return PAPER_DATASET_LABEL


def summarize_ablation(results_dir: Path | str, test_root: Path | str, profile: Profile) -> Ablation:
    """Tables 7 and 8 from every arm's run at the first comparison fold, on the test set."""
    folds = tuple(profile.study.comparison_folds[:1])
    arms = list(dict.fromkeys([*profile.study.ablation, profile.study.main]))
    reports, missing = evaluate_arms(results_dir, arms, folds[0])
    note = (f"**Runs not found** (not trained by this profile, or notebook 03 not run): {', '.join(missing)}."
            if missing else "")
    scores = {cbam_arm(profile, v): summary_scores(reports[v].summary) for v in reports}
    label = dataset_label(test_root)
    table7 = compare_with_paper([ComparedRow(row, scores.get(arm), TABLE7[row]) for row, arm in _TABLE7_ARMS.items()],
                                label)
    rows8 = [ComparedRow(arm, scores.get(arm), TABLE8.get(arm, {})) for arm in [*TABLE8, *(a for a in scores
                                                                                          if a not in TABLE8)]]
    table8 = compare_with_paper(rows8, label, index_name="CBAM on the skips")
    return Ablation(
        dataset=label, folds=folds, note=note, scores=scores,
        f1_without=scores[WITHOUT_CBAM]["f1"] if WITHOUT_CBAM in scores else math.nan,
        f1_with=scores[ALL_SKIPS]["f1"] if ALL_SKIPS in scores else math.nan,
        verdict=ordering_verdict(scores.get(ALL_SKIPS), scores.get(WITHOUT_CBAM)), table7=table7, table8=table8,
    )
