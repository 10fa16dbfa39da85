"""Burden allocation, parameter validation and output-folder errors of make_cohort."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cmbstudy.config import load_profile
from cmbstudy.errors import ConfigError, OutputError
from cmbstudy.synth import CohortSummary, make_cohort
from cmbstudy.synth.cohort import allocate_categories, draw_cmb_count


def test_categories_follow_paper_test_set(rng: np.random.Generator) -> None:
    assert Counter(allocate_categories(72, rng)) == {"0": 8, "1-4": 50, "5-9": 9, ">=10": 5}
    small = Counter(allocate_categories(6, rng))  # 0.67, 4.17, 0.75, 0.42 -> 1, 4, 1, 0
    assert small == {"0": 1, "1-4": 4, "5-9": 1}
    assert allocate_categories(10, np.random.default_rng(1)) != allocate_categories(10, np.random.default_rng(2))


def test_counts_within_category(rng: np.random.Generator) -> None:
    for cat, (lo, hi) in {"0": (0, 0), "1-4": (1, 4), "5-9": (5, 9), ">=10": (10, 18)}.items():
        counts = [draw_cmb_count(cat, rng) for _ in range(200)]
        assert min(counts) == lo and max(counts) == hi


@pytest.mark.parametrize(
    ("kwargs", "overrides", "match"),
    [
        ({"n_subjects": -1}, [], "n_subjects -1"),
        ({"n_subjects": 0}, [], "n_subjects 0"),
        ({"seed": -3}, [], "seed -3"),
        ({}, ["synth.voxel_mm=0"], "voxel_mm"),
        ({}, ["synth.swi_fraction=1.5"], "swi_fraction"),
    ],
)
def test_bad_parameters_write_nothing(tmp_path: Path, kwargs: dict, overrides: list, match: str) -> None:
    out = tmp_path / "cohort"
    with pytest.raises(ConfigError, match=match):
        make_cohort(out, profile=load_profile("smoke", overrides), progress=False, **kwargs)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        make_cohort(tmp_path / "c", profile="fast", progress=False)


def test_existing_nonempty_out_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="--overwrite"):
        make_cohort(out, profile="smoke", n_subjects=1, progress=False)
    assert (out / "keep.txt").read_text() == "x"


def test_summary_text() -> None:
    s = CohortSummary(Path("c"), 4, {"0": 1, "1-4": 3, "5-9": 0, ">=10": 0}, 7, {"a": 4}, 2.0)
    text = str(s)
    assert "subjects: 4 (7 CMBs)" in text and "1-4: 3" in text and "2.00 subjects/s" in text
