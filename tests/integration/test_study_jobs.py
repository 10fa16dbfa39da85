"""`cmbstudy study --jobs 2`: two training runs at once, each with the result it has when it runs alone."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
import torch

from cmbstudy.errors import ConfigError
from cmbstudy.study import jobs
from cmbstudy.study.jobs import KERNEL_START_ATTEMPTS, run_notebook, threads_per_job
from cmbstudy.study.runner import run_study
from cmbstudy.study.state import RECORD_SUFFIX

REPO = Path(__file__).resolve().parents[2]
RUNS = ["rlk_unet_cbam-fold0", "without_cbam-fold0"]
TRAINING = "03_training"


def _interval(executed: Path) -> tuple[datetime, datetime]:
    meta = nbformat.read(executed, as_version=4).metadata["papermill"]
    return datetime.fromisoformat(meta["start_time"]), datetime.fromisoformat(meta["end_time"])


def _model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint_best.pt", map_location="cpu", weights_only=True)["model"]


def test_threads_per_job_splits_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cmbstudy.study.jobs.available_cores", lambda: 8)
    assert threads_per_job(1, None) is None  # one job: torch's own default
    assert threads_per_job(3, None) == 2
    assert threads_per_job(16, None) == 1
    assert threads_per_job(4, 3) == 3
    with pytest.raises(ConfigError, match="--jobs 0: the training runs at once must be at least 1"):
        threads_per_job(0, None)
    with pytest.raises(ConfigError, match="--threads 0: each training run needs at least 1 thread"):
        threads_per_job(2, 0)


def _papermill_failing(starts: list[str], errors: list[str]):
    """A stand-in for papermill's ``execute_notebook`` that records each start, fails with each of ``errors`` in
    turn, then writes its output."""

    def execute(source: str, partial: str, **kwargs) -> None:
        starts.append(partial)
        if len(starts) <= len(errors):
            raise RuntimeError(errors[len(starts) - 1])
        Path(partial).write_text("{}")

    return execute


def test_a_kernel_that_never_started_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    never_started = "Kernel died before replying to kernel_info"
    starts: list[str] = []
    retried = [never_started, "Kernel didn't respond in 30 seconds", never_started][: KERNEL_START_ATTEMPTS - 1]
    monkeypatch.setattr(jobs.pm, "execute_notebook", _papermill_failing(starts, retried))
    run_notebook(tmp_path / "a.ipynb", tmp_path / "out" / "a.ipynb", {}, tmp_path)
    assert len(starts) == KERNEL_START_ATTEMPTS and (tmp_path / "out" / "a.ipynb").read_text() == "{}"

    starts.clear()
    monkeypatch.setattr(jobs.pm, "execute_notebook", _papermill_failing(starts, [*retried, never_started]))
    with pytest.raises(RuntimeError, match="kernel_info"):
        run_notebook(tmp_path / "b.ipynb", tmp_path / "out" / "b.ipynb", {}, tmp_path)
    assert len(starts) == KERNEL_START_ATTEMPTS and not (tmp_path / "out" / "b.ipynb").exists()

    starts.clear()
    monkeypatch.setattr(jobs.pm, "execute_notebook", _papermill_failing(starts, ["another failure"]))
    with pytest.raises(RuntimeError, match="another failure"):
        run_notebook(tmp_path / "c.ipynb", tmp_path / "out" / "c.ipynb", {}, tmp_path)
    assert len(starts) == 1  # any other error is not retried


def test_a_notebook_s_kernel_is_ended_not_waited_for(tmp_path: Path) -> None:
    # once the last cell has run, the kernel is killed: it never reaches its exit handlers, of which this
    # one would write a file and then keep a kernel that was asked to shut down alive for a minute
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import atexit, time\n"
        "atexit.register(time.sleep, 60)\n"
        "atexit.register(lambda: open('exited', 'w').close())  # run first: the last registered runs first")])
    nbformat.write(notebook, tmp_path / "a.ipynb")
    run_notebook(tmp_path / "a.ipynb", tmp_path / "out" / "a.ipynb", {}, tmp_path)
    assert (tmp_path / "out" / "a.ipynb").is_file()
    assert not (tmp_path / "exited").exists()


@pytest.mark.skipif(os.name != "posix", reason="kernels talk over TCP where there are no Unix sockets")
def test_each_kernel_gets_sockets_of_its_own() -> None:
    first, second = jobs._kernel_config(), jobs._kernel_config()
    assert first.KernelManager.transport == "ipc" and first.KernelManager.ip != second.KernelManager.ip
    assert Path(first.KernelManager.ip).is_absolute()  # not relative to the folder each notebook runs in


def test_a_temporary_folder_with_no_room_for_a_socket_s_name_gives_tcp(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path.joinpath(*["folder"] * 20)
    deep.mkdir(parents=True)
    monkeypatch.setattr(jobs.tempfile, "gettempdir", lambda: str(deep))
    assert "transport" not in jobs._kernel_config().KernelManager


@pytest.mark.slow
def test_jobs_run_in_the_folder_and_environment_of_whoever_submits_them(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("tag = ''", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os, pathlib\n"
                                  "pathlib.Path(f'{tag}.txt').write_text(os.environ.get('CMBSTUDY_TEST_MARK', ''))")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    seen = []
    for mark in ("first", "second"):  # the second submits from another folder, after the workers' server started
        folder = tmp_path / mark
        folder.mkdir()
        nbformat.write(notebook, folder / "job.ipynb")
        monkeypatch.chdir(folder)
        monkeypatch.setenv("CMBSTUDY_TEST_MARK", mark)
        pending = [jobs.Pending(tag, tag, tag, Path("executed") / f"{tag}.ipynb", {"tag": tag}) for tag in "ab"]
        jobs.run_pending(Path("job.ipynb"), pending, lambda job, seconds: seen.append(job.name), folder, 2, 1,
                         lambda text: None)
        assert {(folder / f"{tag}.txt").read_text() for tag in "ab"} == {mark}
        assert all((folder / "executed" / f"{tag}.ipynb").is_file() for tag in "ab")
    assert sorted(seen) == ["a", "a", "b", "b"]


def test_a_jobs_kernel_computes_on_its_share_of_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import pathlib, SimpleITK, torch\n"
        "pathlib.Path('threads.txt').write_text("
        "f'{torch.get_num_threads()} {SimpleITK.ProcessObject.GetGlobalDefaultNumberOfThreads()}')")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "job.ipynb")
    for name in jobs.THREAD_VARIABLES:  # whatever the caller's own settings
        monkeypatch.setenv(name, "3")
    jobs.run_notebook_in_job(tmp_path / "job.ipynb", tmp_path / "executed.ipynb", {}, tmp_path, "job", 1)
    assert (tmp_path / "threads.txt").read_text() == "1 1"
    assert all(os.environ[name] == "3" for name in jobs.THREAD_VARIABLES)  # and the caller's are left as they were


@pytest.mark.slow
def test_two_jobs_at_once_give_each_runs_result_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    together = tmp_path / "together"
    run_study("smoke", out=together, runs=RUNS, jobs=2, project_root=REPO)
    assert "2 training runs, 2 at a time on 1 thread(s) each" in capsys.readouterr().out
    executed = together / "notebooks" / TRAINING
    first, second = (_interval(executed / f"{name}.ipynb") for name in RUNS)
    assert first[0] < second[1] and second[0] < first[1]  # they ran at the same time
    for name in RUNS:
        assert json.loads((executed / name).with_suffix(RECORD_SUFFIX).read_text())["key"]

    run = together / "runs" / RUNS[0]
    a, scores = _model(run), json.loads((run / "eval-test.json").read_text())["summary"]
    # its notebook removed, the first run is trained again, alone, on the same cohort (the other steps are kept)
    (executed / f"{RUNS[0]}.ipynb").unlink()
    assert set(run_study("smoke", out=together, runs=RUNS[:1], threads=1, project_root=REPO)) == {TRAINING}
    b = _model(run)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert json.loads((run / "eval-test.json").read_text())["summary"] == scores
    # the other run is a different network: the comparison above can fail
    other = _model(together / "runs" / RUNS[1])
    assert other.keys() != a.keys() or any(not torch.equal(other[k], a[k]) for k in a)
