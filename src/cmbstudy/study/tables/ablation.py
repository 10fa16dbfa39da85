"""Tables 7 and 8 of Cho et al. (2025): the network without CBAM, and with CBAM on 1, 2 or all skips.

The arms are ``study.ablation`` and ``study.main``, each pooled over the
comparison folds; an arm's number of CBAM skips comes from its resolved profile
(0 for ``rlk_unet``).
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
from .format import ComparedRow, compare_with_paper, summary_scores

__all__ = ["ALL_SKIPS", "Ablation", "summarize_ablation", "cbam_skips_of"]

#: CBAM on every skip of the paper's 4-stage network.
ALL_SKIPS = 3


def cbam_skips_of(profile: Profile, variant: str) -> int:
    """The number of skips with CBAM of ``variant`` (0 for the network without CBAM)."""
    model = resolve_variant(profile, variant).model
    return 0 if model.name == "rlk_unet" else model.cbam_skips


def _skips_label(skips: int) -> str:
    return "all" if skips == ALL_SKIPS else str(skips)


@dataclass(frozen=True)
class Ablation:
    """What notebook 09 shows.

    Attributes:
        folds: the folds pooled; note: markdown on missing runs ("" when none is missing).
        scores: CBAM skips -> our :func:`summary_scores` (absent: not run).
        f1_without, f1_with: our F1 without CBAM and with CBAM on every skip (NaN when absent).
        table7, table8: the tables beside the paper's.
    """

    dataset: str
    folds: tuple[int, ...]
    note: str
    scores: Mapping[int, Mapping[str, float]]
    f1_without: float
    f1_with: float
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


def summarize_ablation(results_dir: Path | str, data_root: Path | str, profile: Profile) -> Ablation:
    """Tables 7 and 8 from every arm's runs at the comparison folds."""
    folds = tuple(f for f in profile.study.comparison_folds if f < profile.train.n_folds)
    arms = list(dict.fromkeys([*profile.study.ablation, profile.study.main]))
    reports, missing = evaluate_arms(results_dir, arms, folds, data_root)
    note = (f"**Runs not found** (not trained by this profile, or notebook 03 not run): {', '.join(missing)}."
            if missing else "")
    scores = {cbam_skips_of(profile, v): summary_scores(reports[v].summary) for v in reports}
    label = dataset_label(data_root)
    table7 = compare_with_paper([ComparedRow(row, scores.get(k), TABLE7[row]) for row, k in
                                 (("without CBAM", 0), ("with CBAM", ALL_SKIPS))], label)
    table8 = compare_with_paper([ComparedRow(_skips_label(k), scores.get(k), TABLE8[k]) for k in TABLE8], label,
                                metrics=("f1", "fp_per_subject"), index_name="skips with CBAM")
    return Ablation(
        dataset=label, folds=folds, note=note, scores=scores,
        f1_without=scores[0]["f1"] if 0 in scores else math.nan,
        f1_with=scores[ALL_SKIPS]["f1"] if ALL_SKIPS in scores else math.nan,
        table7=table7, table8=table8,
    )
