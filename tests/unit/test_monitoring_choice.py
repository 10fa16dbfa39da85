"""Monitoring's second-look threshold, chosen on development pairs by the F1 of new CMBs; severity per class."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cmbstudy.errors import InputError
from cmbstudy.evaluation.monitoring import choose_threshold, severity_breakdown


def _reference(new: list[bool]) -> pd.DataFrame:
    """A follow-up lesion table: CMB i at (10 i, 10, 5), new or persistent."""
    return pd.DataFrame({"x_vox": [10.0 * i for i in range(len(new))], "y_vox": 10.0, "z_vox": 5.0,
                         "new": [int(n) for n in new]})


def _found(calls: list[tuple[float, str]]) -> pd.DataFrame:
    """Monitor's lesion table: follow-up CMBs at x with a status (naive: the same)."""
    return pd.DataFrame({"detected_followup": True, "fx_vox": [x for x, _ in calls], "fy_vox": 10.0, "fz_vox": 5.0,
                         "status": [s for _, s in calls], "new_naive": [s == "new" for _, s in calls]})


def test_the_threshold_with_the_best_f1_of_new_cmbs_is_chosen() -> None:
    references = {"sub-1": _reference([True, True, False]), "sub-2": _reference([True])}
    found = {
        "sub-1": {0.1: _found([(0, "new"), (10, "new"), (20, "new"), (40, "new")]),  # 2 right, 2 false
                  0.3: _found([(0, "new"), (10, "new"), (20, "persistent")]),  # 2 right
                  0.6: _found([(0, "new")])},  # 1 right, 1 missed
        "sub-2": {0.1: _found([(0, "new")]), 0.3: _found([(0, "new")]), 0.6: _found([])},
    }
    chosen, table = choose_threshold(found, references)
    assert chosen == 0.3
    assert table.loc[0.3, ["tp", "fp", "fn"]].tolist() == [3, 0, 0] and table.loc[0.3, "f1"] == 1.0
    assert table.loc[0.1, ["tp", "fp", "fn"]].tolist() == [3, 2, 0] and table.loc[0.1, "false_new_per_pair"] == 1.0
    assert table.loc[0.6, ["tp", "fp", "fn"]].tolist() == [1, 0, 2]
    assert table.loc[0.3, "severity_agreement"] == 1.0 and table.loc[0.6, "severity_agreement"] == 0.5


def test_a_tie_goes_to_fewer_false_new_then_the_lower_threshold() -> None:
    references = {"sub-1": _reference([True, True])}
    found = {"sub-1": {0.2: _found([(0, "new"), (10, "new")]), 0.4: _found([(0, "new"), (10, "new")]),
                       0.1: _found([(0, "new"), (10, "new"), (30, "new")])}}
    assert choose_threshold(found, references)[0] == 0.2  # 0.1 ties on nothing: it has a false "new"


def test_no_pair_or_pairs_on_other_grids_are_refused() -> None:
    with pytest.raises(InputError, match="no development pair"):
        choose_threshold({}, {})
    references = {"sub-1": _reference([True]), "sub-2": _reference([True])}
    found = {"sub-1": {0.1: _found([])}, "sub-2": {0.2: _found([])}}
    with pytest.raises(InputError, match="same thresholds"):
        choose_threshold(found, references)


def test_severity_per_reference_class_shows_the_severe_pairs_recall() -> None:
    # four pairs: a severe one undercounted to moderate (8 of 11 found), a severe one right, a mild one right,
    # and a pair with none, called mild by one false "new"
    per_pair = pd.DataFrame({"reference_new": [11, 12, 3, 0], "tp": [8, 10, 3, 0],
                             "reference_severity": ["severe", "severe", "mild", "none"],
                             "severity": ["moderate", "severe", "mild", "mild"]})
    table = severity_breakdown(per_pair)
    assert table.index.tolist() == ["none", "mild", "moderate", "severe"]
    assert table["pairs"].tolist() == [1, 1, 0, 2]
    assert table.loc["severe", "severity right"] == 0.5 and table.loc["severe", "recall of new CMBs"] == 18 / 23
    assert table.loc["none", "severity right"] == 0.0 and math.isnan(table.loc["none", "recall of new CMBs"])
    assert math.isnan(table.loc["moderate", "severity right"]) and table.loc["moderate", "new CMBs"] == 0
    assert severity_breakdown(pd.DataFrame())["pairs"].tolist() == [0, 0, 0, 0]  # no pair monitored
