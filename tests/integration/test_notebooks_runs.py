"""Notebooks 02-04, 07 and 09 execute through the study runner at the smoke profile, with figures and glue (the
session's smoke study, tests/integration/conftest.py, runs them with every other notebook)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cmbstudy.config import load_profile
from cmbstudy.study.runs import collect_runs, training_instances

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STEPS = ["01_synthetic_cohort", "02_preprocessing", "03_training", "04_cross_validation", "07_cross_modality",
         "09_cbam_ablation"]


@pytest.fixture(scope="module")
def results(smoke_study) -> Path:
    timings = (smoke_study.results / "study_timings.tsv").read_text()
    assert all(f"\n{step}\t" in timings for step in STEPS)  # each ran through the runner
    return smoke_study.results


def _executed(results: Path, name: str) -> dict:
    return json.loads((results / "notebooks" / f"{name}.ipynb").read_text())


def _images(nb: dict) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def _glued(nb: dict) -> dict[str, str]:
    glued = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook", {})
            if meta.get("name"):
                glued[meta["name"]] = output["data"].get(meta.get("mime_prefix", "") + "text/plain")
    return glued


def _text(nb: dict) -> str:
    return "\n".join(
        "".join(o.get("data", {}).get("text/markdown", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for c in nb["cells"] for o in c.get("outputs", [])
    )


def test_sources_are_thin_and_clear() -> None:
    for name in STEPS[1:]:
        nb = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0]["metadata"].get("tags", []), name
        assert "".join(code[1]["source"]).startswith("%matplotlib inline"), name
        assert not any(c.get("outputs") for c in code), f"{name} has committed outputs"
        assert not any("def " in "".join(c["source"]) or "class " in "".join(c["source"]) for c in code), name


def test_preprocessing_fills_the_cache(results: Path) -> None:
    nb = _executed(results, "02_preprocessing")
    assert _images(nb) >= 1
    glued = _glued(nb)
    assert int(glued["n_subjects"]) == 6 + 4 and int(glued["n4_shrink"]) == 4  # the training pool and test cohort
    assert 0 < float(glued["seconds_per_subject"]) < 120
    assert len(list((results / "runs" / ".cmbstudy_cache").glob("sub-*.npz"))) >= 10


def test_training_instances_wrote_their_runs(results: Path) -> None:
    runs = collect_runs(results)
    assert sorted(runs["name"]) == sorted(str(i["name"]) for i in training_instances(load_profile("smoke")))
    assert {"rlk_unet_cbam-fold0", "rlk_unet_cbam-fold1", "rlk_unet_cbam-gre-fold0", "rlk_unet_cbam-swi-fold0",
            "without_cbam-fold0"} <= set(runs["name"])
    assert (runs["n_subjects"] >= 1).all() and (runs["n_params"] > 0).all()
    for name in runs["name"]:
        nb = json.loads((results / "notebooks" / "03_training" / f"{name}.ipynb").read_text())
        assert _images(nb) >= 1, name
        f1 = float(_glued(nb)["f1"])
        assert math.isnan(f1) or 0.0 <= f1 <= 1.0
    book = _executed(results, "03_training")
    assert _glued(book)["run_name"].strip("'") == "rlk_unet_cbam-fold0"
    assert (results / "runs" / "rlk_unet_cbam-gre-fold0" / "eval-test.json").is_file()
    timings = (results / "study_timings.tsv").read_text()
    assert "03_training\trlk_unet_cbam-swi-fold0\t" in timings and "\ntotal\t" in timings


def test_cross_validation_table(results: Path) -> None:
    nb = _executed(results, "04_cross_validation")
    assert _images(nb) >= 1
    glued = _glued(nb)
    assert int(glued["n_folds"]) == 2
    runs = collect_runs(results).set_index("name")
    ours = [runs.loc[f"rlk_unet_cbam-fold{k}", "f1"] for k in (0, 1)]
    assert float(glued["cv_f1_mean"]) == pytest.approx(sum(ours) / 2, abs=1e-6)
    assert int(glued["n_test_subjects"]) == 4  # every fold scores the same test cohort
    for k in (0, 1):
        assert (results / "runs" / f"rlk_unet_cbam-fold{k}" / "operating_point.json").is_file()
    assert "paper fold 1" in _text(nb)


def test_cross_modality_and_ablation(results: Path) -> None:
    nb = _executed(results, "07_cross_modality")
    glued = _glued(nb)
    assert float(glued["paper_gre_to_swi_f1"]) == pytest.approx(0.765)
    test = json.loads((results / "runs" / "rlk_unet_cbam-gre-fold0" / "eval-test.json").read_text())
    participants = (results / "data" / "synthetic-smoke-test" / "participants.tsv").read_text().splitlines()
    n_swi = sum("\tswi\t" in line for line in participants[1:])
    assert test["summary"]["n_subjects"] == n_swi >= 1  # the test cohort's SWI subjects
    f1 = test["summary"]["f1"]
    assert (math.isnan(float(glued["gre_to_swi_f1"])) and f1 is None) or float(glued["gre_to_swi_f1"]) == pytest.approx(f1)
    nb = _executed(results, "09_cbam_ablation")
    assert _images(nb) >= 1
    glued = _glued(nb)
    assert float(glued["paper_f1_with"]) == pytest.approx(0.887)
    assert "f1_without" in glued and "f1_with" in glued
