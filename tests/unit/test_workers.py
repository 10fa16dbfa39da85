"""Jobs here or over worker processes: the same results, in the jobs' order, and a worker's failure raised."""

from __future__ import annotations

import io
import math
import os

import pytest
from tqdm import tqdm

from cmbstudy.workers import run_each


def test_jobs_give_the_same_results_in_order_here_and_over_workers() -> None:
    jobs = [(float(i), 3.0) for i in range(6)]
    with tqdm(total=12, file=io.StringIO()) as bar:  # shown, into a buffer: a disabled bar does not count
        here = run_each(math.pow, jobs, 1, bar)
        over = run_each(math.pow, jobs, 2, bar)
        assert bar.n == 12
    assert here == over == [float(i) ** 3 for i in range(6)]
    with tqdm(total=8, file=io.StringIO()) as bar:
        assert run_each(os.getpid, [()] * 4, 1, bar) == [os.getpid()] * 4
        assert os.getpid() not in run_each(os.getpid, [()] * 4, 2, bar)  # other processes did them


def test_a_failing_job_raises_here_and_from_a_worker() -> None:
    with tqdm(total=4, disable=True) as bar:
        for workers in (1, 2):
            with pytest.raises(ValueError, match="math domain"):
                run_each(math.sqrt, [(4.0,), (-1.0,)], workers, bar)
