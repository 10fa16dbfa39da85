"""The package modules a notebook runs: imports followed through re-exports and registries, hashed per step."""

from __future__ import annotations

from pathlib import Path

import nbformat

from cmbstudy.study.dependencies import ModuleGraph, notebook_dependencies, notebook_imports, notebook_source_hash

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / "cmbstudy"


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "cmbstudy" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "cmbstudy"


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(cell) for cell in cells]
    nbformat.write(nb, path)
    return path


# a package shaped like this one: subpackages that re-export their modules, a registry filled on import
TOY = {
    "__init__.py": "try:\n    __version__ = '1'\nexcept ImportError:\n    __version__ = '0'\n",
    "figures/__init__.py": "from . import burden, curves\nfrom .burden import *\nfrom .curves import *\n",
    "figures/burden.py": "__all__ = ['plot_burden']\nfrom ..stats import ci\n\ndef plot_burden():\n    return ci()\n",
    "figures/curves.py": "__all__ = ['plot_curve']\n\ndef plot_curve():\n    pass\n",
    "stats.py": "def ci():\n    from . import __version__\n    return __version__\n",
    "models/__init__.py": "from . import net, registry\nfrom .registry import *\n",
    "models/registry.py": "__all__ = ['register', 'build']\nREGISTRY = {}\n\ndef register(name, f):\n"
                         "    REGISTRY[name] = f\n\ndef build(name):\n    return REGISTRY[name]()\n",
    "models/net.py": "from .registry import register\n\ndef net():\n    return 1\n\nregister('net', net)\n",
    "train.py": "from .models import build\n\ndef train():\n    return build('net')\n",
    "profiles/quick.yaml": "seed: 0\n",
}


def _names(package: Path, paths: list[Path]) -> set[str]:
    return {str(p.relative_to(package)) for p in paths}


def test_a_name_is_followed_to_the_module_that_defines_it(tmp_path: Path) -> None:
    package = _write(tmp_path, TOY)
    notebook = _notebook(tmp_path / "figure.ipynb", "%matplotlib inline\nfrom cmbstudy.figures import plot_burden")
    assert notebook_imports(notebook) == [("cmbstudy.figures", "plot_burden")]
    files = _names(package, notebook_dependencies(notebook, package))
    # the defining module and what it imports, the __init__ files above them, the YAML; not the sibling module
    assert files == {"figures/burden.py", "stats.py", "figures/__init__.py", "__init__.py", "profiles/quick.yaml"}


def test_a_registry_depends_on_the_modules_that_register_with_it(tmp_path: Path) -> None:
    package = _write(tmp_path, TOY)
    notebook = _notebook(tmp_path / "train.ipynb", "from cmbstudy.train import train\ntrain()")
    files = _names(package, notebook_dependencies(notebook, package))
    assert {"train.py", "models/registry.py", "models/net.py"} <= files
    assert not any(name.startswith("figures/") for name in files)


def test_an_edit_changes_the_hash_of_the_notebooks_that_run_it_only(tmp_path: Path) -> None:
    package = _write(tmp_path, TOY)
    figure = _notebook(tmp_path / "figure.ipynb", "from cmbstudy.figures.burden import plot_burden")
    training = _notebook(tmp_path / "train.ipynb", "import cmbstudy.train")
    before = notebook_source_hash(figure, package), notebook_source_hash(training, package)
    (package / "figures" / "burden.py").write_text(TOY["figures/burden.py"] + "# a comment\n")
    after = notebook_source_hash(figure, package), notebook_source_hash(training, package)
    assert after[0] != before[0] and after[1] == before[1]
    (package / "models" / "net.py").write_text(TOY["models/net.py"] + "# a comment\n")
    assert notebook_source_hash(training, package) != after[1]
    assert notebook_source_hash(figure, package) == after[0]


def test_a_name_that_cannot_be_followed_depends_on_its_whole_subpackage(tmp_path: Path) -> None:
    package = _write(tmp_path, {**TOY, "figures/__init__.py": "from . import burden, curves\n"
                                                             "globals().update(vars(burden))\n"})
    graph = ModuleGraph(package)
    assert graph.resolve("cmbstudy.figures", "plot_burden") == {
        "cmbstudy.figures", "cmbstudy.figures.burden", "cmbstudy.figures.curves"}


def test_the_studys_training_does_not_run_the_burden_figure_but_runs_the_network() -> None:
    training = _names(PACKAGE_DIR, notebook_dependencies(NOTEBOOKS / "03_training.ipynb"))
    burden = _names(PACKAGE_DIR, notebook_dependencies(NOTEBOOKS / "08_burden.ipynb"))
    assert "figures/burden.py" in burden and "figures/burden.py" not in training
    # the network is found through the registry: the networks register themselves on import
    assert {"models/rlk_unet.py", "models/baselines/dou2016.py", "training/loop.py",
            "inference/second_look.py"} <= training
    assert "models/rlk_unet.py" not in burden
    assert "namespaces.py" in training and "namespaces.py" in burden  # it resolves the stages' names


def test_the_notebooks_training_waits_for_import_no_viewer() -> None:
    """An edit of the scan viewer reruns its chapters (11, 16) and the book, and retrains nothing."""
    from cmbstudy.study.runner import STEPS

    steps = {step.name: step for step in STEPS}
    upstream, todo = set(), list(steps["03_training"].depends_on)
    while todo:
        name = todo.pop()
        upstream.add(name)
        todo += [dep for dep in steps[name].depends_on if dep not in upstream]
    viewer = {"figures/viewer.py", "figures/viewer_marks.py", "figures/detect_viewer.py", "study/viewer_cases.py"}
    for name in sorted(upstream):
        found = _names(PACKAGE_DIR, notebook_dependencies(NOTEBOOKS / f"{name}.ipynb", PACKAGE_DIR)) & viewer
        assert not found, f"{name} (upstream of training) imports {sorted(found)}"
    assert viewer & _names(PACKAGE_DIR, notebook_dependencies(NOTEBOOKS / "16_cohort_viewer.ipynb", PACKAGE_DIR))
