"""`cmbstudy study --profile smoke` executes every notebook and renders the book."""

from __future__ import annotations

import re

import pytest
import yaml

from cmbstudy.cli import main

pytestmark = pytest.mark.slow


def _chapters(toc: dict) -> list[str]:
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def test_smoke_study_renders_the_book(smoke_study, monkeypatch: pytest.MonkeyPatch) -> None:
    project, out = smoke_study.project, smoke_study.results
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
    # the comparison chapters render Table 2 / Table 4 with the paper's column and a computed ordering
    for chapter, table in (("05_method_comparison", "Table 2"), ("06_small_lesions", "Table 4")):
        page = re.sub(r"<[^>]+>", "", (html / "executed" / f"{chapter}.html").read_text())
        assert table in page and "paper (72-subject test set, 3 sources)" in page, chapter
        ordering = re.search(r"Ordering:\s*(ours|no baseline|cannot tell)", page)
        assert ordering, f"{chapter}: ordering sentence not rendered"
    discussion = re.sub(r"<[^>]+>", "", (html / "discussion.html").read_text())
    assert "glue:text" not in discussion and "::table2_ordering" not in discussion

    # a second run skips the unchanged notebooks and rebuilds nothing
    monkeypatch.chdir(project)
    assert main(["study", "--profile", "smoke", "--out", str(out), "--quiet", "--no-book"]) == 0
