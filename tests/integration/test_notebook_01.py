"""Notebook 01 executes at the smoke profile and glues the numbers its prose quotes (executed by the session's
smoke study, tests/integration/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_synthetic_cohort.ipynb"


def test_notebook_source_is_thin() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    code = [("".join(c["source"]), c.get("metadata", {}).get("tags", [])) for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0][1]
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    for source, _ in code:
        assert "def " not in source and "class " not in source


def test_notebook_executes(smoke_study) -> None:
    nb = json.loads((smoke_study.results / "notebooks" / "01_synthetic_cohort.ipynb").read_text())
    pngs = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) >= 4, "figures were not displayed as images (matplotlib backend?)"
    glued = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook", {})
            if meta.get("name"):
                glued[meta["name"]] = output["data"].get(meta.get("mime_prefix", "") + "text/plain")
    for key in ("sphere_field_error", "te_blooming_ratio", "slice_blooming_ratio", "classical_f1", "classical_fp", "n_subjects"):
        assert key in glued, f"{key} not glued"
    assert 1.4 < float(glued["te_blooming_ratio"]) < 3.0
    assert float(glued["sphere_field_error"]) < 0.01
    assert (smoke_study.results / "data" / "synthetic-smoke" / "participants.tsv").is_file()
