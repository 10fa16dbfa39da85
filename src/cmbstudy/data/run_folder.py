"""The training run folder: what ``cmbstudy train`` writes and every later step reads.

A run folder ``RUN/`` holds:

* ``profile.yaml``: the resolved profile the run was trained with;
* ``split.json``: the cross-validation split and the run's fold (:mod:`cmbstudy.data.splits`);
* ``environment.json``: library versions and the accelerator;
* ``dataset.json``: the training data (:func:`cmbstudy.data.datasets.describe_dataset`);
* ``history.csv``: one row per epoch (:data:`HISTORY_COLUMNS`; ``crops_*``: the
  training samples of each kind, ``hard_pool``: mined false positives available;
  ``mining_seconds``, ``validation_seconds``: the parts of ``seconds`` spent mining and validating);
* ``checkpoint_last.pt``: weights, optimiser, scheduler and random states (resume);
* ``checkpoint_best.pt``: the weights chosen by validation F1 (or the last epoch);
* ``operating_point.json``: the threshold and minimum lesion size chosen on the
  validation subjects (:class:`cmbstudy.evaluation.operating_point.OperatingPoint`);
* ``result.json``: the outcome of the training (:class:`cmbstudy.training.RunResult`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..config import Profile, profile_from_mapping, profile_to_dict
from ..errors import ConfigError, InputError
from .io import read_json, write_text_atomically
from .splits import load_splits

__all__ = [
    "PROFILE",
    "SPLIT",
    "ENVIRONMENT",
    "DATASET",
    "HISTORY",
    "CHECKPOINT_LAST",
    "CHECKPOINT_BEST",
    "RESULT",
    "OPERATING_POINT",
    "RUN_FILES",
    "HISTORY_COLUMNS",
    "load_run_profile",
    "write_run_profile",
    "load_run_split",
    "load_run_json",
    "load_run_operating_point",
]

PROFILE = "profile.yaml"
SPLIT = "split.json"
ENVIRONMENT = "environment.json"
DATASET = "dataset.json"
HISTORY = "history.csv"
CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
RESULT = "result.json"
OPERATING_POINT = "operating_point.json"
#: Every file of a run folder (a new run removes them first).
RUN_FILES: tuple[str, ...] = (PROFILE, SPLIT, ENVIRONMENT, HISTORY, CHECKPOINT_LAST, CHECKPOINT_BEST, RESULT, DATASET,
                              OPERATING_POINT)
#: Columns of ``history.csv``; the validation columns are empty on epochs without validation.
HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "lr", "train_loss", "val_loss", "val_precision", "val_recall", "val_f1",
    "val_fp_per_subject", "crops_lesion", "crops_hard", "crops_edge", "crops_other", "hard_pool", "mining_seconds",
    "validation_seconds", "seconds",
)


def load_run_profile(run_dir: Path) -> Profile:
    """The resolved profile a training run wrote (``RUN/profile.yaml``).

    Raises:
        InputError: the file is missing or not a profile.
    """
    path = Path(run_dir) / PROFILE
    if not path.is_file():
        raise InputError(f"{path} does not exist: give a run folder written by `cmbstudy train`")
    try:
        return profile_from_mapping(yaml.safe_load(path.read_text()), str(path))
    except ConfigError as exc:
        raise InputError(f"{path} is not a valid profile: {exc}") from exc


def write_run_profile(run_dir: Path, profile: Profile) -> Path:
    """Write ``RUN/profile.yaml`` (the resolved profile, in field order) atomically."""
    return write_text_atomically(Path(run_dir) / PROFILE, yaml.safe_dump(profile_to_dict(profile), sort_keys=False))


def load_run_split(run_dir: Path, part: str) -> list[str]:
    """The ``"train"`` or ``"val"`` subject ids of the run's own fold (``RUN/split.json``), or its
    held-out ``"test"`` subjects (``RUN/dataset.json``; a run trained with a test split).

    Raises:
        InputError: the split file is missing or malformed, or the run held out no test subjects.
    """
    if part == "test":
        held_out = read_json(Path(run_dir) / DATASET).get("held_out") or []
        if not held_out:
            raise InputError(f"run {run_dir} held out no test subjects: it was trained without a test split "
                             "(cmbstudy train --test-split FILE); predict another dataset with --split all")
        return [str(s) for s in held_out]
    payload = load_splits(Path(run_dir) / SPLIT)
    return list(payload["folds"][int(payload["fold"])][part])


def load_run_json(run_dir: Path, name: str) -> dict[str, Any]:
    """``RUN/<name>`` (``result.json``, ``dataset.json``, ``environment.json``) as a dict.

    Raises:
        InputError: the file is missing or not JSON.
    """
    return read_json(Path(run_dir) / name)


def load_run_operating_point(run_dir: Path) -> dict[str, Any] | None:
    """``RUN/operating_point.json`` as a dict, None for a run that was not calibrated.

    Raises:
        InputError: the file exists but is not JSON.
    """
    path = Path(run_dir) / OPERATING_POINT
    return read_json(path) if path.is_file() else None
