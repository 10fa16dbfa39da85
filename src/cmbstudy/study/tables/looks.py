"""One look or two (beyond the paper): each network single-stage, as published, and with the second look.

The paper argues that CBAM on the skip connections makes a second stage
unnecessary. Every training run of the study predicts its test subjects once
and scores them twice from that one network pass: with the single-stage rule
(``RUN/eval-test.json``, the paper's method, which Tables 2-8 keep) and with the
run's second look (``RUN/eval-test-2stage.json``,
:mod:`cmbstudy.inference.second_look`). This table sets the two side by side
for the main network and the network without CBAM at the first comparison
fold, with recall by lesion diameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from ...config import Profile
from ...evaluation.evaluate import load_lesion_outcomes
from ...evaluation.subsets import compute_recall_by_size
from ..paper import TABLE8
from ..runs import TEST_PREDICTIONS, TEST_PREDICTIONS_TWO_STAGE, dataset_label, load_runs, run_name
from .format import ComparedRow, compare_with_paper, method_label, summary_scores

__all__ = ["ONE_STAGE", "TWO_STAGES", "Looks", "row_label", "summarize_looks"]

ONE_STAGE, TWO_STAGES = "one stage", "with the second look"
# the paper's single-stage figures of each network (Table 8's arms; the paper has no second look)
_PAPER_ROWS = {"rlk_unet_cbam": "CBAM-AllSkip", "without_cbam": "Without CBAM"}


@dataclass(frozen=True)
class Looks:
    """What notebook 14 shows.

    Attributes:
        fold: the fold of the runs; dataset: where our numbers come from.
        note: markdown on what is missing ("" when every row is there).
        table: per network and rule, P / R / F1 / FP per subject with 95% intervals.
        scores: row label -> :func:`summary_scores` (absent: not run).
        recall_by_size: recall per diameter bin of each row (test subjects, paper rule).
        candidates: row label of a two-stage row -> candidates looked at per test subject.
    """

    fold: int
    dataset: str
    note: str
    table: pd.DataFrame
    scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    recall_by_size: pd.DataFrame = field(default_factory=pd.DataFrame)
    candidates: Mapping[str, float] = field(default_factory=dict)

    def value(self, variant: str, rule: str, metric: str) -> float:
        """Our ``metric`` of ``variant`` under ``rule`` (:data:`ONE_STAGE` or :data:`TWO_STAGES`); NaN when not run."""
        return float(self.scores.get(row_label(variant, rule), {}).get(metric, math.nan))


def row_label(variant: str, rule: str) -> str:
    """``"<network>, one stage"`` or ``"<network>, with the second look"``."""
    return f"{method_label(variant)}, {rule}"


def summarize_looks(results_dir: Path | str, test_root: Path | str, profile: Profile) -> Looks:
    """The main network and the network without CBAM (where the profile trains it), one look and two."""
    fold = next(f for f in profile.study.comparison_folds if f < profile.train.n_folds)
    variants = [profile.study.main] + [v for v in ("without_cbam",) if v in profile.study.ablation]
    runs, missing = load_runs(results_dir, [run_name(v, fold) for v in variants])
    rows, scores, outcomes, candidates, absent = [], {}, {}, {}, []
    for variant in variants:
        run = runs.get(run_name(variant, fold))
        for rule, evaluation, folder in ((ONE_STAGE, run.evaluation if run else None, TEST_PREDICTIONS),
                                         (TWO_STAGES, run.evaluation_two_stage if run else None,
                                          TEST_PREDICTIONS_TWO_STAGE)):
            label = row_label(variant, rule)
            found = summary_scores(evaluation["summary"]) if evaluation else None
            paper = TABLE8.get(_PAPER_ROWS.get(variant, ""), {}) if rule == ONE_STAGE else {}
            rows.append(ComparedRow(label, found, paper))
            if found is None:
                absent.append(label)
                continue
            scores[label] = found
            outcomes[label] = load_lesion_outcomes(run.run_dir / folder, test_root)
            if rule == TWO_STAGES:
                table = pd.read_csv(run.run_dir / folder / "predictions.tsv", sep="\t")
                candidates[label] = float(table["n_candidates"].mean()) if "n_candidates" in table else float("nan")
    note = ""
    if missing:
        note = f"**Runs not found:** {', '.join(missing)} (run notebook 03 for them)."
    elif absent:
        note = (f"**No second look for:** {', '.join(absent)}: its validation subjects held too few candidates of "
                "either kind to train one (the run's `second_look.json` says so).")
    label = dataset_label(test_root)
    recall = compute_recall_by_size(outcomes) if outcomes else pd.DataFrame()
    return Looks(fold, label, note, compare_with_paper(rows, label), scores, recall, candidates)
