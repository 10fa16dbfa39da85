"""Independent jobs run here, or over worker processes, with one progress bar: the cohort generator's subjects
(:func:`cmbstudy.synth.cohort.simulate_each`) and the preprocessing cache's (:func:`cmbstudy.preprocessing.fill_cache`).

The standard library's :class:`~concurrent.futures.ProcessPoolExecutor` does the work; this module only fixes
how the package uses it: spawned workers, which start clean (no thread pool inherited from a notebook's torch),
the bar moved as jobs finish, a worker's failure raised with its traceback, and the results in the jobs' order.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

from tqdm import tqdm

__all__ = ["run_each"]


def run_each(work: Callable[..., Any], jobs: Sequence[tuple], workers: int, bar: tqdm) -> list[Any]:
    """``work(*job)`` for every job, returned in the jobs' order: here, one after another, when ``workers`` <= 1
    (or only one job), else over ``min(workers, len(jobs))`` spawned processes. ``bar`` moves by one per job.

    ``work`` and the jobs must pickle for workers (a module-level function, plain arguments). A failing job
    raises its exception here, as it would in this process.
    """
    workers = min(int(workers), len(jobs))
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(work(*job))
            bar.update()
        return results
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(work, *job) for job in jobs]
        for future in as_completed(futures):
            future.result()  # a failure stops here, with the worker's traceback
            bar.update()
        return [future.result() for future in futures]
