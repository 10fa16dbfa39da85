"""Cross-validation splits from a seed, saved beside every run (nnU-Net's ``splits_final.json``).

The paper uses 5-fold cross-validation (Cho et al. 2026, Table 3). Folds are
built from sorted subject ids and a seed only, so the same cohort and seed
always give the same folds; with strata (the ARIA-H category of each subject)
every category is spread over the folds as evenly as it can be.

``split.json`` holds ``{"seed", "n_folds", "fold", "stratified", "folds":
[{"train": [...], "val": [...]}, ...]}``; ``fold`` is the run's own fold.

A real dataset's test set (the paper's design: a held-out test set, 5-fold
cross-validation on the rest) is drawn once from a seed by
:func:`make_test_split`, saved (``test_split.json``: ``{"seed", "fraction",
"stratified", "test": [...]}``) and read back by every later run, so no choice
ever sees it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .io import read_json, write_text_atomically

__all__ = ["make_cv_splits", "select_fold", "save_splits", "load_splits", "make_test_split", "save_test_split",
           "load_test_split"]


def _categories(ids: list[str], strata: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """Subject -> stratum ("" for all without strata).

    Raises:
        InputError: duplicate subject ids, or strata missing for a subject.
    """
    if len(set(ids)) != len(ids):
        duplicates = sorted({s for s in ids if ids.count(s) > 1})
        raise InputError(f"duplicate subject ids {duplicates}: each subject must appear once")
    if strata is None:
        return {s: "" for s in ids}
    if isinstance(strata, Mapping):
        missing = sorted(set(ids) - set(strata))
        if missing:
            raise InputError(f"no stratum (ARIA-H category) for subjects {missing}")
        return {s: str(strata[s]) for s in ids}
    if len(strata) != len(ids):
        raise InputError(f"{len(strata)} strata given for {len(ids)} subjects")
    return {s: str(c) for s, c in zip(ids, strata)}


def make_test_split(subject_ids: Sequence[str], fraction: float, seed: int,
                    strata: Mapping[str, str] | Sequence[str] | None = None) -> list[str]:
    """The held-out test subjects: ``round(fraction * n)`` of them, spread over the strata, from ``seed``.

    Each stratum gives its share (largest remainder, so the total is exact),
    picked after shuffling its sorted members with ``default_rng([seed, 1])``.

    Raises:
        ConfigError: ``fraction`` outside (0, 1), or a test set or training pool that would be empty.
        InputError: as :func:`make_cv_splits`.
    """
    ids = [str(s) for s in subject_ids]
    category = _categories(ids, strata)
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"study.test_fraction={fraction} must lie strictly between 0 and 1")
    n_test = int(round(fraction * len(ids)))
    if n_test < 1 or n_test >= len(ids):
        raise ConfigError(f"a test fraction of {fraction} of {len(ids)} subjects leaves {n_test} test subjects: "
                          "the dataset needs subjects for both the test set and the cross-validation")
    groups = sorted(set(category.values()))
    quota = np.array([fraction * sum(category[s] == g for s in ids) for g in groups])
    counts = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - counts), kind="stable")[: n_test - counts.sum()]:
        counts[i] += 1
    rng = np.random.default_rng([seed, 1])
    test: list[str] = []
    for group, count in zip(groups, counts):
        members = sorted(s for s in ids if category[s] == group)
        test += [members[i] for i in rng.permutation(len(members))[:count]]
    return sorted(test)


def save_test_split(path: Path, test: Sequence[str], seed: int, fraction: float, stratified: bool) -> Path:
    """Write ``test_split.json`` atomically (see the module docstring for its fields)."""
    payload = {"seed": seed, "fraction": fraction, "stratified": stratified, "test": sorted(str(s) for s in test)}
    return write_text_atomically(Path(path), json.dumps(payload, indent=2))


def load_test_split(path: Path) -> list[str]:
    """The test subjects of ``test_split.json``.

    Raises:
        InputError: the file is missing or is not a test split.
    """
    test = read_json(path, advice="write one with make_test_split / save_test_split").get("test")
    if not isinstance(test, list) or not test:
        raise InputError(f"{path} lists no test subjects: it is not a cmbstudy test_split.json")
    return [str(s) for s in test]


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
    category = _categories(ids, strata)
    if n_folds < 2:
        raise ConfigError(f"train.n_folds={n_folds}: cross-validation needs at least 2 folds")
    if n_folds > len(ids):
        raise ConfigError(
            f"train.n_folds={n_folds} is more than the {len(ids)} subjects: "
            f"use at most {len(ids)} folds or add subjects"
        )
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
