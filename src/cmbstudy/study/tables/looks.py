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
from .errors import compute_fp_mimic_table, summarize_error_kinds
from .format import LOG_FLOOR, ONE_STAGE, TWO_STAGES, ComparedRow, compare_with_paper, row_label, summary_scores
from .log_floor import CandidateExample, LogFloor, candidate_example, log_floor_second_look

__all__ = ["Looks", "summarize_looks"]

# the paper's single-stage figures of each network (Table 8's arms; the paper has no second look)
_PAPER_ROWS = {"rlk_unet_cbam": "CBAM-AllSkip", "without_cbam": "Without CBAM"}


@dataclass(frozen=True)
class Looks:
    """What notebook 13 shows.

    Attributes:
        fold: the fold of the runs; dataset: where our numbers come from.
        note: markdown on what is missing ("" when every row is there).
        table: per network and rule, P / R / F1 / FP per subject with 95% intervals.
        scores: row label -> :func:`summary_scores` (absent: not run).
        recall_by_size: recall per diameter bin of each row (test subjects, paper rule).
        candidates: row label of a two-stage row -> candidates looked at per test subject.
        fp_by_kind: false positives per test subject by kind (the brain's edge, else the nearest mimic of the
            synthetic cohort, read only to name the errors), one column per row of the main network.
        example: one slice of the main network's two looks; log_floor: the LoG floor with its second look.
    """

    fold: int
    dataset: str
    note: str
    table: pd.DataFrame
    scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    recall_by_size: pd.DataFrame = field(default_factory=pd.DataFrame)
    candidates: Mapping[str, float] = field(default_factory=dict)
    fp_by_kind: pd.DataFrame = field(default_factory=pd.DataFrame)
    example: CandidateExample | None = None
    log_floor: LogFloor | None = None

    @property
    def floor_threshold(self) -> float:
        """The image model's threshold of the LoG floor's second look (NaN when there is none)."""
        return self.log_floor.threshold if self.log_floor is not None else math.nan

    @property
    def example_candidates(self) -> int:
        """Candidates of the example subject's whole volume (0 without an example)."""
        return self.example.n_candidates if self.example is not None else 0

    @property
    def example_looked_at(self) -> int:
        """Those of them past the screen, looked at twice (0 without an example)."""
        return self.example.n_looked_at if self.example is not None else 0

    @property
    def example_kept(self) -> int:
        """Those of them the second look kept (0 without an example)."""
        return self.example.n_kept if self.example is not None else 0

    def value_of(self, label: str, metric: str) -> float:
        """Our ``metric`` of the row ``label`` (e.g. :data:`LOG_FLOOR`); NaN when it was not computed."""
        return float(self.scores.get(label, {}).get(metric, math.nan))

    def value(self, variant: str, rule: str, metric: str) -> float:
        """Our ``metric`` of ``variant`` under ``rule`` (:data:`ONE_STAGE` or :data:`TWO_STAGES`); NaN when not run."""
        return self.value_of(row_label(variant, rule), metric)


def summarize_looks(results_dir: Path | str, test_root: Path | str, profile: Profile,
                    data_root: Path | str | None = None) -> Looks:
    """The main network and the network without CBAM (where the profile trains it), one look and two; with
    ``data_root`` (the training pool, whose validation subjects choose its threshold), the LoG floor with the
    main network's second look too."""
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
    main = runs.get(run_name(profile.study.main, fold))
    floor = log_floor_second_look(main.run_dir, data_root, test_root, profile) \
        if main is not None and data_root is not None else None
    if floor is not None:
        scores[LOG_FLOOR] = summary_scores(floor.summary)
        rows.append(ComparedRow(LOG_FLOOR, scores[LOG_FLOOR], {}))
        outcomes[LOG_FLOOR] = floor.outcomes
        candidates[LOG_FLOOR] = floor.candidates_per_subject
    kinds = {}
    for rule, folder in ((ONE_STAGE, TEST_PREDICTIONS), (TWO_STAGES, TEST_PREDICTIONS_TWO_STAGE)):
        if main is not None and (main.run_dir / folder).is_dir():
            table = compute_fp_mimic_table([main.run_dir / folder], Path(test_root))
            kinds[row_label(profile.study.main, rule)] = summarize_error_kinds(
                table, int(main.evaluation["summary"].get("n_subjects") or 1))["per_subject"]
    label = dataset_label(test_root)
    recall = compute_recall_by_size(outcomes) if outcomes else pd.DataFrame()
    return Looks(fold, label, note, compare_with_paper(rows, label), scores, recall, candidates,
                 fp_by_kind=pd.DataFrame(kinds).round(3),
                 example=candidate_example(main.run_dir, test_root, profile) if main is not None else None,
                 log_floor=floor)
