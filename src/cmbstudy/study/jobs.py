"""Executing the study's notebooks: one with papermill, or several at once with their share of the cores.

A notebook runs in its own kernel; a failing one leaves its executed copy (with
the traceback) beside where the result would have gone and raises a
:class:`StudyError` naming the cell. Notebooks that do not depend on each other
(the training runs; the analyses once the runs are trained) go ``jobs`` at a time in
worker processes, each kernel with ``threads`` torch threads
(``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``, read when the kernel starts).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import papermill as pm
from traitlets.config import Config

from .. import available_cores
from ..errors import CmbStudyError, ConfigError

__all__ = ["StudyError", "Pending", "KERNEL_START_ATTEMPTS", "available_cores", "resolve_jobs", "threads_per_job",
           "run_notebook", "run_notebook_in_job", "run_pending"]


class StudyError(CmbStudyError):
    """A study step or the book build failed."""


#: Times a notebook's kernel is started before its failure to start is an error. A kernel now and then never
#: answers its client (it dies, or lives on deaf), more often with several starting at once; over TCP,
#: jupyter_client picks a kernel's ports free a moment before the kernel binds them, and another process can take
#: one in that moment. No cell has run then, so starting it again is safe.
KERNEL_START_ATTEMPTS = 4

#: Seconds a kernel may take to answer its first request: a start takes about a second here, several on a
#: machine busy with two jobs and a test worker; one that has not answered in this time has hung.
KERNEL_START_TIMEOUT = 30

_SOCKET_PATH_ROOM = 96  # a Unix socket's path holds 104 bytes on macOS, 108 on Linux; jupyter_client appends "-<n>"
_NEVER_STARTED = ("before replying to kernel_info", "Kernel didn't respond")  # jupyter_client's words


def _kernel_config() -> Config:
    """A kernel of its own Unix sockets where there are some (no port for another process to take), else TCP.

    The sockets are named after a fresh id in the temporary folder (jupyter_client's default name is
    relative, the same for every kernel); the kernel's manager removes them when it shuts the kernel down.
    A temporary folder whose path leaves no room for a socket's name (96 characters) gets TCP.
    """
    sockets = Path(tempfile.gettempdir()) / f"cmbstudy-kernel-{uuid.uuid4().hex[:12]}"
    if os.name != "posix" or len(str(sockets)) > _SOCKET_PATH_ROOM:
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": str(sockets)}})


def run_notebook(source: Path, executed: Path, parameters: dict[str, Any], cwd: Path, label: str = "") -> None:
    """Execute ``source`` with ``parameters`` in ``cwd`` into ``executed`` (written only when every cell ran).

    Raises:
        StudyError: a cell failed; it names the cell, and ``<executed>.failed.ipynb`` holds the traceback.
    """
    executed.parent.mkdir(parents=True, exist_ok=True)
    partial = executed.with_name(f".{executed.stem}.partial.ipynb")
    try:
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                pm.execute_notebook(
                    str(source), str(partial), parameters=parameters, kernel_name="python3",
                    cwd=str(cwd), progress_bar=False, log_output=False,
                    # the kernel process's own log (e.g. over TCP its warning that it talks without encryption)
                    # says nothing about the study; a cell's warnings and errors still reach the notebook. No
                    # kernel keeps a command history: kernels starting together would share one SQLite file
                    extra_arguments=["--IPKernelApp.log_level=CRITICAL", "--HistoryManager.enabled=False"],
                    config=_kernel_config(), start_timeout=KERNEL_START_TIMEOUT,
                    # once the last cell has run, its outputs are in the notebook and its files written, so
                    # the kernel's process group is killed at once (nbclient's "immediate"): asked to shut
                    # down, a kernel took 0.2 s more to end, and now and then 3 s (jupyter_client waits half
                    # of its 5 s for it to exit, then sends SIGTERM); the smoke study took 107 s, not 135
                    shutdown_kernel="immediate",
                )
                break
            except RuntimeError as exc:
                if not any(words in str(exc) for words in _NEVER_STARTED) or attempt == KERNEL_START_ATTEMPTS:
                    raise
    except pm.PapermillExecutionError as exc:
        failed = executed.with_name(f"{executed.stem}.failed.ipynb")
        os.replace(partial, failed)
        raise StudyError(
            f"notebook {source.name}{label} failed in cell {exc.exec_count} (index {exc.cell_index}): "
            f"{exc.ename}: {exc.evalue}; the executed copy with the traceback is {failed}"
        ) from exc
    os.replace(partial, executed)
    executed.with_name(f"{executed.stem}.failed.ipynb").unlink(missing_ok=True)


#: Read when a kernel starts: torch's threads (OpenMP, MKL), and SimpleITK's, whose filters (N4, the monitoring
#: chapter's registration) otherwise take every core whatever a job's share.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def resolve_jobs(jobs: int | str) -> int:
    """Training runs at once: ``jobs`` as given, or for ``"auto"`` what uses this machine's cores well.

    ``auto`` gives one run per core on a machine of fewer than 4 cores (on 2 cores, two runs of one
    thread each trained the smoke study's runs 1.7 times faster than one run of two threads), else a
    run per two cores; with a CUDA device, one run (the runs would share it).

    Raises:
        ConfigError: neither ``"auto"`` nor a whole number of at least 1.
    """
    if isinstance(jobs, str) and jobs.strip().lower() == "auto":
        import torch

        cores = available_cores()
        return 1 if torch.cuda.is_available() else max(1, cores if cores < 4 else cores // 2)
    try:
        value = int(jobs)
    except (TypeError, ValueError):
        raise ConfigError(f"--jobs {jobs!r}: give a number of training runs at once, or auto") from None
    if value < 1:
        raise ConfigError(f"--jobs {jobs}: the training runs at once must be at least 1")
    return value


def threads_per_job(jobs: int, threads: int | None) -> int | None:
    """torch threads of each training run: ``threads``, else the cores split over ``jobs`` (None: torch's default).

    A run's weights depend on its thread count at the level of rounding (sums taken in
    another order), not on what runs beside it; a run repeated with the same thread
    count gives the same result.

    Raises:
        ConfigError: jobs or threads below 1.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: the training runs at once must be at least 1")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: each training run needs at least 1 thread")
    if threads is not None:
        return threads
    return None if jobs == 1 else max(1, available_cores() // jobs)


def run_notebook_in_job(source: Path, executed: Path, parameters: dict[str, Any], cwd: Path, label: str,
                        threads: int | None, environment: dict[str, str] | None = None) -> float:
    """:func:`run_notebook` in a worker process whose kernels get ``threads`` torch threads; returns its seconds.

    ``environment``: the variables of the process that submitted the job, for a worker that started before
    they were set (:func:`run_pending`'s workers are forked from a server started once).
    """
    if environment is not None:
        os.environ.clear()
        os.environ.update(environment)
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    if threads is not None:
        os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    start = time.perf_counter()
    try:
        run_notebook(source, executed, parameters, cwd, label)
    finally:  # the caller's own settings again
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return time.perf_counter() - start


def _worker_context() -> multiprocessing.context.BaseContext:
    """Where :func:`run_pending`'s workers come from: forked from a server process that started clean (no
    inherited torch threads or open kernels) and imported this module once, so that a worker costs a fork and
    not an import of the package (about 5 s of CPU each on a laptop); spawned where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


@dataclass(frozen=True)
class Pending:
    """A notebook to execute: its name (a step's or a training run's), skip key, progress label, executed copy
    and parameters; ``source`` where it is not the notebook :func:`run_pending` is given; ``after``, the jobs it
    waits for."""

    name: str
    key: str
    label: str
    executed: Path
    parameters: dict[str, Any]
    source: Path | None = None
    after: tuple[str, ...] = ()  # names of jobs of the same call that must have ended first


def run_pending(source: Path | None, pending: Sequence[Pending], finished: Callable[[Pending, float], None],
                cwd: Path, jobs: int, threads: int | None, progress: Callable[[str], None],
                what: str = "training runs") -> None:
    """Run the notebooks of ``pending`` in ``cwd``, ``jobs`` at a time; ``finished`` records each as it ends.

    Each job runs its own ``source`` where it has one, else ``source``. A job starts once the jobs it names in
    ``after`` have ended (with one job at a time, ``pending`` must list them before it); otherwise they start in
    ``pending``'s order. When one fails, no new one starts; those running finish (and are recorded), then the
    first failure is raised.
    """
    each = f" on {threads} thread(s) each" if threads is not None else ""

    def label(job: Pending) -> str:
        return f" (instance {job.name})" if job.source is None else ""

    if jobs == 1 or len(pending) <= 1:
        for job in pending:
            progress(f"{job.label}{each} ...")
            finished(job, run_notebook_in_job(job.source or source, job.executed, job.parameters, cwd,
                                              label(job), threads))
        return
    progress(f"{len(pending)} {what}, {jobs} at a time{each}")
    queue, running, failures, done = list(pending), {}, [], set()
    with ProcessPoolExecutor(jobs, mp_context=_worker_context()) as pool:
        while queue or running:
            while len(running) < jobs and not failures:
                job = next((j for j in queue if done.issuperset(j.after)), None)
                if job is None:
                    break
                queue.remove(job)
                progress(f"{job.label} ...")
                future: Future = pool.submit(run_notebook_in_job, job.source or source, job.executed,
                                             job.parameters, cwd, label(job), threads, dict(os.environ))
                running[future] = job
            if not running:
                break
            ended, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in ended:
                job = running.pop(future)
                try:
                    finished(job, future.result())
                    done.add(job.name)
                except CmbStudyError as exc:
                    failures.append(exc)
                    progress(f"{job.label}: failed")
    if failures:
        raise failures[0]
