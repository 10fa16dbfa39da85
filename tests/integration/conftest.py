"""The smoke-profile study, run once per test session and shared by the book tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SmokeStudy:
    """A copy of the notebooks and the book with the smoke study run and the book rendered."""

    project: Path  # holds notebooks/ and book/ (book/_build/html is the rendered book)
    results: Path  # the study's results folder


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmokeStudy]:
    """Run ``cmbstudy study --profile smoke`` on a copy of the repository's notebooks and book."""
    from cmbstudy.cli import main

    root = tmp_path_factory.mktemp("smoke-study")
    project = root / "project"
    shutil.copytree(REPO / "notebooks", project / "notebooks")
    shutil.copytree(REPO / "book", project / "book", ignore=shutil.ignore_patterns("_build", "executed"))
    results = root / "results"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CMBSTUDY_DATA", raising=False)
        patch.setenv("MPLBACKEND", "Agg")
        patch.chdir(project)
        assert main(["study", "--profile", "smoke", "--out", str(results), "--quiet"]) == 0
    yield SmokeStudy(project, results)

