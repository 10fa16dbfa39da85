"""Cross-validation splits from a seed, saved beside every run (nnU-Net's ``splits_final.json``).

The paper uses 5-fold cross-validation (Cho et al. 2025, Table 3). Folds are
built from sorted subject ids and a seed only, so the same cohort and seed
always give the same folds; with strata (the ARIA-H category of each subject)
every category is spread over the folds as evenly as it can be.

``split.json`` holds ``{"seed", "n_folds", "fold", "stratified", "folds":
[{"train": [...], "val": [...]}, ...]}``; ``fold`` is the run's own fold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .io import write_text_atomically

__all__ = ["make_cv_splits", "select_fold", "save_splits", "load_splits"]


def make_cv_splits(
    subject_ids: Sequence[str],
    n_folds: int,
    seed: int,
    strata: Mapping[str, str] | Sequence[str] | None = None,
) -> list[dict[str, list[str]]]:
    """K-fold splits in which every subject is in exactly one validation fold.

    Subjects are sorted, grouped by stratum (one group when ``strata`` is
    None), shuffled within each group with ``numpy.random.default_rng(seed)``,
    and dealt to the folds in turn; the deal continues from fold to fold across
    groups, so fold sizes differ by at most one.

    Args:
        subject_ids: the cohort's subject ids (e.g. ``"001"``).
        n_folds: number of folds, 2 .. number of subjects.
        seed: the profile's seed.
        strata: per subject a category (e.g. ARIA-H ``"1-4"``), as a mapping
            id -> category or a sequence aligned with ``subject_ids``.

    Returns:
        ``n_folds`` dicts ``{"train": [...], "val": [...]}`` with sorted ids.

    Raises:
        ConfigError: ``n_folds`` below 2 or above the number of subjects.
        InputError: duplicate subject ids, or strata missing for a subject.
    """
    ids = [str(s) for s in subject_ids]
    if len(set(ids)) != len(ids):
        duplicates = sorted({s for s in ids if ids.count(s) > 1})
        raise InputError(f"duplicate subject ids {duplicates}: each subject must appear once")
    if n_folds < 2:
        raise ConfigError(f"train.n_folds={n_folds}: cross-validation needs at least 2 folds")
    if n_folds > len(ids):
        raise ConfigError(
            f"train.n_folds={n_folds} is more than the {len(ids)} subjects: "
            f"use at most {len(ids)} folds or add subjects"
        )
    if strata is None:
        category = {s: "" for s in ids}
    elif isinstance(strata, Mapping):
        missing = sorted(set(ids) - set(strata))
        if missing:
            raise InputError(f"no stratum (ARIA-H category) for subjects {missing}")
        category = {s: str(strata[s]) for s in ids}
    else:
        if len(strata) != len(ids):
            raise InputError(f"{len(strata)} strata given for {len(ids)} subjects")
        category = {s: str(c) for s, c in zip(ids, strata)}
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    turn = 0
    for group in sorted(set(category.values())):
        members = sorted(s for s in ids if category[s] == group)
        for subject in (members[i] for i in rng.permutation(len(members))):
            folds[turn % n_folds].append(subject)
            turn += 1
    return [{"train": sorted(set(ids) - set(val)), "val": sorted(val)} for val in folds]


def select_fold(splits: Sequence[Mapping[str, list[str]]], fold: int) -> dict[str, list[str]]:
    """The split of ``fold`` (0-based).

    Raises:
        ConfigError: ``fold`` is not in ``0 .. len(splits) - 1``.
    """
    if not 0 <= fold < len(splits):
        raise ConfigError(
            f"fold {fold} is out of range: there are {len(splits)} folds, so use 0..{len(splits) - 1}"
        )
    return {"train": list(splits[fold]["train"]), "val": list(splits[fold]["val"])}


def save_splits(
    path: Path,
    splits: Sequence[Mapping[str, list[str]]],
    seed: int,
    fold: int,
    stratified: bool,
) -> Path:
    """Write ``split.json`` atomically (see the module docstring for its fields)."""
    path = Path(path)
    payload = {
        "seed": seed,
        "n_folds": len(splits),
        "fold": fold,
        "stratified": stratified,
        "folds": [{"train": list(s["train"]), "val": list(s["val"])} for s in splits],
    }
    return write_text_atomically(path, json.dumps(payload, indent=2))


def load_splits(path: Path) -> dict:
    """Read ``split.json`` as written by :func:`save_splits`.

    Raises:
        InputError: the file is missing or is not a split file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"split file {path} does not exist: is this a training run folder?")
    try:
        payload = json.loads(path.read_text())
        folds = payload["folds"]
        int(payload["fold"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"split file {path} is not a cmbstudy split.json ({exc})") from exc
    if not isinstance(folds, list) or not all("train" in f and "val" in f for f in folds):
        raise InputError(f"split file {path} has no list of train/val folds")
    return payload
