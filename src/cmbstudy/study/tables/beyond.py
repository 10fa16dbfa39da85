"""Beyond the paper (notebook 12): what the false positives are, results per site and modality,
the VALDO rule beside the paper's, bootstrap intervals, inference times, and the time of the build.

Everything is the main network's comparison-fold model on the test set. The
false positives are named after their kind and the missed CMBs binned by size
(:mod:`cmbstudy.study.tables.errors`). The subjects and slices the figures show
come from :mod:`cmbstudy.study.examples`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ...config import Profile
from ...data.datasets import Subject, load_subjects
from ...data.prediction_folder import PREDICTION_INFO
from ...data.run_folder import RESULT
from ...errors import InputError
from ...evaluation.scores import DETECTION_METRICS, summarize_detection
from ...formatting import as_float
from ..paper import INFERENCE_SECONDS, TABLE2
from ..runs import (
    PHASES,
    PHASES_FILE,
    RUNS_DIR,
    TEST_PREDICTIONS,
    TIMINGS_FILE,
    dataset_label,
    load_runs,
    run_name,
    test_report,
)
from .errors import (
    compute_fp_mimic_table,
    summarize_error_kinds,
    summarize_fp_mimics,
    summarize_misses_by_size,
)
from .format import ComparedRow, compare_with_paper, summary_scores

__all__ = [
    "RULE_METRICS",
    "summarize_by_group",
    "load_inference_times",
    "StudyTimings",
    "load_study_timings",
    "BeyondThePaper",
    "summarize_beyond",
]

#: The rows of the rule table: pooled scores, then the VALDO aggregates.
RULE_METRICS: tuple[str, ...] = (*DETECTION_METRICS, "median_f1", "f1_q1", "f1_q3", "median_abs_count_difference",
                                  "mean_abs_count_difference")
_PAPER_HARDWARE = "paper (RTX A5000 Ada)"


def summarize_by_group(per_subject: pd.DataFrame, subjects: Sequence[Subject], by: str) -> pd.DataFrame:
    """Pooled precision, recall, F1 and FP per subject within each site or modality.

    Args:
        per_subject: one row per subject with subject_id, n_tp, n_fp, n_fn, n_ref
            (``EvaluationReport.per_subject``).
        subjects: the dataset's subjects (their ``site`` and ``modality``).
        by: "site" or "modality".

    Returns:
        One row per group (sorted): n_subjects, n_ref, n_tp, n_fp, n_fn, precision, recall, f1, fp_per_subject.

    Raises:
        InputError: ``by`` is not an attribute, or a subject of ``per_subject`` is not in ``subjects``.
    """
    if by not in ("site", "modality"):
        raise InputError(f"group by {by!r}: use 'site' or 'modality'")
    attribute = {s.subject_id: getattr(s, by) for s in subjects}
    rows = pd.DataFrame(per_subject)
    unknown = sorted(set(rows["subject_id"]) - set(attribute))
    if unknown:
        raise InputError(f"subjects {unknown[:5]} are not in the dataset: evaluate against the same data root")
    out = []
    for group, part in rows.groupby(rows["subject_id"].map(attribute), sort=True):
        summary = summarize_detection(part[["n_tp", "n_fp", "n_fn"]].to_numpy())
        out.append({by: group, "n_subjects": summary["n_subjects"], "n_ref": int(part["n_ref"].sum()),
                    **{k: summary[k] for k in ("n_tp", "n_fp", "n_fn", "precision", "recall", "f1",
                                               "fp_per_subject")}})
    return pd.DataFrame(out).set_index(by)


def load_inference_times(results_dir: Path) -> pd.DataFrame:
    """Inference time of every run's test predictions, the paper's figure last.

    Reads ``RESULTS/runs/<run>/pred-test/prediction.json`` (model + post-processing per
    subject, preprocessing excluded, and the device) and ``result.json`` (parameters).

    Returns:
        One row per run (sorted by name): run, model, device, n_subjects, seconds_per_subject,
        n_params; then the paper's row (``INFERENCE_SECONDS`` on an RTX A5000 Ada).
        The device column tells which rows may be compared.

    Raises:
        InputError: a prediction.json that is not JSON.
    """
    rows = []
    for info in sorted(Path(results_dir, RUNS_DIR).glob(f"*/{TEST_PREDICTIONS}/{PREDICTION_INFO}")):
        run = info.parent.parent
        try:
            data = json.loads(info.read_text())
            result = json.loads((run / RESULT).read_text()) if (run / RESULT).is_file() else {}
        except json.JSONDecodeError as exc:
            raise InputError(f"{info} or its run's result.json is not JSON ({exc}): rerun that step") from exc
        rows.append({"run": run.name, "model": data.get("model"), "device": data.get("device"),
                     "n_subjects": data.get("n_subjects"),
                     "seconds_per_subject": as_float(data.get("seconds_per_subject")),
                     "n_params": result.get("n_params")})
    rows.append({"run": _PAPER_HARDWARE, "model": "rlk_unet_cbam", "device": "RTX A5000 Ada (paper)",
                 "n_subjects": 72, "seconds_per_subject": INFERENCE_SECONDS, "n_params": None})
    return pd.DataFrame(rows).set_index("run")


@dataclass(frozen=True)
class StudyTimings:
    """The runner's ``RESULTS/study_timings.tsv``: the seconds of the latest run of each step.

    Attributes:
        table: per step, how many runs it made and their seconds; note: markdown when there is no file.
        training_minutes, study_minutes: the training step's minutes and all steps' minutes.
        runs: per training run, where its notebook's seconds went, by phase
            (:data:`~cmbstudy.study.runs.PHASES`: training, mining, validation, calibration, test
            inference, reading and writing the test subjects, scoring; "other": reading the data,
            preprocessing, starting the kernel).
    """

    table: pd.DataFrame
    training_minutes: float
    study_minutes: float
    note: str
    runs: pd.DataFrame


def _run_time_breakdown(results_dir: Path, instances: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, seconds in zip(instances["instance"], instances["seconds"]):
        run = Path(results_dir) / RUNS_DIR / str(name)
        result = run / RESULT
        prediction = run / TEST_PREDICTIONS / PREDICTION_INFO
        if not (result.is_file() and prediction.is_file()):
            continue
        phases = run / PHASES_FILE
        if phases.is_file():  # timed phase by phase by the run itself; the kernel's start and the report remain
            row = {phase: as_float(value) for phase, value in json.loads(phases.read_text()).items() if phase in PHASES}
            row["other"] = float(seconds) - sum(v for k, v in row.items() if k != "other")
        else:  # a run from before its phases were timed: training, test prediction and the rest
            training = as_float(json.loads(result.read_text()).get("seconds"))
            info = json.loads(prediction.read_text())
            predicting = as_float(info.get("seconds_per_subject")) * int(info.get("n_subjects") or 0)
            row = {"training": training, "test inference": predicting, "other": float(seconds) - training - predicting}
        rows.append({"run": name, **row, "notebook": float(seconds)})
    return pd.DataFrame(rows, columns=["run", *PHASES, "notebook"]).set_index("run").dropna(axis=1, how="all").round(1)


def load_study_timings(results_dir: Path | str) -> StudyTimings:
    """The timings of the study's steps (empty, with a note, when the notebooks ran outside the runner)."""
    path = Path(results_dir) / TIMINGS_FILE
    timings = (pd.read_csv(path, sep="\t") if path.is_file()
               else pd.DataFrame(columns=["step", "instance", "seconds"]))
    steps = timings[timings["step"] != "total"]
    table = steps.groupby("step", sort=False)["seconds"].agg(["count", "sum"]).rename(
        columns={"count": "runs", "sum": "seconds"}).round(1)
    note = "**No timings**: this notebook was run outside `cmbstudy study`." if timings.empty else ""
    training = steps[steps["step"] == "03_training"]
    return StudyTimings(table, float(training["seconds"].sum()) / 60, float(steps["seconds"].sum()) / 60, note,
                        _run_time_breakdown(Path(results_dir), training))


def _rule_scores(summary: Mapping[str, Any] | None) -> dict[str, float]:
    summary = summary or {}
    q1, q3 = summary.get("iqr_f1") or (None, None)
    return {**summary_scores(summary), "median_f1": as_float(summary.get("median_f1")),
            "f1_q1": as_float(q1), "f1_q3": as_float(q3),
            "median_abs_count_difference": as_float(summary.get("median_abs_count_difference")),
            "mean_abs_count_difference": as_float(summary.get("mean_abs_count_difference"))}


@dataclass(frozen=True)
class BeyondThePaper:
    """What notebook 12 shows, on the test-set predictions of the main network at the comparison fold.

    Attributes:
        notes: markdown on missing runs and on a dataset without mimic labels ("" when neither).
        n_subjects: subjects evaluated; scores: pooled paper-rule :func:`summary_scores`.
        fp: every false positive named after its mimic, with its distance to the brain's edge;
            fp_summary: per mimic type; error_kinds: per kind, brain edge first; fp_share_vein,
            fp_share_edge: the shares on veins and at the edge (NaN without false positives).
        misses: reference CMBs by diameter, found and missed.
        by_site, by_modality: pooled scores per group (None without runs).
        valdo: the VALDO-rule aggregates (:data:`RULE_METRICS`); rule_table: both rules beside the paper;
            ci_table: our pooled scores with their intervals beside the paper's.
        times: inference seconds of every run; main_seconds, main_device: the main network's.
        timings: the runner's step timings.
    """

    dataset: str
    notes: str
    n_subjects: int
    scores: Mapping[str, float]
    fp: pd.DataFrame
    fp_summary: pd.DataFrame
    error_kinds: pd.DataFrame
    fp_share_vein: float
    fp_share_edge: float
    misses: pd.DataFrame
    by_site: pd.DataFrame | None
    by_modality: pd.DataFrame | None
    valdo: Mapping[str, float]
    rule_table: pd.DataFrame
    ci_table: pd.DataFrame
    times: pd.DataFrame
    main_seconds: float
    main_device: str
    timings: StudyTimings


def _share(summary: pd.DataFrame, kind: str) -> float:
    return float(summary.loc[kind, "share"]) if kind in summary.index else math.nan


def summarize_beyond(results_dir: Path | str, test_root: Path | str, profile: Profile) -> BeyondThePaper:
    """Everything notebook 12 shows, from ``study.main`` at the first comparison fold, on the test set."""
    main = profile.study.main
    name = run_name(main, profile.study.comparison_folds[0])
    runs, missing = load_runs(results_dir, [name])
    report = test_report(results_dir, name) if runs else None
    valdo = test_report(results_dir, name, rule="valdo") if runs else None
    per_subject = pd.DataFrame(report.per_subject if report else [],
                               columns=["subject_id", "n_ref", "n_tp", "n_fp", "n_fn"])
    subjects = load_subjects(Path(test_root))
    notes = []
    if missing:
        notes.append(f"**Runs not found** (not trained by this profile, or notebook 03 not run): {', '.join(missing)}.")
    has_mimics = any("mimic" in s.extra_paths for s in subjects)
    if not has_mimics:
        notes.append(f"**No mimic labels** in {test_root}: a real dataset does not say what its false positives "
                     "are; the breakdown below shows only those at the brain's edge.")
    pred_dirs = [runs[n].run_dir / TEST_PREDICTIONS for n in sorted(runs)]
    fp = compute_fp_mimic_table(pred_dirs, Path(test_root)) if runs else pd.DataFrame(columns=["mimic"])
    n_subjects = max(len(per_subject), 1)
    fp_summary, kinds = summarize_fp_mimics(fp, n_subjects), summarize_error_kinds(fp, n_subjects)
    label, paper_row = dataset_label(test_root), TABLE2.get(main, {})
    ours, ours_valdo = _rule_scores(report.summary if report else None), _rule_scores(valdo.summary if valdo else None)
    times = load_inference_times(results_dir)
    main_times = times[times.index.isin(list(runs))]
    return BeyondThePaper(
        dataset=label, notes="\n\n".join(notes), n_subjects=len(per_subject),
        scores=summary_scores(report.summary if report else None),
        fp=fp, fp_summary=fp_summary, error_kinds=kinds, fp_share_vein=_share(fp_summary, "vein"),
        fp_share_edge=_share(kinds, "brain edge"),
        misses=summarize_misses_by_size(pred_dirs, Path(test_root)),
        by_site=summarize_by_group(per_subject, subjects, "site").round(3) if len(per_subject) else None,
        by_modality=summarize_by_group(per_subject, subjects, "modality").round(3) if len(per_subject) else None,
        valdo=ours_valdo,
        rule_table=compare_with_paper([ComparedRow("paper rule", ours, paper_row),
                                       ComparedRow("VALDO rule", ours_valdo)], label, RULE_METRICS),
        ci_table=compare_with_paper([ComparedRow("pooled", ours, paper_row)], label),
        times=times.round(3),
        main_seconds=float(main_times["seconds_per_subject"].mean()) if len(main_times) else math.nan,
        main_device=", ".join(sorted(main_times["device"].astype(str).unique())) or "n/a",
        timings=load_study_timings(results_dir),
    )
