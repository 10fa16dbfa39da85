"""The study's training runs: names, what the study trains, and reading their results back.

Layout under the results folder ``RESULTS`` (the notebooks' ``results_dir``)::

    RESULTS/runs/<variant>-fold<k>/              one run of :func:`cmbstudy.training.train_fold`
    RESULTS/runs/<variant>-<modality>-fold<k>/   a run trained on one modality (Table 5)
        operating_point.json                     chosen on its validation subjects (with their scores)
        pred-test/ eval-test.json                the test set (a modality run: its other modality)
        eval-test-valdo.json                     the same under the VALDO rule (the main network's comparison fold)

Every table is scored on the test set (:mod:`cmbstudy.study.test_set`), which no
choice of a run has seen. Notebook 03 trains and evaluates one run per call of
:func:`cmbstudy.study.training_runs.train_and_evaluate`; the analysis notebooks
(04-12) only read runs (:func:`load_run`, :func:`collect_runs`,
:func:`test_report`). Nothing here imports torch, so the study runner starts fast.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Profile
from ..data.datasets import describe_dataset, load_subjects
from ..data.io import read_json
from ..data.prediction_folder import PREDICTION_INFO
from ..data.run_folder import OPERATING_POINT, RESULT
from ..errors import ConfigError, InputError
from ..evaluation.evaluate import evaluate_predictions
from ..evaluation.report import EvaluationReport
from ..evaluation.scores import DETECTION_METRICS
from ..formatting import as_float
from ..preprocessing.cache import default_cache_dir
from .test_set import TestSet

__all__ = [
    "RUNS_DIR",
    "PHASES_FILE",
    "PHASES",
    "TIMINGS_FILE",
    "STATE_FILE",
    "TEST_PREDICTIONS",
    "TEST_EVALUATION",
    "TEST_EVALUATION_VALDO",
    "TEST_PREDICTIONS_TWO_STAGE",
    "TEST_EVALUATION_TWO_STAGE",
    "MODALITIES",
    "RUN_COLUMNS",
    "RunRecord",
    "parse_overrides",
    "run_name",
    "monitored_run",
    "book_instance",
    "run_path",
    "training_instances",
    "describe_missing_modality",
    "evaluate_run_predictions",
    "load_run",
    "collect_runs",
    "test_report",
    "preprocessing_cache_dir",
    "dataset_label",
    "load_runs",
    "evaluate_arms",
]

RUNS_DIR = "runs"
#: The runner's record of the seconds of every step (``RESULTS/study_timings.tsv``) and its skip state.
TIMINGS_FILE = "study_timings.tsv"
STATE_FILE = "study_state.json"
#: A run's test-set predictions (a prediction folder) and their evaluations (``EvaluationReport`` JSON).
TEST_PREDICTIONS = "pred-test"
TEST_EVALUATION, TEST_EVALUATION_VALDO = "eval-test.json", "eval-test-valdo.json"
#: The same test subjects with the run's second look (the network's single pass, two stages).
TEST_PREDICTIONS_TWO_STAGE, TEST_EVALUATION_TWO_STAGE = "pred-test-2stage", "eval-test-2stage.json"
#: Where a run's seconds went, phase by phase (:data:`PHASES`), as the study's run measured them.
PHASES_FILE = "phases.json"
#: The phases of a run of the study, in the order they run.
PHASES: tuple[str, ...] = ("training", "mining", "validation", "calibration", "test inference",
                           "test reading and writing", "scoring", "other")
MODALITIES: tuple[str, ...] = ("gre", "swi")
RUN_COLUMNS: tuple[str, ...] = (
    "name", "variant", "model", "fold", "modality", *DETECTION_METRICS,
    *(f"{m}_ci_{side}" for m in DETECTION_METRICS for side in ("low", "high")),
    *(f"small_{m}" for m in DETECTION_METRICS),
    "n_ref", "n_subjects", "threshold", "min_voxels", "val_f1", "n_params", "train_seconds", "seconds_per_subject",
)
_NAME = re.compile(r"(?P<variant>[^-]+)(?:-(?P<modality>gre|swi))?-fold(?P<fold>\d+)")
_OVERRIDE_START = re.compile(r",(?=\s*[A-Za-z_][\w]*(?:\.[\w]+)?\s*=)")


@dataclass(frozen=True)
class RunRecord:
    """One finished run of the study, as read from its folder."""

    name: str  # run folder name, e.g. "rlk_unet_cbam-fold0" or "rlk_unet_cbam-gre-fold0"
    variant: str  # profile variant (``Profile.variants``)
    model: str  # registry name of the network
    fold: int  # cross-validation fold (0-based)
    modality: str | None  # "gre" / "swi" for a single-modality run, None for all subjects
    run_dir: Path  # the run folder
    result: dict  # result.json of the training
    evaluation: dict  # eval-test.json: the test set, paper rule (settings, summary, per_subject, froc_curve)
    evaluation_valdo: dict | None  # eval-test-valdo.json: the test set, VALDO rule (None: not evaluated)
    operating_point: dict  # operating_point.json: threshold, min_voxels, and the validation scores there
    n_params: int  # trainable parameters
    train_seconds: float  # training + validation time (s)
    seconds_per_subject: float  # inference time per test subject, model + post-processing (s)
    evaluation_two_stage: dict | None = None  # eval-test-2stage.json: with the second look (None: none trained)
    phases: dict | None = None  # phases.json: seconds per phase of PHASES (None: a run from before phases were timed)

    @property
    def validation(self) -> dict:
        """The pooled validation scores at the run's operating point (its selection data, not a result)."""
        return dict(self.operating_point.get("validation") or {})


def parse_overrides(text: str) -> list[str]:
    """Split the notebooks' ``overrides`` text into ``section.key=value`` strings.

    Commas separate overrides only where a new ``name=`` follows, so list values
    survive: ``"study.cv_folds=[0,1],train.epochs=2"`` gives two overrides.
    """
    return [part.strip() for part in _OVERRIDE_START.split(text or "") if part.strip()]


def run_name(variant: str, fold: int, modality: str | None = None) -> str:
    """``"<variant>-fold<k>"``, or ``"<variant>-<modality>-fold<k>"`` for a single-modality run.

    Raises:
        ConfigError: a variant name with "-", a negative fold or an unknown modality.
    """
    if not variant or "-" in variant:
        raise ConfigError(f"variant name {variant!r} must be non-empty and hold no '-'")
    if int(fold) < 0:
        raise ConfigError(f"fold {fold} must be >= 0")
    if modality in (None, "all"):
        return f"{variant}-fold{int(fold)}"
    if modality not in MODALITIES:
        raise ConfigError(f"modality {modality!r}: use one of {MODALITIES} or None (all subjects)")
    return f"{variant}-{modality}-fold{int(fold)}"


def monitored_run(profile: Profile) -> str:
    """The run the monitoring chapter uses: the main variant at the first comparison fold the profile has (else 0)."""
    folds = [fold for fold in profile.study.comparison_folds if fold < profile.train.n_folds]
    return run_name(profile.study.main, folds[0] if folds else 0)


def book_instance(profile: Profile, instances: list[dict[str, Any]]) -> str | None:
    """The training run the book shows (notebook 03): the main variant on all subjects at its first fold."""
    main = [i for i in instances if i["variant"] == profile.study.main and i.get("modality") is None]
    return str(min(main, key=lambda i: int(i["fold"]))["name"]) if main else None


def run_path(results_dir: Path | str, variant: str, fold: int, modality: str | None = None) -> Path:
    """``RESULTS/runs/<run_name>``."""
    return Path(results_dir) / RUNS_DIR / run_name(variant, fold, modality)


def preprocessing_cache_dir(results_dir: Path | str) -> Path:
    """The preprocessing cache every run of the study shares (``RESULTS/runs/.cmbstudy_cache``, or
    ``$CMBSTUDY_CACHE``): the folder :func:`cmbstudy.preprocessing.cache.default_cache_dir` gives a run."""
    return default_cache_dir(Path(results_dir) / RUNS_DIR / "any-run")


def training_instances(profile: Profile) -> list[dict[str, Any]]:
    """The runs the study trains, in order, from ``profile.study``.

    The main variant on every ``cv_folds`` fold that the profile's ``train.n_folds``
    has; each ablation and baseline variant on ``comparison_folds``; with
    ``cross_modality`` the main variant trained on "gre" and on "swi" at the
    first comparison fold. Repeated (variant, fold, modality) entries appear once.

    Returns:
        One dict per run: ``name``, ``variant``, ``fold``, ``modality`` (None: all subjects).

    Raises:
        ConfigError: an unknown variant, or no cv/comparison fold below ``train.n_folds``.
    """
    study, n_folds = profile.study, profile.train.n_folds
    unknown = sorted({study.main, *study.ablation, *study.baselines} - set(profile.variants))
    if unknown:
        raise ConfigError(f"study variants {unknown} are not variants of profile {profile.name}: "
                          f"known are {sorted(profile.variants)}")
    # folds the profile's split does not have (e.g. 5 cv folds of a 2-fold smoke profile) are left out
    cv_folds = [f for f in study.cv_folds if 0 <= f < n_folds]
    comparison = [f for f in study.comparison_folds if 0 <= f < n_folds]
    if not cv_folds or not comparison:
        raise ConfigError(
            f"study.cv_folds={list(study.cv_folds)} and study.comparison_folds={list(study.comparison_folds)} "
            f"need folds below train.n_folds={n_folds}: e.g. --set study.cv_folds=[0] "
            "--set study.comparison_folds=[0]"
        )
    entries: list[tuple[str, int, str | None]] = [(study.main, f, None) for f in cv_folds]
    entries += [(v, f, None) for v in (*study.ablation, *study.baselines) for f in comparison]
    if study.cross_modality:
        entries += [(study.main, comparison[0], m) for m in MODALITIES]
    instances, seen = [], set()
    for variant, fold, modality in entries:
        name = run_name(variant, fold, modality)
        if name not in seen:
            seen.add(name)
            instances.append({"name": name, "variant": variant, "fold": fold, "modality": modality})
    return instances


def describe_missing_modality(data_root: Path | str, modality: str | None, n_folds: int,
                              test_set: TestSet | None = None) -> str | None:
    """Why a run on ``modality`` cannot be trained on ``data_root``, or None when it can.

    A single-modality run needs at least ``n_folds`` training subjects of that
    modality and one test subject of the other modality (``test_set``; without
    one, a subject of ``data_root``).
    """
    if modality in (None, "all"):
        return None
    held_out = set(test_set.excluded_from_training) if test_set else set()
    training = [s.modality for s in load_subjects(Path(data_root)) if s.subject_id not in held_out]
    if test_set is None:
        testing = training
    else:
        wanted = set(test_set.subject_ids)
        testing = [s.modality for s in load_subjects(test_set.root) if s.subject_id in wanted]
    other = next(m for m in MODALITIES if m != modality)
    n_train, n_test = training.count(modality), testing.count(other)
    if n_train < n_folds or n_test == 0:
        return (f"the dataset at {data_root} has {n_train} {modality.upper()} training subjects and the test set "
                f"{n_test} {other.upper()} subjects: training on {modality.upper()} needs at least "
                f"{n_folds} (one per fold) and testing needs one {other.upper()} subject")
    return None


def evaluate_run_predictions(pred_dir: Path, data_root: Path, profile: Profile, rule: str,
                             json_out: Path | None = None) -> EvaluationReport:
    """:func:`cmbstudy.evaluation.evaluate_predictions` of a run's predictions with its profile's settings.

    Only the predicted subjects are evaluated; the distance is the rule's of ``profile.evaluation``.
    """
    ev = profile.evaluation
    distance = ev.match_distance_voxels if rule == "paper" else ev.valdo_distance_mm
    return evaluate_predictions(
        pred_dir, data_root, rule=rule, distance=distance, json_out=json_out, connectivity=ev.connectivity,
        only_predicted=True, n_bootstrap=ev.n_bootstrap, seed=profile.seed, progress=False,
    )


def _read_json(path: Path, name: str, results_dir: Path) -> dict:
    if not path.is_file():
        raise InputError(
            f"{path} does not exist: run {name} is missing or unfinished; train it with notebook "
            f"03_training (`cmbstudy study --out {results_dir} --steps 03_training`)"
        )
    return read_json(path, advice=f"rerun notebook 03_training for {name}")


def load_run(results_dir: Path | str, name: str) -> RunRecord:
    """Read the run ``RESULTS/runs/<name>`` (training result, evaluations, timing).

    Raises:
        InputError: a name that is not ``<variant>[-<modality>]-fold<k>``, or a missing or
            unreadable file (the message names it and the notebook that writes it).
    """
    results_dir = Path(results_dir)
    parsed = _NAME.fullmatch(name)
    if parsed is None:
        raise InputError(f"{name!r} is not a run name of the study (<variant>[-gre|-swi]-fold<k>)")
    run_dir = results_dir / RUNS_DIR / name
    result = _read_json(run_dir / RESULT, name, results_dir)
    evaluation = _read_json(run_dir / TEST_EVALUATION, name, results_dir)
    valdo_path = run_dir / TEST_EVALUATION_VALDO
    evaluation_valdo = _read_json(valdo_path, name, results_dir) if valdo_path.is_file() else None
    point = _read_json(run_dir / OPERATING_POINT, name, results_dir)
    prediction = _read_json(run_dir / TEST_PREDICTIONS / PREDICTION_INFO, name, results_dir)
    seconds = prediction.get("seconds_per_subject")
    return RunRecord(
        name=name, variant=parsed["variant"], model=str(result.get("model", "")), fold=int(parsed["fold"]),
        modality=parsed["modality"], run_dir=run_dir, result=result, evaluation=evaluation,
        evaluation_valdo=evaluation_valdo, operating_point=point, n_params=int(result.get("n_params", 0)),
        train_seconds=float(result.get("seconds", math.nan)),
        seconds_per_subject=math.nan if seconds is None else float(seconds),
        evaluation_two_stage=read_json(run_dir / TEST_EVALUATION_TWO_STAGE)
        if (run_dir / TEST_EVALUATION_TWO_STAGE).is_file() else None,
        phases=read_json(run_dir / PHASES_FILE) if (run_dir / PHASES_FILE).is_file() else None,
    )


def _row(record: RunRecord) -> dict[str, Any]:
    summary = record.evaluation["summary"]
    row: dict[str, Any] = {"name": record.name, "variant": record.variant, "model": record.model,
                           "fold": record.fold, "modality": record.modality or "all"}
    ci = summary.get("ci95", {})
    for metric in DETECTION_METRICS:
        row[metric] = as_float(summary.get(metric))
        low, high = ci.get(metric) or (None, None)
        row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = as_float(low), as_float(high)
    small = summary.get("small_lesions", {})
    for metric in DETECTION_METRICS:
        row[f"small_{metric}"] = as_float(small.get(metric))
    row.update(n_ref=int(summary.get("n_ref", 0)), n_subjects=int(summary.get("n_subjects", 0)),
               threshold=as_float(record.operating_point.get("threshold")),
               min_voxels=int(record.operating_point.get("min_voxels", 1)),
               val_f1=as_float(record.validation.get("f1")),
               n_params=record.n_params, train_seconds=record.train_seconds,
               seconds_per_subject=record.seconds_per_subject)
    return row


def collect_runs(results_dir: Path | str) -> pd.DataFrame:
    """One row per finished run under ``RESULTS/runs`` (paper-rule test scores), sorted by name.

    Columns: :data:`RUN_COLUMNS` (``modality`` "all" for runs on every subject). Folders that are not run names (the cache) are
    ignored; unfinished runs are left out with a warning.
    """
    root = Path(results_dir) / RUNS_DIR
    rows = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or _NAME.fullmatch(folder.name) is None:
            continue
        try:
            rows.append(_row(load_run(results_dir, folder.name)))
        except InputError as exc:
            warnings.warn(f"run {folder.name} left out: {exc}", stacklevel=2)
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def test_report(results_dir: Path | str, name: str, rule: str = "paper") -> EvaluationReport:
    """The test-set evaluation of the run ``name`` (``eval-test.json``, or ``eval-test-valdo.json`` for ``rule="valdo"``).

    Raises:
        ConfigError: an unknown rule.
        InputError: the run or its evaluation is missing (the message names notebook 03).
    """
    if rule not in ("paper", "valdo"):
        raise ConfigError(f"rule {rule!r}: use 'paper' or 'valdo'")
    file = TEST_EVALUATION if rule == "paper" else TEST_EVALUATION_VALDO
    return EvaluationReport.from_json(_read_json(Path(results_dir) / RUNS_DIR / name / file, name, Path(results_dir)))


def dataset_label(data_root: Path | str) -> str:
    """How tables label our numbers: "synthetic test cohort" for the generated test cohort, else the dataset's name."""
    info = describe_dataset(Path(data_root))
    generated = info.get("cmbstudy", {})
    if generated.get("dataset") == "synthetic":
        return f"synthetic {generated.get('role', 'training')} cohort ({generated.get('n_subjects', '?')} subjects)"
    return str(info.get("name") or Path(data_root).resolve().name)


def load_runs(results_dir: Path | str, names: list[str]) -> tuple[dict[str, RunRecord], list[str]]:
    """The finished runs among ``names`` and the names of those missing or unfinished.

    Analysis notebooks report the missing ones (e.g. runs the profile does not train)
    instead of failing.
    """
    found, missing = {}, []
    for name in names:
        try:
            found[name] = load_run(results_dir, name)
        except InputError:
            missing.append(name)
    return found, missing


def evaluate_arms(
    results_dir: Path | str, variants: list[str], fold: int, rule: str = "paper",
) -> tuple[dict[str, EvaluationReport], list[str]]:
    """:func:`test_report` of each variant's run at ``fold``, skipping variants whose run is missing.

    Returns:
        (variant -> test report for the variants whose run is finished, the missing run names).
    """
    reports, missing = {}, []
    for variant in variants:
        name = run_name(variant, fold)
        _, absent = load_runs(results_dir, [name])
        if absent:
            missing += absent
        else:
            reports[variant] = test_report(results_dir, name, rule)
    return reports, missing
