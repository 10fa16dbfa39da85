"""Training one run of the study and evaluating it: what notebook 03 runs once per training run.

Writes ``RESULTS/runs/<run_name>/`` (:mod:`cmbstudy.study.runs` describes the
layout): the training files, the validation predictions and their evaluation
with both matching rules; a run on one modality also predicts and evaluates the
other modality (Table 5).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import Profile, resolve_variant
from ..data.datasets import load_subjects
from ..data.io import write_text_atomically
from ..data.prediction_folder import PREDICTION_INFO
from ..data.run_folder import HISTORY
from ..formatting import as_float
from ..inference.predict import predict_dataset
from ..training.run import train_fold
from .paper import TABLE2
from .runs import (
    TEST_EVALUATION,
    TEST_PREDICTIONS,
    VAL_EVALUATION,
    VAL_EVALUATION_VALDO,
    VAL_PREDICTIONS,
    RunRecord,
    dataset_label,
    describe_missing_modality,
    evaluate_run_predictions,
    load_run,
    run_name,
    run_path,
)
from .tables.format import ComparedRow, compare_with_paper, summary_scores

__all__ = ["train_and_evaluate", "RunReport", "train_run_report"]

_PER_SUBJECT_COLUMNS = ["n_ref", "n_pred", "n_tp", "n_fp", "n_fn", "precision", "recall", "f1"]
_VALDO_KEYS = ("precision", "recall", "f1", "fp_per_subject", "median_f1", "mean_abs_count_difference")


def _predict_other_modality(run_dir: Path, data_root: Path, modality: str, device: str, progress: bool) -> Path:
    """Predict every subject of ``data_root`` not scanned with ``modality`` into ``RUN/pred-test``."""
    keep = [s.subject_id for s in load_subjects(Path(data_root)) if s.modality != modality]
    out = run_dir / TEST_PREDICTIONS
    predict_dataset(run_dir, data_root, out, device=device, overwrite=True, progress=progress, split="all",
                    subject_ids=keep)
    info = json.loads((out / PREDICTION_INFO).read_text())
    info["split"] = f"modality != {modality}"
    write_text_atomically(out / PREDICTION_INFO, json.dumps(info, indent=2))
    return out


def train_and_evaluate(
    profile: Profile,
    variant: str,
    fold: int,
    data_root: Path | str,
    results_dir: Path | str,
    modality: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> RunRecord:
    """Train one run of the study, predict its validation subjects and evaluate them with both rules.

    Writes ``RESULTS/runs/<run_name>/`` (replacing that run only): the training
    files, ``pred-val/``, ``eval-val.json`` (paper rule) and ``eval-val-valdo.json``
    (VALDO rule); a modality run also predicts every subject of the other
    modality into ``pred-test/`` and evaluates it (``eval-test.json``, paper rule).

    Args:
        profile: the study profile; the variant's overrides are applied here.
        variant: a name of ``profile.variants``.
        fold: cross-validation fold (0-based).
        modality: "gre" / "swi" to train on that modality only; None (or "all"): every subject.

    Raises:
        ConfigError: unknown variant or modality, fold out of range.
        InputError: unreadable dataset, too few subjects of ``modality``.
    """
    modality = None if modality in (None, "all") else modality
    out = run_path(results_dir, variant, fold, modality)
    resolved = resolve_variant(profile, variant)
    data_root = Path(data_root)
    train_fold(resolved, data_root, fold, out, device=device, overwrite=True, progress=progress,
               modality=modality)
    predict_dataset(out, data_root, out / VAL_PREDICTIONS, device=device, overwrite=True, progress=progress,
                    split="val")
    evaluate_run_predictions(out / VAL_PREDICTIONS, data_root, resolved, "paper", out / VAL_EVALUATION)
    evaluate_run_predictions(out / VAL_PREDICTIONS, data_root, resolved, "valdo", out / VAL_EVALUATION_VALDO)
    (out / TEST_EVALUATION).unlink(missing_ok=True)
    if modality is not None:
        _predict_other_modality(out, data_root, modality, device, progress)
        evaluate_run_predictions(out / TEST_PREDICTIONS, data_root, resolved, "paper", out / TEST_EVALUATION)
    return load_run(results_dir, out.name)


@dataclass(frozen=True)
class RunReport:
    """What notebook 03 shows of one training run.

    Attributes:
        record: the finished run; None when the dataset cannot train it (``note`` says why).
        overview: network, fold, training subjects and parameters.
        history: ``history.csv`` (None without a run).
        table: the run's validation scores beside the paper's figure for the same method.
        per_subject: validation counts per subject; valdo: the same predictions under the VALDO rule.
    """

    name: str
    record: RunRecord | None
    note: str
    epochs: int
    train_seconds: float
    f1: float
    fp_per_subject: float
    overview: pd.DataFrame
    history: pd.DataFrame | None
    table: pd.DataFrame
    per_subject: pd.DataFrame | None
    valdo: pd.DataFrame | None


def train_run_report(profile: Profile, variant: str, fold: int, data_root: Path | str, results_dir: Path | str,
                     modality: str = "all", device: str = "auto") -> RunReport:
    """Train and evaluate one run (:func:`train_and_evaluate`) unless the dataset cannot train it; report it.

    Raises:
        ConfigError: unknown variant or modality, fold out of range.
        InputError: unreadable dataset.
    """
    resolved = resolve_variant(profile, variant)
    name = run_name(variant, fold, None if modality == "all" else modality)
    why_not = describe_missing_modality(data_root, modality, profile.train.n_folds)
    record = None if why_not else train_and_evaluate(profile, variant, fold, data_root, results_dir,
                                                      modality=modality, device=device, progress=False)
    summary = record.evaluation["summary"] if record else None
    overview = pd.Series({"network": resolved.model.name, "fold": fold, "trained on": modality,
                          "parameters": record.n_params if record else None}, name=name).to_frame()
    valdo = None
    if record is not None:
        valdo_summary = record.evaluation_valdo["summary"]
        valdo = pd.Series({key: valdo_summary.get(key) for key in _VALDO_KEYS}, name="VALDO rule").to_frame()
    return RunReport(
        name=name, record=record, note=f"**Run {name} is not trained:** {why_not}." if why_not else "",
        epochs=record.result["epochs"] if record else 0,
        train_seconds=record.train_seconds if record else math.nan,
        f1=as_float((summary or {}).get("f1")), fp_per_subject=as_float((summary or {}).get("fp_per_subject")),
        overview=overview,
        history=pd.read_csv(record.run_dir / HISTORY) if record else None,
        table=compare_with_paper([ComparedRow(name, summary_scores(summary) if summary else None,
                                              TABLE2.get(variant, {}))], dataset_label(data_root)),
        per_subject=(pd.DataFrame(record.evaluation["per_subject"]).set_index("subject_id")[_PER_SUBJECT_COLUMNS]
                     if record else None),
        valdo=valdo,
    )
