"""No number is typed into the book's prose: every one comes from the package through ``glue``.

The markdown of ``book/*.md`` and of every notebook's markdown cells is scanned
for digits, after removing what may hold them: glue and other roles with their
targets, code spans and fenced blocks, formulas (``$...$``), link targets,
headings (chapter numbers and table names), and the names in :data:`ALLOWED`, each with the reason it is a
name and not a quantity. Anything left is a typed number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Names that contain digits but state no quantity of the study, each with why.
ALLOWED: dict[str, str] = {
    r"\b2\.5D\b": "the input format's name (three adjacent slices)",
    r"\b[23]D\b": "dimensionality named, not measured",
    r"\bT2\\?\*": "the MRI contrast's name (T2*-weighted)",
    r"\bN4\b": "the bias-field correction's name (N4ITK)",
    r"\b(ICBM|MNI)\s?152\b": "the template's name",
    r"\bCBAM-(Skip[12]|AllSkip)\b": "the ablation arms' names in the paper's Table 8",
    r"\b(Tables?|Figs?\.|Figures?|[Ss]ections?|[Nn]otebooks?|[Cc]hapters?|[Ff]old)\s+\d+(\.\d+)*"
    r"(\s*(–|-|,|and|to)\s*\d+(\.\d+)*)*": "a reference to a table, figure, section, notebook or fold by its number",
    r"\bMICCAI 20\d\d\b": "the challenge's name (MICCAI 2021 VALDO)",
    r"\b(RTX )?A5000\b|\bH[12]00\b": "a GPU's model name",
    r"\bJupyter Book 1\b|\bJupyter Book 2\b": "the tool's major version, which decides whether the book builds offline",
    r"\bsub-\d+\b": "a subject identifier of a layout example",
    r"\bv2\b": "nnU-Net's version name",
    r"\bF1\b": "the metric's name (the F1 score)",
    r"\b95\s?% (bootstrap )?(CIs?|(confidence )?intervals?|confidence band|percentile intervals?)": (
        "the confidence level of every interval of the study, the field's convention, named with the interval"),
    r"\b1/(2|4|8|16)\b": "a stage of the U-Net named by its scale (the input halved per stage)",
    r"\bbf16\b": "a floating-point format's name (bfloat16)",
}

_FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1\s*$", re.S | re.M)
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)  # a formula's constants (the 1/3 of the dipole kernel)
_ROLE = re.compile(r"\{[a-z][\w:-]*\}`[^`]*`")
_CODE = re.compile(r"``[^`]+``|`[^`]+`")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_COMMENT = re.compile(r"<!--.*?-->|^%.*$", re.S | re.M)
_HEADING = re.compile(r"^\s*#{1,6}\s.*$", re.M)
_DIRECTIVE_OPTION = re.compile(r"^:[\w-]+:.*$", re.M)
_DIGIT = re.compile(r"[0-9]")


def strip_allowed(text: str) -> str:
    """``text`` without what may hold digits: roles, code, link targets, headings, comments and :data:`ALLOWED`."""
    for pattern in (_FENCE, _MATH, _COMMENT, _ROLE, _CODE, _LINK_TARGET, _HEADING, _DIRECTIVE_OPTION):
        text = pattern.sub(" ", text)
    for pattern in ALLOWED:
        text = re.sub(pattern, " ", text)
    return text


def typed_numbers(text: str) -> list[str]:
    """Each line of ``text`` that still holds a digit once :func:`strip_allowed` has run, with its number."""
    found = []
    for number, line in enumerate(strip_allowed(text).splitlines(), start=1):
        if _DIGIT.search(line):
            found.append(f"line {number}: {line.strip()}")
    return found


def markdown_sources() -> list[tuple[str, str]]:
    """(label, markdown) of every book page and every notebook markdown cell."""
    sources = [(str(p.relative_to(REPO)), p.read_text(encoding="utf-8")) for p in sorted((REPO / "book").glob("*.md"))]
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                sources.append((f"{path.relative_to(REPO)} cell {index}", "".join(cell["source"])))
    return sources


@pytest.mark.parametrize("label,text", markdown_sources(), ids=lambda v: v if isinstance(v, str) and
                         len(v) < 80 else None)
def test_no_number_is_typed_into_the_prose(label: str, text: str) -> None:
    found = typed_numbers(text)
    assert not found, f"{label} types numbers; glue them from the package instead:\n" + "\n".join(found)


def test_a_typed_figure_is_found() -> None:
    # the introduction as it was, with the paper's figures typed
    typed = "They report lesion-wise precision 0.891, recall 0.887 and 0.83 false positives per subject."
    assert typed_numbers(typed)
    assert typed_numbers("the match radius is 4 voxels")
    assert typed_numbers("an F1 of 0.887, 95% of the lesions")


def test_what_may_hold_digits_is_not_flagged() -> None:
    text = "\n".join([
        "# 04 · Cross-validation (Table 3)",
        "F1 = {glue:text}`f1:.3f` against {glue:text}`executed/14_abstract.ipynb::paper_f1:.3f`.",
        "Run `cmbstudy study --profile quick --jobs 2` on T2\\*-GRE in 2.5D ({cite:p}`cho2025`).",
        "See Tables 7–8 and Fig. 4, section 3.1 and [the guide](https://example.org/v2/page1).",
        "```bash", "make study PROFILE=paper  # 1000 epochs", "```",
    ])
    assert typed_numbers(text) == []
