"""Method comparison: Table 2 (all lesions) and Table 4 (lesions <= 3 mm) of Cho et al. (2026).

One row per method of ``profile.study`` (the paper's network, then the baselines)
at ``study.comparison_folds``, plus the classical LoG detector
(:mod:`cmbstudy.study.tables.classical_floor`) as the floor a learned detector has
to clear. Each row holds pooled precision, recall, F1 and false positives per
subject with a bootstrap 95% CI over subjects, the paper's figure for the same
method, the number of weights and the inference seconds per subject.

Everything is computed from the per-subject lesion counts that
``cmbstudy evaluate`` writes (``RUN/eval-val.json``), so the CIs of one fold
equal those of the evaluation report and several folds pool their subjects.
The notebooks' comparison (with the classical floor, the ordering and recall by
lesion size) is :mod:`cmbstudy.study.tables.comparison`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ...config import Profile
from ...errors import ConfigError, InputError
from ...evaluation.report import froc_from_json
from ...evaluation.scores import FrocCurve, merge_froc_curves
from ...evaluation.stats import bootstrap_detection_ci
from ...formatting import format_value
from ..paper import METRICS
from ..runs import load_run, run_name
from .format import CLASSICAL, ComparedRow, compare_with_paper, method_label

__all__ = [
    "SUBSETS",
    "MethodResult",
    "comparison_variants",
    "make_method_result",
    "load_method_results",
    "compute_method_table",
    "format_method_table",
    "find_best_baseline",
    "method_froc_curves",
    "method_operating_points",
]

#: Lesion subsets of the tables: "all" (Table 2) and "small" (<= 3 mm, Table 4).
SUBSETS: tuple[str, ...] = ("all", "small")

_COUNT_KEYS = {"all": ("n_tp", "n_fp", "n_fn"), "small": ("n_tp_small", "n_fp_small", "n_fn_small")}


@dataclass(frozen=True)
class MethodResult:
    """The test-set results of one method, pooled over the comparison folds.

    Attributes:
        name: variant name (``Profile.variants``) or :data:`CLASSICAL`.
        per_subject: one dict per test subject with lesion counts n_tp, n_fp, n_fn and
            n_tp_small, n_fp_small, n_fn_small (``eval-test.json`` ``per_subject`` rows).
        froc: FROC curve over those subjects; None without reference lesions.
        n_params: trainable weights; None for the classical detector.
        seconds_per_subject: inference time per subject (s), post-processing included.
        folds: folds pooled.
        n_bootstrap, seed: bootstrap settings of the CIs (the evaluation's).
        note: caveat printed in the table.
    """

    name: str
    per_subject: tuple[dict[str, Any], ...]
    froc: FrocCurve | None
    n_params: int | None
    seconds_per_subject: float
    folds: tuple[int, ...]
    n_bootstrap: int = 1000
    seed: int = 0
    note: str = ""

    @property
    def label(self) -> str:
        """Row label of the method."""
        return method_label(self.name)

    def counts(self, subset: str = "all") -> np.ndarray:
        """(n_subjects, 3) int lesion counts (tp, fp, fn) of ``subset`` ("all" or "small").

        Raises:
            ConfigError: unknown subset.
        """
        if subset not in _COUNT_KEYS:
            raise ConfigError(f"unknown lesion subset {subset!r}: use one of {', '.join(SUBSETS)}")
        keys = _COUNT_KEYS[subset]
        return np.array([[int(row[k]) for k in keys] for row in self.per_subject], dtype=np.int64).reshape(-1, 3)


def comparison_variants(profile: Profile) -> list[str]:
    """The variants of Table 2 in the study: ``study.main`` then ``study.baselines`` (no duplicates)."""
    return list(dict.fromkeys([profile.study.main, *profile.study.baselines]))


def make_method_result(name: str, evaluations: Sequence[Mapping[str, Any]], folds: Sequence[int],
                       n_params: int | None, seconds_per_subject: Sequence[float], note: str = "") -> MethodResult:
    """Pool the ``eval-val.json`` payloads of one method's folds.

    Args:
        name: variant name.
        evaluations: one ``EvaluationReport.to_json()`` dict per fold (disjoint subjects).
        folds: the folds, in the same order.
        n_params: trainable weights of the network.
        seconds_per_subject: per fold (``pred-val/prediction.json``); their mean is kept.
        note: caveat for the table.

    Raises:
        InputError: no evaluation, or one lacks ``per_subject`` rows.
    """
    if not evaluations:
        raise InputError(f"method {name!r} has no evaluation: run `cmbstudy evaluate` on its pred-val first")
    rows: list[dict[str, Any]] = []
    curves, refs, subjects = [], [], []
    for evaluation in evaluations:
        if not evaluation.get("per_subject"):
            raise InputError(f"the evaluation of {name!r} has no per_subject rows: rerun `cmbstudy evaluate`")
        rows += [dict(row) for row in evaluation["per_subject"]]
        curve = froc_from_json(evaluation.get("froc_curve"))
        if curve is not None:
            curves.append(curve)
            refs.append(int(evaluation["summary"]["n_ref"]))
            subjects.append(int(evaluation["summary"]["n_subjects"]))
    settings = evaluations[0].get("settings", {})
    return MethodResult(
        name=name, per_subject=tuple(rows), froc=merge_froc_curves(curves, refs, subjects) if curves else None,
        n_params=n_params, seconds_per_subject=float(np.mean(seconds_per_subject)), folds=tuple(folds),
        n_bootstrap=int(settings.get("n_bootstrap", 1000)), seed=int(settings.get("seed", 0)), note=note,
    )


def load_method_results(results_dir: str | Path, variants: Sequence[str], folds: Sequence[int]
                        ) -> tuple[dict[str, MethodResult], dict[str, list[str]]]:
    """Read every (variant, fold) run of ``RESULTS/runs`` (:func:`cmbstudy.study.runs.load_run`).

    Returns:
        (variant -> pooled result for the variants with every fold present,
         variant -> names of its missing runs for the others).
    """
    found: dict[str, MethodResult] = {}
    missing: dict[str, list[str]] = {}
    for variant in variants:
        records, absent = [], []
        for fold in folds:
            try:
                records.append(load_run(results_dir, run_name(variant, fold)))
            except InputError:
                absent.append(run_name(variant, fold))
        if absent:
            missing[variant] = absent
            continue
        found[variant] = make_method_result(
            variant, [r.evaluation for r in records], [r.fold for r in records], records[0].n_params,
            [r.seconds_per_subject for r in records],
        )
    return found, missing


def compute_method_table(results: Mapping[str, MethodResult], paper_table: Mapping[str, Mapping[str, float]],
                         subset: str = "all", missing: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """One row per method: pooled metrics with bootstrap 95% CIs, the paper's figures, size and speed.

    Args:
        results: method name -> result, in row order.
        paper_table: :data:`cmbstudy.study.paper.TABLE2` or ``TABLE4`` (keyed by variant name).
        subset: "all" (Table 2) or "small" (Table 4, lesions <= 3 mm).
        missing: variant -> its missing runs: a row of NaN saying so.

    Returns:
        index: method label; columns for each metric m of ``paper.METRICS``: m, m_ci_low, m_ci_high,
        m_paper; then n_subjects, n_tp, n_fp, n_fn, n_params, seconds_per_subject, note.

    Raises:
        ConfigError: unknown subset.
    """
    records = []
    for name, result in results.items():
        counts = result.counts(subset)
        record: dict[str, Any] = {"method": result.label}
        if counts.shape[0]:
            ci = bootstrap_detection_ci(counts, n_resamples=result.n_bootstrap, seed=result.seed)
        else:
            ci = {m: (np.nan, np.nan, np.nan) for m in METRICS}
        paper = paper_table.get(name, {})
        for metric in METRICS:
            estimate, lo, hi = ci[metric]
            record.update({metric: estimate, f"{metric}_ci_low": lo, f"{metric}_ci_high": hi,
                           f"{metric}_paper": float(paper.get(metric, np.nan))})
        tp, fp, fn = counts.sum(axis=0) if counts.size else (0, 0, 0)
        notes = [result.note] if result.note else []
        if not paper:
            notes.insert(0, "not in the paper's table")
        record.update({"n_subjects": counts.shape[0], "n_tp": int(tp), "n_fp": int(fp), "n_fn": int(fn),
                       "n_params": np.nan if result.n_params is None else result.n_params,
                       "seconds_per_subject": result.seconds_per_subject, "note": "; ".join(notes)})
        records.append(record)
    for name, runs in (missing or {}).items():
        record = {"method": method_label(name), "note": f"runs missing: {', '.join(runs)}"}
        paper = paper_table.get(name, {})
        record.update({f"{m}_paper": float(paper.get(m, np.nan)) for m in METRICS})
        records.append(record)
    if subset not in _COUNT_KEYS:
        raise ConfigError(f"unknown lesion subset {subset!r}: use one of {', '.join(SUBSETS)}")
    columns = [c for m in METRICS for c in (m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_paper")]
    columns += ["n_subjects", "n_tp", "n_fp", "n_fn", "n_params", "seconds_per_subject", "note"]
    return pd.DataFrame.from_records(records, index="method", columns=["method", *columns]) if records else \
        pd.DataFrame(columns=columns, index=pd.Index([], name="method"))


def format_method_table(table: pd.DataFrame, dataset_label: str) -> pd.DataFrame:
    """Readable Table 2 / 4 (:func:`cmbstudy.study.tables.format.compare_with_paper`): per metric the paper's
    figure, ours and our 95% CI, then subjects, parameters, seconds per subject and a note.

    Raises:
        InputError: ``dataset_label`` is empty.
    """
    ours_columns = [c for m in METRICS for c in (m, f"{m}_ci_low", f"{m}_ci_high")]
    rows = [ComparedRow(label, {c: table.loc[label, c] for c in ours_columns},
                        {m: table.loc[label, f"{m}_paper"] for m in METRICS}) for label in table.index]
    extra = {
        "subjects": [format_value(v, 0) for v in table["n_subjects"].astype(float)],
        "parameters": [f"{int(v):,}" if np.isfinite(v) else "n/a" for v in table["n_params"].astype(float)],
        "s / subject": [format_value(v, 2) for v in table["seconds_per_subject"].astype(float)],
        "note": list(table["note"].fillna("")),
    }
    return compare_with_paper(rows, dataset_label, METRICS, extra=extra, index_name=table.index.name or "")


def find_best_baseline(table: pd.DataFrame, main_label: str, metric: str = "f1") -> str | None:
    """Label of the row other than ``main_label`` and the classical detector with the highest ``metric``.

    Returns:
        None when no such row has a finite value.
    """
    others = table.drop(index=[main_label, method_label(CLASSICAL)], errors="ignore")[metric].astype(float)
    others = others[np.isfinite(others)]
    return None if others.empty else str(others.idxmax())


def method_froc_curves(results: Mapping[str, MethodResult]) -> dict[str, FrocCurve]:
    """Label -> FROC curve of every method that has one (:func:`cmbstudy.figures.froc.plot_froc` draws them)."""
    return {r.label: r.froc for r in results.values() if r.froc is not None}


def method_operating_points(table: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Label -> (FP/subject, recall) of every row of a method table: where each method operates on the FROC."""
    return {str(label): (float(table.loc[label, "fp_per_subject"]), float(table.loc[label, "recall"]))
            for label in table.index}
