"""Tables 2 and 4 as notebooks 05 and 06 show them: every method, the classical floor, and the ordering.

:func:`compare_methods` reads the test-set results of ``study.main`` and
``study.baselines`` at the first of ``study.comparison_folds``
(:mod:`~cmbstudy.study.tables.methods`), adds the classical LoG floor tuned on
that fold's validation subjects (:mod:`~cmbstudy.study.tables.classical_floor`),
and states the ordering of our network and the best baseline in words, as the
paper's table is read, from their 95% intervals: "cannot tell" when they
overlap (:func:`~cmbstudy.study.tables.format.ordering_verdict`).
:func:`compute_recall_table` gives recall by lesion diameter.
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
from ..runs import TEST_PREDICTIONS, dataset_label, run_path
from ..test_set import resolve_test_set
from .classical_floor import compute_classical_result, load_fold_splits
from .format import ABOVE, BELOW, CLASSICAL, method_label, ordering_verdict
from .methods import (
    MethodResult,
    comparison_variants,
    compute_method_table,
    find_best_baseline,
    format_method_table,
    load_method_results,
)

__all__ = ["MethodComparison", "compare_methods", "row_scores", "RecallBySize", "compute_recall_table"]

_PAPER_TABLES = {"all": TABLE2, "small": TABLE4}
# the ordering sentence of each table by verdict, and the text that stands for a missing best baseline
_ORDERING = {
    "all": {ABOVE: "ours above the best baseline (95% intervals apart), as in the paper: the ordering replicates",
            BELOW: "ours below the best baseline (95% intervals apart): the paper's ordering does not replicate here",
            None: "cannot tell: the 95% intervals of ours and the best baseline overlap, so the ordering could "
                  "flip with the training seed"},
    "small": {ABOVE: "ours above the best baseline on small lesions (95% intervals apart), as in the paper",
              BELOW: "ours below the best baseline on small lesions (95% intervals apart): the paper's ordering "
                     "does not replicate here",
              None: "cannot tell on small lesions: the 95% intervals overlap"},
}
_NO_BASELINE = {"all": ("no baseline to compare with: the ordering cannot be checked", "none (no baseline run)"),
                "small": ("no baseline with small-lesion results: the ordering cannot be checked",
                          "none (no baseline with a finite F1)")}
_CLASSICAL_NOT_RUN = ("**Classical LoG detector: not run**: no training run holds the fold split, "
                      "or no subject of the training or test set has a brain mask.")


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
        ordering: the ordering of ours and the best baseline, in words; verdict: "above", "below" or
            "cannot tell" (:func:`~cmbstudy.study.tables.format.ordering_verdict`);
            above_floor: the verdict of ours against the classical floor.
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
    verdict: str
    above_floor: str
    paper_ours_f1: float
    paper_best: str
    paper_best_f1: float
    n_reference: int


def _missing_note(missing: Mapping[str, list[str]], results: Mapping[str, MethodResult]) -> str:
    lines = [f"- **{method_label(v)}**: runs missing ({', '.join(runs)}); the profile or the runner did not "
             "train them, so its row is empty" for v, runs in missing.items()]
    silent = [r.label for r in results.values()
              if r.per_subject and not sum(int(s["n_tp"]) + int(s["n_fp"]) for s in r.per_subject)]
    return "\n".join([*(lines or ["Every method of the comparison has its runs."]), *(
        f"- **{label}** detected nothing on the test set at its operating point: it did not learn to detect at "
        "this training budget, so an ordering against it says nothing of its architecture" for label in silent)])


def _f1(table: pd.DataFrame, label: str | None) -> float:
    return float(table.loc[label, "f1"]) if label is not None and label in table.index else math.nan


def row_scores(table: pd.DataFrame, label: str | None) -> dict[str, float] | None:
    """F1 and its interval of the row ``label`` of a method table, and its precision and recall where the table
    has them (None when the row is absent)."""
    if label is None or label not in table.index:
        return None
    columns = ("f1", "f1_ci_low", "f1_ci_high", *(c for c in ("precision", "recall") if c in table.columns))
    return {c: float(table.loc[label, c]) for c in columns}


def compare_methods(results_dir: Path | str, data_root: Path | str, test_root: Path | str, profile: Profile,
                    subset: str = "all") -> MethodComparison:
    """Every method of the comparison on the test set, each as trained at the first comparison fold.

    ``data_root`` holds the training subjects (the classical floor is tuned on the
    fold's validation subjects there), ``test_root`` the test set.

    Raises:
        ConfigError: unknown subset.
        InputError: an unreadable run or dataset.
    """
    variants = comparison_variants(profile)
    folds = tuple(profile.study.comparison_folds[:1])
    results, missing = load_method_results(results_dir, variants, folds)
    splits = load_fold_splits(results_dir, variants, folds)
    cases, case_ids = load_detection_cases(data_root)
    held_out = set(resolve_test_set(profile, data_root, test_root, results_dir).subject_ids)
    test_pairs = [(c, i) for c, i in zip(*load_detection_cases(test_root)) if i in held_out]
    test_cases, test_ids = [c for c, _ in test_pairs], [i for _, i in test_pairs]
    classical_lesions, classical_note = None, _CLASSICAL_NOT_RUN
    if splits and cases and test_cases:
        results[CLASSICAL], classical_lesions = compute_classical_result(
            cases, case_ids, splits, test_cases, test_ids, load_reference_diameters(test_root))
        classical_note = ""
    paper = _PAPER_TABLES[subset]
    table = compute_method_table(results, paper, subset=subset, missing=missing)
    main, main_label = profile.study.main, method_label(profile.study.main)
    best = find_best_baseline(table, main_label)
    ours = row_scores(table, main_label)
    verdict = ordering_verdict(ours, row_scores(table, best))
    no_comparison, no_best = _NO_BASELINE[subset]
    ordering = _ORDERING[subset].get(verdict, _ORDERING[subset][None]) if best else no_comparison
    paper_best = max((m for m in paper if m != main), key=lambda m: paper[m]["f1"])
    n_reference = int(table["n_tp"].fillna(0).iloc[0] + table["n_fn"].fillna(0).iloc[0]) if len(table) else 0
    label = dataset_label(test_root)
    return MethodComparison(
        subset=subset, dataset=label, folds=folds, results=results, classical_lesions=classical_lesions,
        table=table, shown=format_method_table(table, label), missing_note=_missing_note(missing, results),
        classical_note=classical_note, ours_f1=_f1(table, main_label), best_baseline=best or no_best,
        best_baseline_f1=_f1(table, best), classical_f1=_f1(table, method_label(CLASSICAL)), ordering=ordering,
        verdict=verdict, above_floor=ordering_verdict(ours, row_scores(table, method_label(CLASSICAL))),
        paper_ours_f1=float(paper.get(main, {}).get("f1", math.nan)), paper_best=method_label(paper_best),
        paper_best_f1=float(paper[paper_best]["f1"]), n_reference=n_reference,
    )


@dataclass(frozen=True)
class RecallBySize:
    """Recall per reference-diameter bin of every method (rounded to 3 decimals), or a note saying why none."""

    table: pd.DataFrame
    note: str


def compute_recall_table(comparison: MethodComparison, results_dir: Path | str, test_root: Path | str,
                         threshold: float | None = None) -> RecallBySize:
    """Recall by reference lesion diameter of every method on the test set (Table 4's companion).

    The networks' per-lesion outcomes are recomputed from their test probability maps at
    each run's operating point (``threshold`` None) or at ``threshold`` (paper rule); the
    classical floor's come from its scoring.
    """
    lesions = {
        result.label: pd.concat([load_lesion_outcomes(run_path(results_dir, name, fold) / TEST_PREDICTIONS, test_root,
                                                      threshold=threshold) for fold in comparison.folds],
                                ignore_index=True)
        for name, result in comparison.results.items() if name != CLASSICAL
    }
    if comparison.classical_lesions is not None:
        lesions[comparison.results[CLASSICAL].label] = comparison.classical_lesions
    if not lesions:
        return RecallBySize(pd.DataFrame(), "No method has runs: no recall by size.")
    return RecallBySize(compute_recall_by_size(lesions).round(3), "")
