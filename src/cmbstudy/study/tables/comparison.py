"""Tables 2 and 4 as notebooks 05 and 06 show them: every method, the classical floor, and the ordering.

:func:`compare_methods` reads the runs of ``study.main`` and ``study.baselines``
at ``study.comparison_folds`` (:mod:`~cmbstudy.study.tables.methods`), adds the
classical LoG floor tuned on the same folds (:mod:`~cmbstudy.study.tables.classical_floor`),
and states the ordering of our network and the best baseline in words, as the
paper's table is read. :func:`compute_recall_table` gives recall by lesion diameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from ...config import Profile
from ...evaluation.evaluate import load_lesion_outcomes, load_reference_diameters
from ...evaluation.subsets import compute_recall_by_size
from ...training.classical import load_detection_cases
from ..paper import TABLE2, TABLE4
from ..runs import VAL_PREDICTIONS, dataset_label, run_path
from .classical_floor import compute_classical_result, load_fold_splits
from .format import CLASSICAL, method_label
from .methods import (
    MethodResult,
    comparison_variants,
    compute_method_table,
    find_best_baseline,
    format_method_table,
    load_method_results,
)

__all__ = ["MethodComparison", "compare_methods", "RecallBySize", "compute_recall_table"]

_PAPER_TABLES = {"all": TABLE2, "small": TABLE4}
# the ordering sentence of each table: (ours above, ours not above, no baseline), and the text
# that stands for a missing best baseline
_ORDERING = {
    "all": ("ours above the best baseline, as in the paper: the ordering replicates",
            "ours not above the best baseline: the paper's ordering does not replicate here",
            "no baseline to compare with: the ordering cannot be checked",
            "none (no baseline run)"),
    "small": ("ours above the best baseline on small lesions, as in the paper: the ordering replicates",
              "ours not above the best baseline on small lesions: the paper's ordering does not replicate here",
              "no baseline with small-lesion results: the ordering cannot be checked",
              "none (no baseline with a finite F1)"),
}
_CLASSICAL_NOT_RUN = ("**Classical LoG detector: not run**: no training run holds the fold split, "
                      "or no subject has a brain mask.")


@dataclass(frozen=True)
class MethodComparison:
    """Table 2 (``subset`` "all") or Table 4 ("small") of one build, with what the chapter says of it.

    Attributes:
        results: method name -> pooled result (the classical floor under :data:`CLASSICAL`).
        table: :func:`~cmbstudy.study.tables.methods.compute_method_table` (numbers).
        shown: :func:`~cmbstudy.study.tables.methods.format_method_table` (the table printed).
        missing_note, classical_note: markdown on missing runs, and on a classical floor that did
            not run ("" when it ran).
        ours_f1, best_baseline, best_baseline_f1, classical_f1: our F1, the best baseline's label
            (or a text saying there is none) and F1, the classical floor's F1 (NaN when absent).
        ordering: the ordering of ours and the best baseline, in words.
        paper_ours_f1, paper_best, paper_best_f1: the same in the paper's table.
        n_reference: reference lesions of the subset in the first row's subjects.
    """

    subset: str
    dataset: str
    folds: tuple[int, ...]
    results: Mapping[str, MethodResult]
    classical_lesions: pd.DataFrame | None
    table: pd.DataFrame
    shown: pd.DataFrame
    missing_note: str
    classical_note: str
    ours_f1: float
    best_baseline: str
    best_baseline_f1: float
    classical_f1: float
    ordering: str
    paper_ours_f1: float
    paper_best: str
    paper_best_f1: float
    n_reference: int


def _missing_note(missing: Mapping[str, list[str]]) -> str:
    lines = [f"- **{method_label(v)}**: runs missing ({', '.join(runs)}); the profile or the runner did not "
             "train them, so its row is empty" for v, runs in missing.items()]
    return "\n".join(lines or ["Every method of the comparison has its runs."])


def _f1(table: pd.DataFrame, label: str | None) -> float:
    return float(table.loc[label, "f1"]) if label is not None and label in table.index else math.nan


def compare_methods(results_dir: Path | str, data_root: Path | str, profile: Profile, subset: str = "all"
                    ) -> MethodComparison:
    """Every method of the comparison on the validation subjects of ``study.comparison_folds``.

    Raises:
        ConfigError: unknown subset.
        InputError: an unreadable run or dataset.
    """
    variants = comparison_variants(profile)
    folds = tuple(profile.study.comparison_folds)
    results, missing = load_method_results(results_dir, variants, folds)
    splits = load_fold_splits(results_dir, variants, folds)
    cases, case_ids = load_detection_cases(data_root)
    classical_lesions, classical_note = None, _CLASSICAL_NOT_RUN
    if splits and cases:
        results[CLASSICAL], classical_lesions = compute_classical_result(
            cases, case_ids, splits, load_reference_diameters(data_root))
        classical_note = ""
    paper = _PAPER_TABLES[subset]
    table = compute_method_table(results, paper, subset=subset, missing=missing)
    main, main_label = profile.study.main, method_label(profile.study.main)
    best = find_best_baseline(table, main_label)
    ours_f1, best_f1 = _f1(table, main_label), _f1(table, best)
    above, below, none, no_best = _ORDERING[subset]
    ordering = above if ours_f1 > best_f1 else below if best else none
    paper_best = max((m for m in paper if m != main), key=lambda m: paper[m]["f1"])
    n_reference = int(table["n_tp"].fillna(0).iloc[0] + table["n_fn"].fillna(0).iloc[0]) if len(table) else 0
    label = dataset_label(data_root)
    return MethodComparison(
        subset=subset, dataset=label, folds=folds, results=results, classical_lesions=classical_lesions,
        table=table, shown=format_method_table(table, label), missing_note=_missing_note(missing),
        classical_note=classical_note, ours_f1=ours_f1, best_baseline=best or no_best, best_baseline_f1=best_f1,
        classical_f1=_f1(table, method_label(CLASSICAL)), ordering=ordering,
        paper_ours_f1=float(paper.get(main, {}).get("f1", math.nan)), paper_best=method_label(paper_best),
        paper_best_f1=float(paper[paper_best]["f1"]), n_reference=n_reference,
    )


@dataclass(frozen=True)
class RecallBySize:
    """Recall per reference-diameter bin of every method (rounded to 3 decimals), or a note saying why none."""

    table: pd.DataFrame
    note: str


def compute_recall_table(comparison: MethodComparison, results_dir: Path | str, data_root: Path | str,
                         threshold: float) -> RecallBySize:
    """Recall by reference lesion diameter of every method (Table 4's companion).

    The networks' per-lesion outcomes are recomputed from their validation probability maps at
    ``threshold`` (paper rule); the classical floor's come from its scoring.
    """
    lesions = {
        result.label: pd.concat([load_lesion_outcomes(run_path(results_dir, name, fold) / VAL_PREDICTIONS, data_root,
                                                      threshold=threshold) for fold in comparison.folds],
                                ignore_index=True)
        for name, result in comparison.results.items() if name != CLASSICAL
    }
    if comparison.classical_lesions is not None:
        lesions[comparison.results[CLASSICAL].label] = comparison.classical_lesions
    if not lesions:
        return RecallBySize(pd.DataFrame(), "No method has runs: no recall by size.")
    return RecallBySize(compute_recall_by_size(lesions).round(3), "")
