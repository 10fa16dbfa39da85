"""The study runner: order, per-run training instances, skipping unchanged work, failures that name the cell."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from cmbstudy.errors import ConfigError
from cmbstudy.study.runner import STEPS, StudyError, run_study

# two training runs: the main network on fold 0 and the network without CBAM on fold 0
RUNS = ["study.baselines=[]", "study.ablation=[without_cbam]", "study.cross_modality=false", "study.cv_folds=[0]"]
TRAINING = "03_training"


def _write_project(root: Path, body: str, skip: tuple[str, ...] = ()) -> None:
    """A checkout with one notebook per study step; ``body`` may use STEP and the parameters."""
    (root / "book").mkdir(parents=True)
    (root / "notebooks").mkdir()
    for step in STEPS:
        if step.name in skip:
            continue
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        text = "profile = 'quick'\nseed = 0\nresults_dir = '.'\nvariant = '-'\nfold = -1\nmodality = '-'"
        if step.name != TRAINING:
            text = text.split("\nvariant")[0]
        params = nbformat.v4.new_code_cell(text)
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(body.replace("STEP", step.name))]
        nbformat.write(nb, root / "notebooks" / f"{step.name}.ipynb")


LOG_BODY = (
    "import pathlib\n"
    "line = 'STEP ' + (f'{variant} {fold} {modality} ' if 'variant' in dir() else '') + f'{profile} {seed}'\n"
    "with open(pathlib.Path(results_dir, 'log.txt'), 'a') as log:\n"
    "    log.write(line + '\\n')\n"
)


def _log(out: Path) -> list[str]:
    path = out / "log.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    path.unlink(missing_ok=True)
    return lines


@pytest.mark.slow
def test_runs_every_step_and_instance_in_order_then_skips(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    _write_project(root, LOG_BODY)
    first = run_study("smoke", out=out, overrides=RUNS, build_book=False, project_root=root)
    assert set(first) == {step.name for step in STEPS}
    names = [s.name for s in STEPS]
    at = names.index(TRAINING)
    expected = [f"{name} smoke 0" for name in names[:at]]
    expected += [f"{TRAINING} rlk_unet_cbam 0 all smoke 0", f"{TRAINING} without_cbam 0 all smoke 0"]
    expected += [f"{name} smoke 0" for name in names[at + 1:]]
    assert _log(out) == expected
    executed = out / "notebooks"
    assert (executed / TRAINING / "rlk_unet_cbam-fold0.ipynb").is_file()
    assert (executed / TRAINING / "without_cbam-fold0.ipynb").is_file()
    book_copy = nbformat.read(executed / f"{TRAINING}.ipynb", as_version=4)  # the main network's run
    assert "variant = \"rlk_unet_cbam\"" in book_copy.cells[1].source
    state = json.loads((out / "study_state.json").read_text())
    assert set(state["steps"]) == {step.name for step in STEPS}
    assert set(state["steps"][TRAINING]["instances"]) == {"rlk_unet_cbam-fold0", "without_cbam-fold0"}
    timings = (out / "study_timings.tsv").read_text().splitlines()
    assert timings[0] == "step\tinstance\tseconds\tfinished"
    assert sum(line.startswith(f"{TRAINING}\t") for line in timings) == 2
    total = float(timings[-1].split("\t")[2])
    assert total == pytest.approx(sum(float(line.split("\t")[2]) for line in timings[1:-1]), abs=0.2)
    assert state["total_seconds"] == pytest.approx(total)

    assert run_study("smoke", out=out, overrides=RUNS, build_book=False, project_root=root) == {}
    assert _log(out) == []


@pytest.mark.slow
def test_changed_variant_reruns_only_its_instance(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    _write_project(root, LOG_BODY)
    steps = ["01_synthetic_cohort", TRAINING, "04_cross_validation"]
    run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=steps, project_root=root)
    assert len(_log(out)) == 4

    # a new cross-validation fold adds one run; the existing runs are kept
    more = [*RUNS[:-1], "study.cv_folds=[0, 1]"]
    ran = run_study("smoke", out=out, overrides=more, build_book=False, steps=steps, project_root=root)
    assert set(ran) == {TRAINING, "04_cross_validation"}
    assert _log(out) == [f"{TRAINING} rlk_unet_cbam 1 all smoke 0", "04_cross_validation smoke 0"]

    # a changed variant retrains only the runs of that variant
    changed = [*more, "variants.without_cbam={model.cbam_skips: 0, model.cbam_reduction: 8}"]
    run_study("smoke", out=out, overrides=changed, build_book=False, steps=steps, project_root=root)
    assert _log(out) == [f"{TRAINING} without_cbam 0 all smoke 0", "04_cross_validation smoke 0"]

    # force reruns everything asked for
    forced = run_study("smoke", out=out, overrides=changed, force=True, build_book=False, steps=steps,
                       project_root=root)
    assert set(forced) == set(steps)
    assert len(_log(out)) == 5


def _interval(executed: Path) -> tuple[datetime, datetime]:
    meta = nbformat.read(executed, as_version=4).metadata["papermill"]
    return datetime.fromisoformat(meta["start_time"]), datetime.fromisoformat(meta["end_time"])


@pytest.mark.slow
def test_steps_that_need_none_of_each_other_run_together(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    _write_project(root, "import time\nif 'STEP' > '03':\n    time.sleep(1.5)")
    analyses = [step.name for step in STEPS if "03_training" in step.depends_on and step.name > TRAINING]
    steps = ["01_synthetic_cohort", TRAINING, *analyses, "14_abstract"]
    run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=steps, project_root=root, jobs=2)
    executed = out / "notebooks"
    when = {name: _interval(executed / f"{name}.ipynb") for name in ["01_synthetic_cohort", *analyses, "14_abstract"]}
    trained = max(_interval(path)[1] for path in (executed / TRAINING).glob("*.ipynb"))
    assert when["01_synthetic_cohort"][1] <= min(start for start, _ in (when[a] for a in analyses))
    assert all(trained <= when[a][0] for a in analyses)  # after the runs they read
    first, second = (when[a] for a in analyses[:2])
    assert first[0] < second[1] and second[0] < first[1]  # two at a time
    assert max(end for _, end in (when[a] for a in analyses)) <= when["14_abstract"][0]  # after what it reads
    state = json.loads((out / "study_state.json").read_text())
    assert set(analyses) <= set(state["steps"])
    assert run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=steps, project_root=root,
                     jobs=2) == {}


@pytest.mark.slow
def test_a_step_that_reads_one_run_starts_once_it_is_trained(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    # the run without CBAM trains longest; the monitoring chapter reads only the main network's run
    _write_project(root, LOG_BODY + "import time\nif 'STEP' == '03_training' and variant == 'without_cbam':\n"
                   "    time.sleep(6)")
    steps = ["01_synthetic_cohort", TRAINING, "15_monitoring"]
    run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=steps, project_root=root, jobs=2)
    when = {path.stem: _interval(path) for path in (out / "notebooks" / TRAINING).glob("*.ipynb")}
    monitoring = _interval(out / "notebooks" / "15_monitoring.ipynb")
    assert when["rlk_unet_cbam-fold0"][1] <= monitoring[0] < when["without_cbam-fold0"][1]  # beside the other run
    _log(out)
    assert run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=steps, project_root=root,
                     jobs=2) == {}
    # asked for alone, it is still skipped: its key is the one it had beside the runs
    assert run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=["15_monitoring"],
                     project_root=root) == {}


@pytest.mark.slow
def test_a_volumetric_run_starts_first_when_runs_go_two_at_a_time(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    _write_project(root, "import time\ntime.sleep(1.0)")
    runs = [*RUNS[:1], "study.baselines=[dou2016]", *RUNS[1:]]  # the profile's order: main, without CBAM, Dou 2016
    run_study("smoke", out=out, overrides=runs, build_book=False, steps=["01_synthetic_cohort", TRAINING],
              project_root=root, jobs=2)
    when = {path.stem: _interval(path) for path in (out / "notebooks" / TRAINING).glob("*.ipynb")}
    assert set(when) == {"rlk_unet_cbam-fold0", "without_cbam-fold0", "dou2016-fold0"}
    # Dou 2016's 3D network and the main run first; the run without CBAM once one of them has ended
    assert when["without_cbam-fold0"][0] >= min(when["dou2016-fold0"][1], when["rlk_unet_cbam-fold0"][1])


@pytest.mark.slow
def test_failure_names_notebook_instance_and_cell(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    _write_project(root, "if variant == 'without_cbam':\n    raise RuntimeError('no CBAM today')")
    with pytest.raises(
        StudyError,
        match=rf"{TRAINING}\.ipynb \(instance without_cbam-fold0\) failed in cell .*RuntimeError: no CBAM today",
    ):
        run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=[TRAINING], project_root=root)
    assert (out / "notebooks" / TRAINING / "rlk_unet_cbam-fold0.ipynb").is_file()
    assert (out / "notebooks" / TRAINING / "without_cbam-fold0.failed.ipynb").is_file()
    # the finished instance is recorded and skipped next time
    state = json.loads((out / "study_state.json").read_text())
    assert set(state["steps"][TRAINING]["instances"]) == {"rlk_unet_cbam-fold0"}


@pytest.mark.slow
def test_failure_of_a_plain_step_names_notebook_and_cell(tmp_path: Path) -> None:
    root, out = tmp_path / "project", tmp_path / "results"
    _write_project(root, "raise RuntimeError('synthetic failure in STEP')")
    first = STEPS[0].name
    with pytest.raises(StudyError, match=rf"{first}\.ipynb failed in cell .*RuntimeError: synthetic failure"):
        run_study("smoke", out=out, build_book=False, steps=[first], project_root=root)
    assert (out / "notebooks" / f"{first}.failed.ipynb").is_file()
    assert not (out / "notebooks" / f"{first}.ipynb").exists()


def test_unknown_step_missing_notebook_and_missing_data_root(tmp_path: Path) -> None:
    root = tmp_path / "project"
    _write_project(root, "pass", skip=("05_method_comparison",))
    with pytest.raises(ConfigError, match="unknown study step"):
        run_study("smoke", out=tmp_path / "r", steps=["99_nothing"], build_book=False, project_root=root)
    with pytest.raises(ConfigError, match="is not a folder"):
        run_study("smoke", data_root=tmp_path / "absent", out=tmp_path / "r", build_book=False,
                  project_root=root)
    with pytest.raises(StudyError, match=r"05_method_comparison.ipynb missing from the checkout"):
        run_study("smoke", out=tmp_path / "r", build_book=False, project_root=root)
    assert not (tmp_path / "r" / "notebooks").exists()  # nothing ran


def test_list_runs_prints_the_profiles_training_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from cmbstudy.cli import main
    from cmbstudy.config import load_profile
    from cmbstudy.study.runs import training_instances

    assert main(["study", "--profile", "quick", "--list-runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "run\tvariant\tfold\tmodality"
    assert [line.split("\t")[0] for line in lines[1:]] == [r["name"] for r in training_instances(load_profile("quick"))]
    assert main(["study", "--profile", "quick", "--set", "study.cv_folds=[0]", "--list-runs"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(lines) - 2  # folds 1 and 2 of the main network gone


@pytest.mark.slow
def test_an_edited_figure_module_reruns_its_notebook_and_retrains_nothing(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import functools
    import shutil

    import cmbstudy
    from cmbstudy.study import runner

    package = tmp_path / "src" / "cmbstudy"  # a copy of the package, edited below, whose modules the keys hash
    shutil.copytree(Path(cmbstudy.__file__).parent, package, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    monkeypatch.setattr(runner, "notebook_source_hash",
                        functools.partial(runner.notebook_source_hash, package_dir=package))
    root, out = tmp_path / "project", tmp_path / "results"
    imports = {TRAINING: "from cmbstudy.study.training_runs import train_run_report\n",
               "08_burden": "from cmbstudy.figures.burden import plot_aria_h_confusion\n"}
    _write_project(root, LOG_BODY)
    for step, line in imports.items():  # the notebooks import what the study's notebooks import
        path = root / "notebooks" / f"{step}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells[1].source = line + nb.cells[1].source
        nbformat.write(nb, path)
    steps = ["01_synthetic_cohort", TRAINING, "08_burden"]
    run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=steps, project_root=root)
    assert len(_log(out)) == 4

    with (package / "figures" / "burden.py").open("a") as module:
        module.write("# an edit to the burden figure\n")
    ran = run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=steps, project_root=root)
    assert set(ran) == {"08_burden"} and _log(out) == ["08_burden smoke 0"]

    with (package / "models" / "rlk_unet.py").open("a") as module:  # reached through the model registry
        module.write("# an edit to the network\n")
    run_study("smoke", out=out, overrides=RUNS, build_book=False, steps=steps, project_root=root)
    assert _log(out) == [f"{TRAINING} rlk_unet_cbam 0 all smoke 0", f"{TRAINING} without_cbam 0 all smoke 0",
                         "08_burden smoke 0"]
