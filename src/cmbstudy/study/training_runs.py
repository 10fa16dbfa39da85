"""Training one run of the study and scoring it on the test set: what notebook 03 runs once per training run.

Writes ``RESULTS/runs/<run_name>/`` (:mod:`cmbstudy.study.runs` describes the
layout): the training files with the operating point chosen on the run's
validation subjects, and the test set's predictions and their evaluation with
both matching rules; a run on one modality is tested on the test subjects of
the other modality (Table 5).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import Profile, resolve_variant
from ..data.datasets import load_subjects
from ..data.outputs import write_json
from ..data.run_folder import HISTORY
from ..formatting import as_float
from ..inference.model_store import SECOND_LOOK
from ..inference.predict import predict_dataset
from ..models.layers import is_volumetric
from ..models.registry import model_from_config
from ..training.plan import SAMPLE_KINDS
from ..training.run import train_fold
from .paper import TABLE2
from .runs import (
    PHASES,
    PHASES_FILE,
    TEST_EVALUATION,
    TEST_EVALUATION_TWO_STAGE,
    TEST_EVALUATION_VALDO,
    TEST_PREDICTIONS,
    TEST_PREDICTIONS_TWO_STAGE,
    RunRecord,
    dataset_label,
    describe_missing_modality,
    evaluate_run_predictions,
    load_run,
    run_name,
    run_path,
)
from .tables.format import ComparedRow, compare_with_paper, summary_scores
from .test_set import TestSet, resolve_test_set

__all__ = ["test_subjects_of_run", "sample_counts", "train_and_evaluate", "RunReport", "train_run_report",
           "is_volumetric_variant"]

_PER_SUBJECT_COLUMNS = ["n_ref", "n_pred", "n_tp", "n_fp", "n_fn", "precision", "recall", "f1"]
_VALDO_KEYS = ("precision", "recall", "f1", "fp_per_subject", "median_f1", "mean_abs_count_difference")


def test_subjects_of_run(test_set: TestSet, modality: str | None) -> list[str]:
    """The test subjects a run is scored on: all of them, or those not scanned with its training ``modality``."""
    if modality is None:
        return list(test_set.subject_ids)
    wanted = set(test_set.subject_ids)
    return [s.subject_id for s in load_subjects(test_set.root) if s.subject_id in wanted and s.modality != modality]


def sample_counts(history: pd.DataFrame) -> pd.DataFrame:
    """Training samples of each kind summed over the epochs of ``history.csv``, and their share."""
    counts = pd.Series({kind: int(history[f"crops_{kind}"].fillna(0).sum()) if f"crops_{kind}" in history else 0
                        for kind in SAMPLE_KINDS}, name="samples")
    total = int(counts.sum())
    return pd.DataFrame({"samples": counts, "share": counts / total if total else float("nan")}).rename_axis("kind")


def train_and_evaluate(
    profile: Profile,
    variant: str,
    fold: int,
    data_root: Path | str,
    results_dir: Path | str,
    modality: str | None = None,
    device: str = "auto",
    progress: bool = True,
    test_root: Path | str | None = None,
    valdo: bool = True,
) -> RunRecord:
    """Train one run of the study, then predict and evaluate the test set with both rules.

    Writes ``RESULTS/runs/<run_name>/`` (replacing that run only): the training
    files and ``operating_point.json`` (chosen on the fold's validation
    subjects), ``pred-test/``, ``eval-test.json`` (paper rule: the single stage, as the paper
    has it) and, with ``valdo``, ``eval-test-valdo.json`` (VALDO rule); where the run trained a
    second look, also ``pred-test-2stage/`` and ``eval-test-2stage.json``, from the same network pass. A modality run is tested on
    the test subjects of the other modality. ``phases.json`` holds the seconds of each phase of
    :data:`~cmbstudy.study.runs.PHASES` (training, mining, validation, calibration, test inference, reading and
    writing the test subjects, scoring, and the rest).

    Args:
        profile: the study profile; the variant's overrides are applied here.
        variant: a name of ``profile.variants``.
        fold: cross-validation fold (0-based).
        modality: "gre" / "swi" to train on that modality only; None (or "all"): every subject.
        test_root: the test cohort; None (or ``data_root``): a held-out split of ``data_root``
            (:func:`cmbstudy.study.test_set.resolve_test_set`).
        valdo: evaluate the test set with the VALDO rule too.

    Raises:
        ConfigError: unknown variant or modality, fold out of range.
        InputError: unreadable dataset, too few subjects of ``modality``.
    """
    modality = None if modality in (None, "all") else modality
    out = run_path(results_dir, variant, fold, modality)
    resolved = resolve_variant(profile, variant)
    data_root = Path(data_root)
    started = time.perf_counter()
    test_set = resolve_test_set(profile, data_root, test_root or data_root, results_dir)
    (out / PHASES_FILE).unlink(missing_ok=True)
    result = train_fold(resolved, data_root, fold, out, device=device, overwrite=True, progress=progress,
                        modality=modality, exclude=test_set.excluded_from_training)
    trained = time.perf_counter()
    two_stage = (out / SECOND_LOOK).is_file()
    shutil.rmtree(out / TEST_PREDICTIONS_TWO_STAGE, ignore_errors=True)
    (out / TEST_EVALUATION_TWO_STAGE).unlink(missing_ok=True)
    # one network pass: the run's own rule (two stages where it trained a second look), and the paper's single stage
    first = out / (TEST_PREDICTIONS_TWO_STAGE if two_stage else TEST_PREDICTIONS)
    predicted = predict_dataset(out, test_set.root, first, device=device, overwrite=True, progress=progress,
                                split="all", subject_ids=test_subjects_of_run(test_set, modality),
                                single_stage_out=out / TEST_PREDICTIONS if two_stage else None)
    scoring = time.perf_counter()
    evaluate_run_predictions(out / TEST_PREDICTIONS, test_set.root, resolved, "paper", out / TEST_EVALUATION)
    if two_stage:
        evaluate_run_predictions(out / TEST_PREDICTIONS_TWO_STAGE, test_set.root, resolved, "paper",
                                 out / TEST_EVALUATION_TWO_STAGE)
    (out / TEST_EVALUATION_VALDO).unlink(missing_ok=True)
    if valdo:
        evaluate_run_predictions(out / TEST_PREDICTIONS, test_set.root, resolved, "valdo",
                                 out / TEST_EVALUATION_VALDO)
    done = time.perf_counter()
    history = pd.read_csv(out / HISTORY)
    part = {k: float(history[c].fillna(0).sum()) if c in history else 0.0
            for k, c in (("mining", "mining_seconds"), ("validation", "validation_seconds"))}
    inference = predicted.seconds_per_subject * predicted.n_subjects if predicted.n_subjects else 0.0
    phases = {"training": float(history["seconds"].sum()) - part["mining"] - part["validation"], **part,
              "calibration": result.calibration_seconds, "test inference": inference,
              "test reading and writing": scoring - trained - inference, "scoring": done - scoring}
    phases["other"] = (done - started) - sum(phases.values())  # reading the cohort, preprocessing, set-up
    write_json(out / PHASES_FILE, {phase: round(float(phases[phase]), 2) for phase in PHASES})
    return load_run(results_dir, out.name)


@dataclass(frozen=True)
class RunReport:
    """What notebook 03 shows of one training run.

    Attributes:
        record: the finished run; None when the dataset cannot train it (``note`` says why).
        overview: network, fold, training subjects and parameters.
        history: ``history.csv`` (None without a run).
        operating_point: the threshold and minimum size chosen on the validation subjects, with
            the validation scores there (None without a run).
        samples: training samples of each kind (lesion, hard negative, brain edge, other) over all
            epochs, with their share (None without a run).
        table: the run's test scores beside the paper's figure for the same method.
        per_subject: test counts per subject; valdo: the same predictions under the VALDO rule.
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
    operating_point: pd.DataFrame | None
    samples: pd.DataFrame | None
    table: pd.DataFrame
    per_subject: pd.DataFrame | None
    valdo: pd.DataFrame | None


def train_run_report(profile: Profile, variant: str, fold: int, data_root: Path | str, results_dir: Path | str,
                     modality: str = "all", device: str = "auto", test_root: Path | str | None = None) -> RunReport:
    """Train and evaluate one run (:func:`train_and_evaluate`) unless the dataset cannot train it; report it.

    Raises:
        ConfigError: unknown variant or modality, fold out of range.
        InputError: unreadable dataset.
    """
    resolved = resolve_variant(profile, variant)
    name = run_name(variant, fold, None if modality == "all" else modality)
    test_set = resolve_test_set(profile, data_root, test_root or data_root, results_dir)
    why_not = describe_missing_modality(data_root, modality, profile.train.n_folds, test_set)
    # the VALDO rule is read for the main network at the comparison fold (notebook 12)
    with_valdo = variant == profile.study.main and fold == profile.study.comparison_folds[0] and modality == "all"
    record = None if why_not else train_and_evaluate(profile, variant, fold, data_root, results_dir,
                                                      modality=modality, device=device, progress=False,
                                                      test_root=test_set.root, valdo=with_valdo)
    summary = record.evaluation["summary"] if record else None
    valdo = None
    overview = pd.Series({"network": resolved.model.name, "fold": fold, "trained on": modality,
                          "parameters": record.n_params if record else None}, name=name).to_frame()
    point = None
    if record is not None:
        if record.evaluation_valdo is not None:
            valdo_summary = record.evaluation_valdo["summary"]
            valdo = pd.Series({key: valdo_summary.get(key) for key in _VALDO_KEYS}, name="VALDO rule").to_frame()
        chosen, validation = record.operating_point, dict(record.validation)
        second = validation.pop("second_look", None) or {}
        point = pd.Series({"threshold": chosen.get("threshold"), "min_voxels": chosen.get("min_voxels"),
                           **{f"validation {k}": v for k, v in validation.items()},
                           "second-look threshold": chosen.get("second_look"),
                           **{f"validation {k}, two stages": v for k, v in second.items() if k != "threshold"}},
                          name="operating point").to_frame()
    history = pd.read_csv(record.run_dir / HISTORY) if record else None
    return RunReport(
        name=name, record=record, note=f"**Run {name} is not trained:** {why_not}." if why_not else "",
        epochs=record.result["epochs"] if record else 0,
        train_seconds=record.train_seconds if record else math.nan,
        f1=as_float((summary or {}).get("f1")), fp_per_subject=as_float((summary or {}).get("fp_per_subject")),
        overview=overview,
        history=history, operating_point=point, samples=sample_counts(history) if history is not None else None,
        table=compare_with_paper([ComparedRow(name, summary_scores(summary) if summary else None,
                                              TABLE2.get(variant, {}))]
                                 + ([ComparedRow(f"{name}, with the second look",
                                                 summary_scores(record.evaluation_two_stage["summary"]), {})]
                                    if record is not None and record.evaluation_two_stage else []),
                                 dataset_label(test_set.root)),
        per_subject=(pd.DataFrame(record.evaluation["per_subject"]).set_index("subject_id")[_PER_SUBJECT_COLUMNS]
                     if record else None),
        valdo=valdo,
    )


def is_volumetric_variant(profile: Profile, variant: str) -> bool:
    """Whether the variant's network is volumetric: a run of one trained the quick study's longest run (Dou 2016's
    3D CNN, 694 s against 320-491 s for each 2.5D run, two at a time on 2 cores), so the runner starts it first."""
    return is_volumetric(model_from_config(resolve_variant(profile, variant).model))
