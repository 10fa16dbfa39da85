"""The study's training runs: names, what the study trains, and reading their results back.

Layout under the results folder ``RESULTS`` (the notebooks' ``results_dir``)::

    RESULTS/runs/<variant>-fold<k>/              one run of :func:`cmbstudy.training.train_fold`
    RESULTS/runs/<variant>-<modality>-fold<k>/   a run trained on one modality (Table 5)
        pred-val/  eval-val.json  eval-val-valdo.json     its validation subjects
        pred-test/ eval-test.json                         modality runs: the other modality

Notebook 03 trains and evaluates one run per call of :func:`train_and_evaluate`;
the analysis notebooks (04-12) only read runs (:func:`load_run`,
:func:`collect_runs`, :func:`pooled_evaluation`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Profile, resolve_variant
from .datasets import describe_dataset, load_subjects
from .errors import ConfigError, InputError
from .evaluation import EvaluationReport, evaluate_predictions
from .inference import default_cache_dir, load_run_profile, predict_dataset
from .io import write_text_atomically
from .metrics import DETECTION_METRICS

__all__ = [
    "RUNS_DIR",
    "MODALITIES",
    "RUN_COLUMNS",
    "RunRecord",
    "parse_overrides",
    "run_name",
    "run_path",
    "training_instances",
    "describe_missing_modality",
    "train_and_evaluate",
    "load_run",
    "collect_runs",
    "pooled_evaluation",
    "preprocessing_cache_dir",
    "dataset_label",
    "load_runs",
    "evaluate_arms",
]

RUNS_DIR = "runs"
MODALITIES: tuple[str, ...] = ("gre", "swi")
RUN_COLUMNS: tuple[str, ...] = (
    "name", "variant", "model", "fold", "modality", *DETECTION_METRICS,
    *(f"{m}_ci_{side}" for m in DETECTION_METRICS for side in ("low", "high")),
    *(f"small_{m}" for m in DETECTION_METRICS),
    "n_ref", "n_subjects", "n_params", "train_seconds", "seconds_per_subject",
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
    evaluation: dict  # eval-val.json: paper rule (settings, summary, per_subject, froc_curve)
    evaluation_valdo: dict  # eval-val-valdo.json: VALDO rule
    test_evaluation: dict | None  # eval-test.json of a modality run (the other modality), else None
    n_params: int  # trainable parameters
    train_seconds: float  # training + validation time (s)
    seconds_per_subject: float  # inference time per validation subject, model + post-processing (s)


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


def run_path(results_dir: Path | str, variant: str, fold: int, modality: str | None = None) -> Path:
    """``RESULTS/runs/<run_name>``."""
    return Path(results_dir) / RUNS_DIR / run_name(variant, fold, modality)


def preprocessing_cache_dir(results_dir: Path | str) -> Path:
    """The preprocessing cache every run of the study shares (``RESULTS/runs/.cmbstudy_cache``, or
    ``$CMBSTUDY_CACHE``): the folder :func:`cmbstudy.inference.default_cache_dir` gives a run."""
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


def describe_missing_modality(data_root: Path | str, modality: str | None, n_folds: int) -> str | None:
    """Why a run on ``modality`` cannot be trained on ``data_root``, or None when it can.

    A single-modality run needs at least ``n_folds`` subjects of that modality and
    one subject of the other modality to test on.
    """
    if modality in (None, "all"):
        return None
    counts = {m: 0 for m in MODALITIES}
    for subject in load_subjects(Path(data_root)):
        counts[subject.modality] = counts.get(subject.modality, 0) + 1
    other = next(m for m in MODALITIES if m != modality)
    if counts.get(modality, 0) < n_folds or counts[other] == 0:
        return (f"the dataset at {data_root} has {counts.get(modality, 0)} {modality.upper()} and "
                f"{counts[other]} {other.upper()} subjects: training on {modality.upper()} needs at least "
                f"{n_folds} (one per fold) and testing needs one {other.upper()} subject")
    return None


def _evaluate(pred_dir: Path, data_root: Path, profile: Profile, rule: str, json_out: Path | None) -> EvaluationReport:
    ev = profile.evaluation
    distance = ev.match_distance_voxels if rule == "paper" else ev.valdo_distance_mm
    return evaluate_predictions(
        pred_dir, data_root, rule=rule, distance=distance, json_out=json_out, connectivity=ev.connectivity,
        only_predicted=True, n_bootstrap=ev.n_bootstrap, seed=profile.seed, progress=False,
    )


def _predict_other_modality(run_dir: Path, data_root: Path, modality: str, device: str, progress: bool) -> Path:
    """Predict every subject of ``data_root`` not scanned with ``modality`` into ``RUN/pred-test``."""
    keep = [s.subject_id for s in load_subjects(Path(data_root)) if s.modality != modality]
    out = run_dir / "pred-test"
    predict_dataset(run_dir, data_root, out, device=device, overwrite=True, progress=progress, split="all",
                    subject_ids=keep)
    info = json.loads((out / "prediction.json").read_text())
    info["split"] = f"modality != {modality}"
    write_text_atomically(out / "prediction.json", json.dumps(info, indent=2))
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
    from .training import train_fold  # torch and the models load only when a run is trained

    train_fold(resolved, data_root, fold, out, device=device, overwrite=True, progress=progress,
               modality=modality)
    predict_dataset(out, data_root, out / "pred-val", device=device, overwrite=True, progress=progress,
                    split="val")
    _evaluate(out / "pred-val", data_root, resolved, "paper", out / "eval-val.json")
    _evaluate(out / "pred-val", data_root, resolved, "valdo", out / "eval-val-valdo.json")
    (out / "eval-test.json").unlink(missing_ok=True)
    if modality is not None:
        _predict_other_modality(out, data_root, modality, device, progress)
        _evaluate(out / "pred-test", data_root, resolved, "paper", out / "eval-test.json")
    return load_run(results_dir, out.name)


def _read_json(path: Path, name: str, results_dir: Path) -> dict:
    if not path.is_file():
        raise InputError(
            f"{path} does not exist: run {name} is missing or unfinished; train it with notebook "
            f"03_training (`cmbstudy study --out {results_dir} --steps 03_training`)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): rerun notebook 03_training for {name}") from exc


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
    result = _read_json(run_dir / "result.json", name, results_dir)
    evaluation = _read_json(run_dir / "eval-val.json", name, results_dir)
    evaluation_valdo = _read_json(run_dir / "eval-val-valdo.json", name, results_dir)
    prediction = _read_json(run_dir / "pred-val" / "prediction.json", name, results_dir)
    modality = parsed["modality"]
    test = _read_json(run_dir / "eval-test.json", name, results_dir) if modality else None
    seconds = prediction.get("seconds_per_subject")
    return RunRecord(
        name=name, variant=parsed["variant"], model=str(result.get("model", "")), fold=int(parsed["fold"]),
        modality=modality, run_dir=run_dir, result=result, evaluation=evaluation,
        evaluation_valdo=evaluation_valdo, test_evaluation=test, n_params=int(result.get("n_params", 0)),
        train_seconds=float(result.get("seconds", math.nan)),
        seconds_per_subject=math.nan if seconds is None else float(seconds),
    )


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _row(record: RunRecord) -> dict[str, Any]:
    summary = record.evaluation["summary"]
    row: dict[str, Any] = {"name": record.name, "variant": record.variant, "model": record.model,
                           "fold": record.fold, "modality": record.modality or "all"}
    ci = summary.get("ci95", {})
    for metric in DETECTION_METRICS:
        row[metric] = _number(summary.get(metric))
        low, high = ci.get(metric) or (None, None)
        row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = _number(low), _number(high)
    small = summary.get("small_lesions", {})
    for metric in DETECTION_METRICS:
        row[f"small_{metric}"] = _number(small.get(metric))
    row.update(n_ref=int(summary.get("n_ref", 0)), n_subjects=int(summary.get("n_subjects", 0)),
               n_params=record.n_params, train_seconds=record.train_seconds,
               seconds_per_subject=record.seconds_per_subject)
    return row


def collect_runs(results_dir: Path | str) -> pd.DataFrame:
    """One row per finished run under ``RESULTS/runs`` (paper-rule validation scores), sorted by name.

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


def pooled_evaluation(
    results_dir: Path | str, variant: str, folds: list[int] | tuple[int, ...], data_root: Path | str,
    rule: str = "paper",
) -> EvaluationReport:
    """Evaluate the validation predictions of several folds of ``variant`` together.

    Every subject's prediction comes from the fold that held it out, so the
    report is the cross-validated result: pooled counts, per-subject rows,
    bootstrap CIs over subjects and the FROC curve. Settings (distance,
    connectivity, bootstrap) are those of the first fold's ``profile.yaml``.

    Raises:
        InputError: a fold's run or predictions are missing, or a subject is in two folds.
    """
    folds = [int(f) for f in folds]
    if not folds:
        raise InputError(f"no folds given for the pooled evaluation of {variant}")
    pred_dirs = []
    for fold in folds:
        name = run_name(variant, fold)
        pred = Path(results_dir) / RUNS_DIR / name / "pred-val"
        _read_json(pred / "prediction.json", name, Path(results_dir))
        pred_dirs.append(pred)
    profile = load_run_profile(pred_dirs[0].parent)
    with tempfile.TemporaryDirectory(prefix="pooled-") as tmp:
        pooled = Path(tmp)
        shutil.copy2(pred_dirs[0] / "prediction.json", pooled / "prediction.json")
        for pred in pred_dirs:
            for folder in sorted(pred.glob("sub-*")):
                link = pooled / folder.name
                if link.exists():
                    raise InputError(f"subject {folder.name} is predicted by two of the folds {folds} of "
                                     f"{variant}: the folds must come from one cross-validation split")
                os.symlink(folder.resolve(), link, target_is_directory=True)
        report = _evaluate(pooled, Path(data_root), profile, rule, None)
    report.settings["pred_dir"] = ", ".join(str(p) for p in pred_dirs)
    return report


def dataset_label(data_root: Path | str) -> str:
    """How tables label our numbers: "synthetic cohort" for the generated cohort, else the dataset's name."""
    info = describe_dataset(Path(data_root))
    if info.get("cmbstudy", {}).get("dataset") == "synthetic":
        return "synthetic cohort"
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
    results_dir: Path | str, variants: list[str], folds: list[int] | tuple[int, ...], data_root: Path | str,
    rule: str = "paper",
) -> tuple[dict[str, EvaluationReport], list[str]]:
    """:func:`pooled_evaluation` of each variant over ``folds``, skipping variants with a missing run.

    Returns:
        (variant -> pooled report for variants whose every fold is finished, the missing run names).
    """
    reports, missing = {}, []
    for variant in variants:
        _, absent = load_runs(results_dir, [run_name(variant, f) for f in folds])
        if absent:
            missing += absent
        else:
            reports[variant] = pooled_evaluation(results_dir, variant, list(folds), data_root, rule)
    return reports, missing
