"""Notebooks 08, 10, 11 and 12 execute at the smoke profile on a small results folder and glue their numbers.

The fixture makes the layout of ``cmbstudy.study.runs`` with the package's API: the
smoke cohort and its test cohort, the main network on folds 0 and 1 and the network
without CBAM on fold 0, one epoch each (each calibrated on its validation subjects),
their test-set predictions and both evaluations. One epoch leaves the probabilities
low, so the predictions use a threshold of 0.03: that gives true and false positives
for every table and figure to show.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
THRESHOLD = 0.03
GLUED = {
    "08_burden": ("agreement", "weighted_kappa", "paper_agreement", "rho", "rho_ci_low", "rho_ci_high", "rho_n",
                  "paper_rho", "mean_abs_count_difference"),
    "10_explainability": ("n_examples", "n_lesion_slices", "focus_with", "focus_without", "focus_chance"),
    "11_qualitative": ("n_shown", "modalities", "n_small_shown"),
    "12_beyond_the_paper": ("n_fp", "fp_share_vein", "fp_share_edge", "valdo_median_f1", "f1", "f1_ci_low",
                            "f1_ci_high", "main_seconds", "paper_seconds"),
}
MIN_IMAGES = {"08_burden": 3, "10_explainability": 3, "11_qualitative": 3, "12_beyond_the_paper": 1}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cmbstudy.config import load_profile, resolve_variant
    from cmbstudy.evaluation.evaluate import evaluate_predictions
    from cmbstudy.inference.predict import predict_dataset
    from cmbstudy.study.runs import run_path
    from cmbstudy.synth import make_cohort, make_test_cohort
    from cmbstudy.training.run import train_fold

    root = tmp_path_factory.mktemp("figures") / "results"
    data, test = root / "data" / "synthetic-smoke", root / "data" / "synthetic-smoke-test"
    profile = load_profile("smoke", ["train.epochs=1"])
    make_cohort(data, profile=profile, progress=False)
    make_test_cohort(test, profile=profile, progress=False)
    for variant, fold in (("rlk_unet_cbam", 0), ("rlk_unet_cbam", 1), ("without_cbam", 0)):
        run = run_path(root, variant, fold)
        train_fold(resolve_variant(profile, variant), data, fold, run, device="cpu", progress=False)
        predict_dataset(run, test, run / "pred-test", threshold=THRESHOLD, device="cpu", progress=False)
        for rule, name in (("paper", "eval-test.json"), ("valdo", "eval-test-valdo.json")):
            evaluate_predictions(run / "pred-test", test, rule=rule, json_out=run / name, threshold=THRESHOLD,
                                 only_predicted=True, n_bootstrap=50, progress=False)
    return root


@pytest.mark.parametrize("name", sorted(GLUED))
def test_notebook_executes_with_figures_and_glue(name: str, results: Path, tmp_path: Path) -> None:
    papermill = pytest.importorskip("papermill")
    source = NOTEBOOKS / f"{name}.ipynb"
    nb = json.loads(source.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []) and not any(c.get("outputs") for c in code)
    assert all("def " not in "".join(c["source"]) and "class " not in "".join(c["source"]) for c in code)
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(source), str(out), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
        parameters={"profile": "smoke", "data_root": str(results / "data" / "synthetic-smoke"),
                    "test_root": str(results / "data" / "synthetic-smoke-test"), "results_dir": str(results)},
    )
    executed = json.loads(out.read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= MIN_IMAGES[name]
    glued = {}
    for output in outputs:
        meta = output.get("metadata", {}).get("scrapbook", {})
        if meta.get("name"):
            glued[meta["name"]] = output["data"].get(meta.get("mime_prefix", "") + "text/plain")
    missing = [key for key in GLUED[name] if key not in glued]
    assert not missing, f"{name} did not glue {missing}"
    if name == "08_burden":
        assert float(glued["paper_agreement"]) == pytest.approx(62 / 72)
        assert 0.0 <= float(glued["agreement"]) <= 1.0 and int(glued["rho_n"]) == 4  # the test cohort
    if name == "10_explainability":
        assert int(glued["n_examples"]) >= 1 and 0.0 <= float(glued["focus_with"]) <= 1.0
        assert 0.0 <= float(glued["focus_without"]) <= 1.0  # the run without CBAM is there
    if name == "11_qualitative":
        assert int(glued["n_shown"]) >= 2 and "GRE" in glued["modalities"]
    if name == "12_beyond_the_paper":
        assert int(glued["n_fp"]) > 0 and float(glued["paper_seconds"]) == pytest.approx(0.22)
        assert float(glued["main_seconds"]) > 0
