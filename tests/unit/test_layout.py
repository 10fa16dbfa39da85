"""The package reads like the methods section: imports run one way, modules stay small, notebooks stay thin."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "cmbstudy"
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# The stages from the top down: a module may import its own stage and the stages below it. Within
# the middle stage, training validates through inference, and inference finds lesions through
# evaluation; explain sits beside them. ``figures`` draws what the others computed.
LAYERS: dict[str, int] = {
    "__main__": 8, "cli": 7, "study": 6, "figures": 5,  # __main__: ``python -m cmbstudy`` (and torchrun)
    "training": 4, "inference": 3, "explain": 3, "evaluation": 2,
    "models": 1, "preprocessing": 1, "synth": 1, "device": 1,
    "data": 0, "config": -1, "errors": -2, "formatting": -2, "arrays": -1, "workers": -1, "namespaces": -3, "__init__": -3,
}
# what figures may import: files, constants and shapes, never a compute module
FIGURES_MAY_IMPORT = {"data", "errors", "formatting", "arrays", "config", "namespaces"}
COMPUTE = {"data", "preprocessing", "models", "training", "inference", "evaluation", "explain", "synth", "study"}
MAX_MODULE_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _stage(module: str) -> str:
    """``cmbstudy.training.loop`` -> ``training``; ``cmbstudy`` and its own names -> ``__init__``."""
    parts = module.split(".")
    if len(parts) == 1 or not ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file()):
        return "__init__"
    return parts[1]


def _dotted(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool, bool]]:
    """(imported cmbstudy module, at module level, only for type checking) of every import in ``path``."""
    tree = ast.parse(path.read_text())
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rsplit(".", 1)[0]
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "cmbstudy" or name.startswith("cmbstudy."):
                out.append((name, id(node) in top, id(node) in type_only))
    return out


def test_imports_run_from_the_study_down_to_io() -> None:
    wrong = []
    for path in _modules():
        here = _stage(_dotted(path))
        for module, _, type_only in _imports(path):
            there = _stage(module)
            if type_only or there == here:
                continue
            if here == "figures":
                if there not in FIGURES_MAY_IMPORT:
                    wrong.append(f"{path.relative_to(PACKAGE)} (figures) imports {module}")
            elif LAYERS[there] >= LAYERS[here] and here != "__init__":
                wrong.append(f"{path.relative_to(PACKAGE)} ({here}) imports {module} ({there})")
    assert not wrong, "\n".join(wrong)


def test_no_function_local_import_of_the_package_except_the_command_line() -> None:
    hidden = [f"{path.relative_to(PACKAGE)}: {module}" for path in _modules() if _stage(_dotted(path)) != "cli"
              for module, at_top, type_only in _imports(path) if not at_top and not type_only]
    assert not hidden, "\n".join(hidden)


def test_compute_modules_import_no_plotting() -> None:
    plotting = []
    for path in _modules():
        if _stage(_dotted(path)) not in COMPUTE:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            plotting += [f"{path.relative_to(PACKAGE)}: {n}" for n in names
                         if n.split(".")[0] in ("matplotlib", "seaborn") or n.startswith("cmbstudy.figures")]
    assert not plotting, "\n".join(plotting)


def test_modules_are_small_and_subpackages_say_what_they_do() -> None:
    long = [f"{p.relative_to(PACKAGE)}: {n}" for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.relative_to(PACKAGE)} has no docstring"
        if init.parent != PACKAGE / "weights":
            assert any(isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__" for n in tree.body), \
                f"{init.relative_to(PACKAGE)} states no __all__"


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_are_thin(notebook: Path) -> None:
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    for cell in cells:
        source = "".join(cell["source"])
        long = [line for line in source.splitlines() if len(line) > 100]
        assert not long, f"{notebook.name}: lines over 100 characters: {long}"
        code = "\n".join(line for line in source.splitlines() if not line.startswith("%"))
        tree = ast.parse(code)
        fallbacks = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.IfExp)]
        assert not fallbacks, f"{notebook.name}: inline if-else belongs in the package: {fallbacks}"
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)), \
            f"{notebook.name}: a def, class or lambda belongs in the package"
