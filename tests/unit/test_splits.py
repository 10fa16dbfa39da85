"""Cross-validation splits: deterministic, disjoint, stratified, saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmbstudy.data.splits import load_splits, make_cv_splits, save_splits, select_fold
from cmbstudy.errors import ConfigError, InputError

IDS = [f"{i:03d}" for i in range(1, 12)]  # 11 subjects: uneven fold sizes


def test_every_subject_in_exactly_one_val_fold() -> None:
    splits = make_cv_splits(IDS, 5, seed=0)
    assert len(splits) == 5
    vals = [s for fold in splits for s in fold["val"]]
    assert sorted(vals) == IDS
    assert sorted(len(f["val"]) for f in splits) == [2, 2, 2, 2, 3]
    for fold in splits:
        assert set(fold["train"]).isdisjoint(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == IDS


def test_deterministic_and_seed_dependent() -> None:
    assert make_cv_splits(IDS, 3, seed=4) == make_cv_splits(list(reversed(IDS)), 3, seed=4)
    assert make_cv_splits(IDS, 3, seed=4) != make_cv_splits(IDS, 3, seed=5)


def test_stratified_spreads_each_category() -> None:
    ids = [f"{i:02d}" for i in range(15)]
    strata = {s: ("0" if i < 5 else "1-4" if i < 10 else ">=10") for i, s in enumerate(ids)}
    splits = make_cv_splits(ids, 5, seed=1, strata=strata)
    for fold in splits:
        assert sorted(strata[s] for s in fold["val"]) == ["0", "1-4", ">=10"]
    aligned = make_cv_splits(ids, 5, seed=1, strata=[strata[s] for s in ids])
    assert aligned == splits


def test_errors_name_the_numbers() -> None:
    with pytest.raises(ConfigError, match="n_folds=12 is more than the 11 subjects"):
        make_cv_splits(IDS, 12, seed=0)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        make_cv_splits(IDS, 1, seed=0)
    with pytest.raises(InputError, match=r"duplicate subject ids \['001'\]"):
        make_cv_splits(IDS + ["001"], 2, seed=0)
    with pytest.raises(InputError, match=r"no stratum .* \['011'\]"):
        make_cv_splits(IDS, 2, seed=0, strata={s: "0" for s in IDS[:-1]})
    splits = make_cv_splits(IDS, 5, seed=0)
    with pytest.raises(ConfigError, match=r"fold 5 is out of range: there are 5 folds, so use 0..4"):
        select_fold(splits, 5)
    with pytest.raises(ConfigError, match="fold -1 is out of range"):
        select_fold(splits, -1)
    assert select_fold(splits, 2) == splits[2]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    splits = make_cv_splits(IDS, 4, seed=2)
    path = save_splits(tmp_path / "split.json", splits, seed=2, fold=3, stratified=False)
    payload = load_splits(path)
    assert payload["folds"] == splits
    assert (payload["seed"], payload["n_folds"], payload["fold"]) == (2, 4, 3)
    with pytest.raises(InputError, match="does not exist"):
        load_splits(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"folds": 3}')
    with pytest.raises(InputError, match="not a cmbstudy split.json"):
        load_splits(tmp_path / "bad.json")
