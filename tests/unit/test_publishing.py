"""Publishing: the Pages workflow, CITATION.cff, the book's repository and Binder settings, and its citations.

The workflow and CITATION.cff are validated with check-jsonschema against the schemas it bundles (GitHub
workflows, Citation File Format 1.2.0), with every proxy pointed at a closed port so that a schema fetched
from the network fails the test.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
CITATION = ROOT / "CITATION.cff"
BOOK = ROOT / "book"
BIB = BOOK / "references.bib"

PINNED_ACTIONS = {
    "actions/checkout": "v4",
    "actions/setup-python": "v5",
    "actions/cache": "v4",
    "actions/configure-pages": "v5",
    "actions/upload-pages-artifact": "v3",
    "actions/deploy-pages": "v4",
}
CACHE_INPUTS = ("src/**", "notebooks/**", "pyproject.toml", "package-lock.json", "data_manifest.yaml", "environment.yml")
CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
BIB_ENTRY = re.compile(r"^@(\w+)\s*\{\s*([^,\s]+)\s*,", re.M)


def _check_jsonschema(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the venv's check-jsonschema offline: proxies point at a closed port and nothing bypasses them."""
    executable = Path(sys.executable).parent / "check-jsonschema"
    assert executable.is_file(), f"{executable} is missing: install the test extra (pip install -e '.[test]')"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    return subprocess.run([str(executable), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def _validate_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    return _check_jsonschema("--builtin-schema", "vendor.github-workflows", path)


def _validate_citation(path: Path) -> subprocess.CompletedProcess[str]:
    return _check_jsonschema("--builtin-schema", "vendor.citation-file-format", "--default-filetype", "yaml", path)


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def citation() -> dict:
    return yaml.safe_load(CITATION.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def book_config() -> dict:
    return yaml.safe_load((BOOK / "_config.yml").read_text())


@pytest.fixture(scope="module")
def bib_entries() -> dict[str, str]:
    """Each entry's key and its text, from ``@type{key,`` to the next entry."""
    text = BIB.read_text()
    matches = list(BIB_ENTRY.finditer(text))
    keys = [m.group(2) for m in matches]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"duplicate keys in references.bib: {duplicates}"
    ends = [m.start() for m in matches[1:]] + [len(text)]
    return {m.group(2): text[m.end():end] for m, end in zip(matches, ends)}


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _triggers(workflow: dict) -> dict:
    # YAML 1.1 reads the bare key `on` as the boolean True
    return workflow.get("on", workflow.get(True))


# --- the GitHub Pages workflow ------------------------------------------------------------------


def test_workflow_validates_against_the_github_workflow_schema() -> None:
    result = _validate_workflow(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_rejects_a_job_without_runs_on_and_steps(workflow: dict, tmp_path: Path) -> None:
    broken = copy.deepcopy(workflow)
    broken["on"] = broken.pop(True, broken.get("on"))
    del broken["jobs"]["build"]["runs-on"], broken["jobs"]["build"]["steps"]
    path = tmp_path / "book.yml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False))
    result = _validate_workflow(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "runs-on" in result.stdout


def test_workflow_runs_on_push_to_main_and_by_hand(workflow: dict) -> None:
    triggers = _triggers(workflow)
    assert triggers["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in triggers


def test_workflow_pins_the_major_version_of_every_action(workflow: dict) -> None:
    used = {}
    for step in _steps(workflow):
        if "uses" in step:
            action, _, version = step["uses"].partition("@")
            used[action] = version
    assert used == PINNED_ACTIONS


def test_build_job_runs_the_study_with_results_cached(workflow: dict) -> None:
    build = workflow["jobs"]["build"]
    assert build["runs-on"] == "ubuntu-latest"
    assert build["timeout-minutes"] >= 120, "the CPU study takes about an hour"
    assert any("make study" in step.get("run", "") for step in build["steps"])
    python = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["python-version"] == "3.11"
    cache = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "results"
    key = cache["with"]["key"]
    assert "env.PROFILE" in key and workflow["env"]["PROFILE"] == "quick"
    hashed = re.search(r"hashFiles\(([^)]*)\)", key)
    assert hashed, key
    assert [p.strip(" '\"") for p in hashed.group(1).split(",")] == list(CACHE_INPUTS)
    for pattern in CACHE_INPUTS:
        assert any(ROOT.glob(pattern)), f"the cache key hashes {pattern}, which matches nothing"


def test_build_uploads_the_book_and_deploy_publishes_it(workflow: dict) -> None:
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "book/_build/html"
    assert any(s.get("uses", "").startswith("actions/configure-pages@") for s in build["steps"])
    assert deploy["needs"] == "build"
    (step,) = deploy["steps"]
    assert step["uses"].startswith("actions/deploy-pages@")
    assert deploy["environment"] == {"name": "github-pages", "url": f"${{{{ steps.{step['id']}.outputs.page_url }}}}"}
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert workflow["concurrency"]["group"]


# --- CITATION.cff -----------------------------------------------------------------------------


def test_bundled_citation_schema_is_cff_1_2_0() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "citation-file-format.json"
    schema = json.loads(schema_file.read_text())
    assert schema["$id"].endswith("/1.2.0/schema.json")


def test_citation_validates_against_the_cff_schema() -> None:
    result = _validate_citation(CITATION)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda cff: cff.pop("authors"), "'authors' is a required property"),
        (lambda cff: cff.update({"type": "library"}), "'library' is not one of"),
        (lambda cff: cff["references"][0].pop("type"), "'type' is a required property"),
    ],
    ids=["no authors", "unknown type", "reference without type"],
)
def test_cff_schema_rejects_a_broken_copy(citation: dict, tmp_path: Path, breakage, message: str) -> None:
    broken = copy.deepcopy(citation)
    breakage(broken)
    path = tmp_path / "CITATION.cff"
    path.write_text(yaml.safe_dump(broken, sort_keys=False))
    result = _validate_citation(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout


def test_citation_matches_pyproject(citation: dict, pyproject: dict) -> None:
    project = pyproject["project"]
    assert citation["cff-version"] == "1.2.0"
    assert citation["type"] == "software"
    assert citation["version"] == project["version"]
    assert citation["license"] == project["license"]["text"]
    assert citation["authors"] == [{"name": "The cmbstudy authors"}]


def test_citation_references_the_reproduced_paper_as_the_book_cites_it(
    citation: dict, bib_entries: dict[str, str]
) -> None:
    entry = bib_entries["cho2025"]
    title = re.search(r"title\s*=\s*\{(.*)\},?\s*$", entry, re.M).group(1)
    authors = re.search(r"author\s*=\s*\{(.*)\},?\s*$", entry, re.M).group(1).split(" and ")
    (paper,) = [r for r in citation["references"] if r["title"] == title]
    assert [a["family-names"] for a in paper["authors"]] == [a.split(",")[0].strip() for a in authors]
    # cited as published: the journal article, with its volume and DOI
    assert re.search(r"@article\{cho2025,", BIB.read_text())
    assert re.search(r"doi\s*=\s*\{(.*)\}", entry).group(1) == paper["doi"]
    assert re.search(r"journal\s*=\s*\{(.*)\}", entry).group(1) == paper["journal"]
    assert re.search(r"volume\s*=\s*\{(.*)\}", entry).group(1) == str(paper["volume"])


# --- the book's repository and Binder settings --------------------------------------------------


def test_book_links_its_repository(book_config: dict) -> None:
    repository = book_config["repository"]
    assert repository["url"] == "https://github.com/cmbstudy/cmbstudy"
    assert repository["branch"] == "main"
    assert (ROOT / repository["path_to_book"] / "_config.yml").is_file()
    assert book_config["html"]["use_repository_button"] is True
    assert book_config["html"]["use_issues_button"] is True


def test_book_launches_binder_and_builds_offline(book_config: dict) -> None:
    launch = book_config["launch_buttons"]
    assert launch["binderhub_url"] == "https://mybinder.org"
    assert launch["notebook_interface"] in ("classic", "jupyterlab")
    assert not launch.get("thebe", False)
    assert book_config["execute"]["execute_notebooks"] == "off"


def test_binder_finds_a_conda_environment_at_the_root() -> None:
    # repo2docker reads only binder/ when that folder exists, so the root environment.yml must not be shadowed
    assert not (ROOT / "binder").exists() or (ROOT / "binder" / "environment.yml").is_file()
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert isinstance(environment["dependencies"], list) and environment["channels"]


# --- citations and the bibliography -------------------------------------------------------------


def _cited_keys() -> dict[str, set[str]]:
    """Every key of a ``{cite}``, ``{cite:p}`` or ``{cite:t}`` role, with the files that use it."""
    texts = {path: path.read_text() for path in sorted(BOOK.glob("*.md"))}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[path] = "\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "markdown"
        )
    cited: dict[str, set[str]] = {}
    for path, text in texts.items():
        for group in CITE_ROLE.findall(text):
            for key in group.split(","):
                cited.setdefault(key.strip(), set()).add(path.name)
    return cited


def test_the_book_cites_something() -> None:
    assert "cho2025" in _cited_keys()


def test_every_cited_key_is_in_the_bibliography(bib_entries: dict[str, str]) -> None:
    missing = {key: sorted(files) for key, files in _cited_keys().items() if key not in bib_entries}
    assert not missing, f"cited but not in references.bib: {missing}"


def test_every_entry_has_author_title_and_year(bib_entries: dict[str, str]) -> None:
    incomplete = {
        key: [f for f in ("author", "title", "year") if not re.search(rf"(^|[\s,]){f}\s*=", body, re.I)]
        for key, body in bib_entries.items()
    }
    assert not {k: v for k, v in incomplete.items() if v}


def test_bibliography_parses_and_its_dois_are_well_formed(bib_entries: dict[str, str]) -> None:
    database = pytest.importorskip("pybtex.database").parse_file(str(BIB))
    assert sorted(database.entries) == sorted(bib_entries)
    dois = [e.fields["doi"] for e in database.entries.values() if "doi" in e.fields]
    assert all(re.fullmatch(r"10\.\d{4,9}/\S+", doi) for doi in dois), dois
    assert len(dois) == len(set(dois))
