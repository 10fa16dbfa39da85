"""Run the study: every notebook with papermill in dependency order, then the book.

Each step is one notebook of ``notebooks/``. A step is skipped when nothing it
depends on changed since its last successful run: its notebook, its
parameters, the package's source, and the steps it depends on (a content hash,
kept in ``OUT/study_state.json``). A failing step names the notebook and the
cell, and leaves the executed copy (with the traceback) for inspection. The
executed notebooks are copied into ``book/executed/`` and rendered by Jupyter
Book 1 (Sphinx), which builds offline; Jupyter Book 2 downloads its theme at
build time and cannot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import load_profile
from .errors import CmbStudyError, ConfigError
from .io import check_output_dir, write_text_atomically

__all__ = ["Step", "STEPS", "StudyError", "find_project_root", "run_study", "build_book"]


class StudyError(CmbStudyError):
    """A study step or the book build failed."""


@dataclass(frozen=True)
class Step:
    """One notebook of the study."""

    name: str  # notebook file name without .ipynb, numbered in run order
    depends_on: tuple[str, ...] = ()  # names of steps whose artefacts it reads
    title: str = ""  # short description for progress and logs
    synthetic_only: bool = False  # always runs on the synthetic cohort, even with --data


STEPS: tuple[Step, ...] = (
    Step("01_synthetic_cohort", (), "synthetic cohort: physics, cohort table, classical detector",
         synthetic_only=True),
)


def find_project_root(start: Path | None = None) -> Path:
    """The folder holding ``notebooks/`` and ``book/`` (the repository root).

    Raises:
        StudyError: no such folder above ``start`` (the study runs from a source checkout).
    """
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "notebooks").is_dir() and (candidate / "book").is_dir():
            return candidate
    package_root = Path(__file__).resolve().parents[2]
    if (package_root / "notebooks").is_dir():
        return package_root
    raise StudyError(
        f"no notebooks/ and book/ folders found above {here}: run `cmbstudy study` "
        "from the cmbstudy source checkout"
    )


def _sha256_of_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _source_hash() -> str:
    package = Path(__file__).resolve().parent
    files = [p for p in package.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()]
    return _sha256_of_files(files)


def _step_parameters(declared: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Only the parameters the notebook declares in its ``parameters`` cell."""
    return {key: value for key, value in context.items() if key in declared}


def _load_state(path: Path) -> dict[str, Any]:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def _run_notebook(source: Path, executed: Path, parameters: dict[str, Any], cwd: Path) -> None:
    import papermill as pm

    partial = executed.with_name(f".{executed.stem}.partial.ipynb")
    try:
        pm.execute_notebook(
            str(source), str(partial), parameters=parameters, kernel_name="python3",
            cwd=str(cwd), progress_bar=False, log_output=False,
        )
    except pm.PapermillExecutionError as exc:
        failed = executed.with_name(f"{executed.stem}.failed.ipynb")
        os.replace(partial, failed)
        raise StudyError(
            f"notebook {source.name} failed in cell {exc.exec_count} (index {exc.cell_index}): "
            f"{exc.ename}: {exc.evalue}; the executed copy with the traceback is {failed}"
        ) from exc
    os.replace(partial, executed)


def run_study(
    profile_name: str = "quick",
    data_root: Path | None = None,
    out: Path = Path("results"),
    overrides: Sequence[str] = (),
    force: bool = False,
    build_book: bool = True,
    steps: Sequence[str] | None = None,
    project_root: Path | None = None,
) -> dict[str, float]:
    """Execute the study's notebooks in order, then render the book.

    Args:
        profile_name: ``smoke``, ``quick``, ``paper`` or a YAML path.
        data_root: a real dataset; None uses the synthetic cohort generated under ``out``.
        out: results folder; executed notebooks and artefacts go here.
        overrides: ``section.key=value`` profile overrides passed to every notebook.
        force: rerun steps even when their inputs did not change.
        build_book: render the book after the notebooks.
        steps: run only these steps (and nothing else); default all.
        project_root: the checkout with notebooks/ and book/ (default: found from cwd).

    Returns:
        Seconds per step actually run (skipped steps are absent).

    Raises:
        ConfigError: unknown profile or step. StudyError: a notebook or the book failed.
    """
    profile = load_profile(profile_name, overrides)
    root = project_root or find_project_root()
    out = Path(out).resolve()
    known = {step.name for step in STEPS}
    wanted = list(steps) if steps is not None else [step.name for step in STEPS]
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ConfigError(f"unknown study step(s) {unknown}; steps are {sorted(known)}")
    if data_root is not None and not Path(data_root).is_dir():
        raise ConfigError(f"dataset root {data_root} is not a folder: check --data")

    executed_dir = out / "notebooks"
    check_output_dir(out, overwrite=True)  # a file in the way is an OutputError; results are reused
    executed_dir.mkdir(parents=True, exist_ok=True)
    synthetic_root_text = str(out / "data" / f"synthetic-{Path(profile.name).stem}")
    context: dict[str, Any] = {
        "profile": profile_name,
        "overrides": ",".join(overrides),
        "data_root": str(Path(data_root).resolve()) if data_root else synthetic_root_text,
        "synthetic_root": synthetic_root_text,
        "results_dir": str(out),
        "seed": profile.seed,
        "device": "auto",
    }
    state_path = out / "study_state.json"
    state = _load_state(state_path)
    source_hash = _source_hash()
    timings: dict[str, float] = {}

    import papermill as pm

    for step in STEPS:
        if step.name not in wanted:
            continue
        source = root / "notebooks" / f"{step.name}.ipynb"
        if not source.is_file():
            raise StudyError(f"notebook {source} is missing from the checkout")
        declared = pm.inspect_notebook(str(source))
        step_context = {**context, "data_root": synthetic_root_text} if step.synthetic_only else context
        parameters = _step_parameters(declared, step_context)
        key = hashlib.sha256(
            json.dumps(
                {
                    "notebook": _sha256_of_files([source]),
                    "parameters": parameters,
                    "source": source_hash,
                    "upstream": [state.get(dep, {}).get("key") for dep in step.depends_on],
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        executed = executed_dir / f"{step.name}.ipynb"
        if not force and executed.is_file() and state.get(step.name, {}).get("key") == key:
            print(f"[study] {step.name}: inputs unchanged, skipped", flush=True)
            continue
        print(f"[study] {step.name}: {step.title} ...", flush=True)
        start = time.perf_counter()
        _run_notebook(source, executed, parameters, cwd=out)
        timings[step.name] = time.perf_counter() - start
        state[step.name] = {"key": key, "seconds": round(timings[step.name], 1)}
        write_text_atomically(state_path, json.dumps(state, indent=2, sort_keys=True))
        print(f"[study] {step.name}: done in {timings[step.name]:.0f} s", flush=True)

    if build_book:
        start = time.perf_counter()
        build_book_from(executed_dir, root / "book")
        timings["book"] = time.perf_counter() - start
    return timings


def build_book_from(executed_dir: Path, book_dir: Path) -> Path:
    """Copy executed notebooks into ``book/executed/`` and render the book; returns index.html."""
    target = book_dir / "executed"
    target.mkdir(exist_ok=True)
    for notebook in sorted(Path(executed_dir).glob("[0-9][0-9]_*.ipynb")):
        if not notebook.name.endswith(".failed.ipynb"):
            shutil.copy2(notebook, target / notebook.name)
    return build_book(book_dir)


def build_book(book_dir: Path) -> Path:
    """Render ``book_dir`` with Jupyter Book 1, warnings as errors; returns index.html.

    Raises:
        StudyError: the build failed (its log's last lines are in the message).
    """
    jb = Path(sys.executable).with_name("jupyter-book")
    command = [str(jb) if jb.exists() else "jupyter-book", "build", str(book_dir),
               "--builder", "html", "-W", "-n", "--keep-going"]
    print(f"[study] book: {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise StudyError(f"the book build failed (exit {result.returncode}):\n{tail}")
    index = book_dir / "_build" / "html" / "index.html"
    print(f"[study] book: {index}", flush=True)
    return index
