"""Shared fixtures: a seeded rng, and no network or user data directories in tests; how the tests share out
over pytest-xdist's workers (``make test`` runs one per core)."""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: each computes on one thread (and so do the
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # notebook kernels it starts), so that none waits on another
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", os.environ["OMP_NUM_THREADS"])  # SimpleITK too
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (``make test``): the tests of a file run on one worker, so that
    its module fixtures are made once, and every test of the smoke study on one worker, so that the session's
    smoke study (tests/integration/conftest.py) is made once. (Marked as each test is collected: xdist reads
    the groups when collection ends.)"""
    group = "smoke_study" if "smoke_study" in getattr(item, "fixturenames", ()) else item.nodeid.split("::")[0]
    item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20211)


@pytest.fixture(autouse=True)
def _isolate_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep tests away from a user's dataset root and from the network."""
    monkeypatch.delenv("CMBSTUDY_DATA", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("NO_PROXY", "*")
