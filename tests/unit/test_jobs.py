"""How many training runs the study trains at once: --jobs N or auto."""

from __future__ import annotations

import pytest

from cmbstudy.errors import ConfigError
from cmbstudy.study import jobs


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (3, 3), (4, 2), (16, 8)])
def test_auto_uses_the_cores(monkeypatch: pytest.MonkeyPatch, cores: int, expected: int) -> None:
    import torch

    monkeypatch.setattr(jobs, "available_cores", lambda: cores)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert jobs.resolve_jobs("auto") == expected
    assert jobs.threads_per_job(jobs.resolve_jobs("auto"), None) in (None, max(1, cores // expected))


def test_auto_trains_one_run_at_a_time_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(jobs, "available_cores", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert jobs.resolve_jobs("auto") == 1


def test_a_number_is_taken_and_nonsense_is_refused() -> None:
    assert jobs.resolve_jobs("3") == 3 and jobs.resolve_jobs(2) == 2
    for bad in ("0", "-1", "many", "2.5"):
        with pytest.raises(ConfigError, match="--jobs"):
            jobs.resolve_jobs(bad)
