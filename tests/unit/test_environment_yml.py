"""environment.yml must stay consistent with pyproject.toml and the Makefile's torch pin."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    """Normalised distribution name of a requirement string (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _entries(environment: dict) -> tuple[list[str], list[str]]:
    conda, pip = [], []
    for item in environment["dependencies"]:
        if isinstance(item, dict):
            pip.extend(item["pip"])
        else:
            conda.append(item)
    return conda, pip


def test_channel_python_and_editable_install(environment: dict) -> None:
    assert environment["channels"] == ["conda-forge"]
    conda, pip = _entries(environment)
    assert "python=3.11" in conda
    assert "pip" in conda
    assert "-e ." in pip


def test_every_runtime_dependency_is_listed(environment: dict, pyproject: dict) -> None:
    conda, pip = _entries(environment)
    listed = {_name(e) for e in conda + pip if not e.startswith("-")}
    required = {_name(r) for r in pyproject["project"]["dependencies"]}
    assert required - listed == set(), f"missing from environment.yml: {sorted(required - listed)}"


def test_test_extra_is_listed(environment: dict, pyproject: dict) -> None:
    conda, pip = _entries(environment)
    listed = {_name(e) for e in conda + pip if not e.startswith("-")}
    for requirement in pyproject["project"]["optional-dependencies"]["test"]:
        assert _name(requirement) in listed


def test_torch_pinned_in_pip_like_the_makefile(environment: dict) -> None:
    _, pip = _entries(environment)
    torch = [e for e in pip if not e.startswith("-") and _name(e) == "torch"]
    assert torch == ["torch==2.13.0"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_SPEC \?= torch==2\.13\.0$", makefile, re.M)
    # torch comes before the package so that MONAI does not pull another build
    assert pip.index("torch==2.13.0") < pip.index("-e .")


def test_python_version_satisfies_requires_python(environment: dict, pyproject: dict) -> None:
    conda, _ = _entries(environment)
    python = next(e for e in conda if e.startswith("python="))
    major, minor = (int(v) for v in python.split("=")[1].split(".")[:2])
    floor = re.match(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert floor and (major, minor) >= (int(floor.group(1)), int(floor.group(2)))
