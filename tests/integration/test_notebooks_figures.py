"""Notebooks 08, 10, 11 and 12 execute at the smoke profile and glue their numbers.

The session's smoke study (tests/integration/conftest.py) executes them through the study runner, on runs
calibrated on their validation subjects; these tests read its executed copies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
GLUED = {
    "08_burden": ("agreement", "weighted_kappa", "paper_agreement", "rho", "rho_ci_low", "rho_ci_high", "rho_n",
                  "paper_rho", "mean_abs_count_difference"),
    "10_explainability": ("n_examples", "n_lesion_slices", "focus_with", "focus_without", "focus_chance"),
    "11_qualitative": ("n_shown", "modalities", "n_small_shown"),
    "12_beyond_the_paper": ("n_fp", "fp_share_vein", "fp_share_edge", "valdo_median_f1", "f1", "f1_ci_low",
                            "f1_ci_high", "main_seconds", "paper_seconds"),
}
MIN_IMAGES = {"08_burden": 3, "10_explainability": 3, "11_qualitative": 3, "12_beyond_the_paper": 1}


@pytest.mark.parametrize("name", sorted(GLUED))
def test_notebook_executes_with_figures_and_glue(name: str, smoke_study) -> None:
    source = NOTEBOOKS / f"{name}.ipynb"
    nb = json.loads(source.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []) and not any(c.get("outputs") for c in code)
    assert all("def " not in "".join(c["source"]) and "class " not in "".join(c["source"]) for c in code)
    executed = json.loads((smoke_study.results / "notebooks" / f"{name}.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= MIN_IMAGES[name]
    glued = {}
    for output in outputs:
        meta = output.get("metadata", {}).get("scrapbook", {})
        if meta.get("name"):
            glued[meta["name"]] = output["data"].get(meta.get("mime_prefix", "") + "text/plain")
    missing = [key for key in GLUED[name] if key not in glued]
    assert not missing, f"{name} did not glue {missing}"
