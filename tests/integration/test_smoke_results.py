"""The smoke study gives the numbers it gave before: a stored table (``data/smoke_results.tsv``).

A change of layout, a rename or a library that replaces hand-written code must leave every number
of the study as it was. The table and what it leaves out are described in ``smoke_results.py``;
regenerate it only for a change that is meant to change the numbers. A number agrees with its stored
value within one unit of the last digit kept (:func:`smoke_results.agrees`), so that the table holds on
any machine of this kind, not only on the one that wrote it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from smoke_results import agrees, collect, read_table, verdict_counts

pytestmark = pytest.mark.slow

STORED = Path(__file__).with_name("data") / "smoke_results.tsv"


def test_smoke_study_numbers_equal_the_stored_table(smoke_study) -> None:
    stored, now = read_table(STORED), collect(smoke_study.results)
    assert len(stored) > 1000  # the cohort, every notebook's glued numbers, every run's evaluation
    missing, new = sorted(set(stored) - set(now)), sorted(set(now) - set(stored))
    changed = [f"{key}: stored {stored[key]}, now {now[key]}" for key in sorted(set(stored) & set(now))
               if not agrees(key, stored[key], now[key])]
    assert not missing, f"{len(missing)} numbers are no longer computed, e.g. {missing[:5]}"
    assert not new, f"{len(new)} numbers are new, e.g. {new[:5]}: regenerate {STORED.name} if that is meant"
    assert not changed, f"{len(changed)} numbers changed:\n" + "\n".join(changed[:20])


def test_the_abstract_counts_the_verdicts_it_was_given(smoke_study) -> None:
    # the stored table holds each claim's verdict, not the abstract's counts of them (smoke_results.py)
    glued, counted = verdict_counts(smoke_study.results)
    assert glued == counted
    assert sum(counted.values()) >= 10


def test_the_table_would_see_a_changed_number(smoke_study, tmp_path: Path) -> None:
    # the comparison is not vacuous: one more false negative in one evaluation file changes one key
    copy = tmp_path / "results"
    shutil.copytree(smoke_study.results, copy, ignore=shutil.ignore_patterns("*.pt", "*.npz", "book"))
    path = copy / "runs" / "rlk_unet_cbam-fold0" / "eval-test.json"
    data = json.loads(path.read_text())
    data["summary"]["n_fn"] += 1
    path.write_text(json.dumps(data))
    stored = read_table(STORED)
    assert {k for k, v in collect(copy).items() if k not in stored or not agrees(k, stored[k], v)} == {
        "run.rlk_unet_cbam-fold0.eval-test.json.summary.n_fn"}


@pytest.mark.parametrize("key, stored, now, same", [
    ("run.x-fold0.pred-test.probability.mean", "0.8973", "0.8974", True),  # one unit of the 4th digit
    ("run.x-fold0.pred-test.probability.mean", "0.8973", "0.8975", False),
    ("run.x-fold0.pred-test.probability.max", "0.0945", "0.0946", True),  # one unit of the 3rd digit
    ("run.x-fold0.pred-test.probability.max", "0.0945", "0.0947", False),
    ("run.x-fold0.history.2.train_loss", "1.2", "1.201", True),  # "1.2000" kept as "1.2"
    ("glue.08_burden.rho", "0.123456", "0.123457", True),  # one unit of the 6th digit
    ("glue.08_burden.rho", "0.123456", "0.1235", False),  # a 6-digit value is not held to 4
    ("glue.08_burden.rho", "1", "0.99999", True),  # 1.0 kept as "1"
    ("run.x-fold0.eval-test.json.summary.n_fn", "5", "6", False),  # a count only when equal
    ("run.x-fold0.result.n_params", "1234567", "1234568", False),
    ("claim.burden[0].verdict", "replicates", "cannot tell", False),
    ("glue.08_burden.rho", "nan", "nan", True),
    ("glue.08_burden.rho", "nan", "0.5", False),
])
def test_numbers_agree_within_one_unit_of_their_last_kept_digit(key: str, stored: str, now: str, same: bool) -> None:
    assert agrees(key, stored, now) is same
