"""The study runner: order, skipping unchanged steps, and failures that name the cell."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from cmbstudy.errors import ConfigError
from cmbstudy.study import STEPS, StudyError, run_study


def _write_project(root: Path, body: str) -> None:
    """A checkout with one notebook per study step; each writes a marker file."""
    (root / "book").mkdir(parents=True)
    (root / "notebooks").mkdir()
    for step in STEPS:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        params = nbformat.v4.new_code_cell("profile = 'quick'\nseed = 0\nresults_dir = '.'")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(body.replace("STEP", step.name))]
        nbformat.write(nb, root / "notebooks" / f"{step.name}.ipynb")


@pytest.mark.slow
def test_runs_skips_and_reruns(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    _write_project(
        root,
        "import pathlib\n"
        "pathlib.Path(results_dir, 'STEP.txt').write_text(f'{profile} {seed}')",
    )
    first = run_study("smoke", out=out, build_book=False, project_root=root)
    assert set(first) == {step.name for step in STEPS}
    for step in STEPS:
        assert (out / f"{step.name}.txt").read_text() == "smoke 0"
        assert (out / "notebooks" / f"{step.name}.ipynb").is_file()
    state = json.loads((out / "study_state.json").read_text())
    assert set(state) == {step.name for step in STEPS}

    assert run_study("smoke", out=out, build_book=False, project_root=root) == {}

    changed = run_study("smoke", out=out, overrides=["seed=7"], build_book=False, project_root=root)
    assert set(changed) == {step.name for step in STEPS}
    assert (out / f"{STEPS[0].name}.txt").read_text() == "smoke 7"

    forced = run_study("smoke", out=out, overrides=["seed=7"], force=True, build_book=False,
                       project_root=root)
    assert set(forced) == {step.name for step in STEPS}


@pytest.mark.slow
def test_failure_names_notebook_and_cell(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    _write_project(root, "raise RuntimeError('synthetic failure in STEP')")
    first = STEPS[0].name
    with pytest.raises(StudyError, match=rf"{first}\.ipynb failed in cell .*RuntimeError: synthetic failure"):
        run_study("smoke", out=out, build_book=False, project_root=root)
    assert (out / "notebooks" / f"{first}.failed.ipynb").is_file()
    assert not (out / "notebooks" / f"{first}.ipynb").exists()


def test_unknown_step_and_missing_data_root(tmp_path: Path) -> None:
    root = tmp_path / "project"
    _write_project(root, "pass")
    with pytest.raises(ConfigError, match="unknown study step"):
        run_study("smoke", out=tmp_path / "r", steps=["99_nothing"], build_book=False, project_root=root)
    with pytest.raises(ConfigError, match="is not a folder"):
        run_study("smoke", data_root=tmp_path / "absent", out=tmp_path / "r", build_book=False,
                  project_root=root)
