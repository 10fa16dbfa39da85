"""`cmbstudy study --profile smoke` executes every notebook and renders the book."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cmbstudy.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _chapters(toc: dict) -> list[str]:
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def test_smoke_study_renders_the_book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    shutil.copytree(REPO / "notebooks", project / "notebooks")
    shutil.copytree(REPO / "book", project / "book", ignore=shutil.ignore_patterns("_build", "executed"))
    monkeypatch.chdir(project)
    out = tmp_path / "results"
    assert main(["study", "--profile", "smoke", "--out", str(out), "--quiet"]) == 0

    html = project / "book" / "_build" / "html"
    toc = yaml.safe_load((project / "book" / "_toc.yml").read_text())
    for chapter in _chapters(toc):
        page = html / f"{chapter}.html"
        assert page.is_file(), f"chapter {chapter} was not rendered"
        assert "Traceback" not in page.read_text()
    cohort = (html / "executed" / "01_synthetic_cohort.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', cohort)
    assert len(images) >= 4, "the cohort chapter lost its figures"
    for src in images:
        assert (html / "executed" / src).resolve().is_file(), src
    # glued numbers are rendered in the prose, not left as roles
    text = re.sub(r"<[^>]+>", "", cohort)
    assert "glue:text" not in text
    assert re.search(r"over the peak field\) is\s+\d\.\de-0\d", text), "sphere-field error not rendered"
    assert re.search(r"it reaches F1 = \d\.\d\d", text), "classical F1 not rendered"

    # a second run skips the unchanged notebook and rebuilds only the book
    assert main(["study", "--profile", "smoke", "--out", str(out), "--quiet", "--no-book"]) == 0
