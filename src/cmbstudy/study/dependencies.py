"""The package source a notebook runs: the modules it imports, followed through the package, and their hash.

A step of the study is skipped when its key is unchanged (:mod:`cmbstudy.study.runner`).
Its key holds a hash of the package source that the notebook runs, so that editing
a figure module reruns the notebook that draws the figure and retrains nothing,
while editing the network retrains.

The subpackages re-export their modules' names (``from .burden import *`` in
``figures/__init__.py``, under ``if TYPE_CHECKING:``; :mod:`cmbstudy.namespaces`
imports a module when one of its names is first used). The standard library's
``modulefinder`` reads those statements as imports and would make every notebook
depend on almost the whole package, and the modules one execution happens to import
are not those another input would reach. This walk is written by hand for that reason. It reads the source (``ast``, nothing is
imported) and follows each imported name to the module that defines it:

- ``from cmbstudy.x import name``: the module ``cmbstudy.x.name`` when there is
  one, else the module that defines ``name``, found through the re-exports of
  ``cmbstudy.x`` (its ``from .m import *`` and ``from .m import name``);
- ``import cmbstudy.x.y``: the module ``cmbstudy.x.y``;
- a module reached so depends on every module it imports in turn, wherever the
  import statement is (in a function too);
- registration on import: a module that imports a ``register*`` function of a
  registry (:mod:`cmbstudy.models.registry`) fills that registry as a side effect,
  so whoever depends on the registry depends on it as well;
- a name that cannot be followed makes the whole subpackage a dependency (never fewer).

The hash covers the files reached, every package ``__init__.py`` on their paths,
:mod:`cmbstudy.namespaces` (which resolves a stage's names), and the package's YAML
files (the profiles, read at run time).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

__all__ = ["PACKAGE", "ModuleGraph", "notebook_imports", "notebook_dependencies", "notebook_source_hash"]

#: The package whose modules are followed.
PACKAGE = "cmbstudy"


@dataclass
class _Module:
    """What one module's source says about its names and imports."""

    path: Path
    is_package: bool
    defined: set[str] = field(default_factory=set)  # names bound at top level by def, class or assignment
    exported: tuple[str, ...] | None = None  # __all__ when it is a literal list of strings
    named: dict[str, tuple[str, str]] = field(default_factory=dict)  # top-level alias -> (module, name) it imports
    stars: list[str] = field(default_factory=list)  # modules star-imported at top level
    imports: list[tuple[str, str | None]] = field(default_factory=list)  # every (module, name or None) imported
    registers_with: set[str] = field(default_factory=set)  # registries whose register* function it imports


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import ``from ...target import`` written in ``module``."""
    if not level:
        return target or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """The statements run at import: the module's body and the blocks of its ``if``, ``try``, ``with`` and loops."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
            for block in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


def _parse(name: str, path: Path, is_package: bool) -> _Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    info = _Module(path, is_package)
    for node in _top_level(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            info.defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                info.defined.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                if isinstance(target, ast.Name) and target.id == "__all__" and isinstance(node.value, ast.List) \
                        and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts):
                    info.exported = tuple(e.value for e in node.value.elts)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(name, is_package, node.level, node.module)
            for alias in node.names:
                if alias.name == "*":
                    info.stars.append(source)
                else:
                    info.named[alias.asname or alias.name] = (source, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            info.imports.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(name, is_package, node.level, node.module)
            info.imports.extend((source, None if a.name == "*" else a.name) for a in node.names)
            info.registers_with.update(source for a in node.names if a.name.startswith("register"))
    return info


class ModuleGraph:
    """The modules of a package on disk (``root`` holds ``cmbstudy/``) and the dependencies between them."""

    def __init__(self, package_dir: Path) -> None:
        self.package_dir = Path(package_dir)
        self.modules: dict[str, _Module] = {}
        for path in sorted(self.package_dir.rglob("*.py")):
            parts = path.relative_to(self.package_dir.parent).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            self.modules[name] = _parse(name, path, is_package)
        self.registered: dict[str, set[str]] = {}
        for name, info in self.modules.items():
            for registry in info.registers_with:
                if registry in self.modules:
                    self.registered.setdefault(registry, set()).add(name)

    def _exports(self, module: str, name: str) -> bool:
        info = self.modules[module]
        if info.exported is not None:
            return name in info.exported
        return not name.startswith("_") and (name in info.defined or name in info.named)

    def resolve(self, module: str, name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """The modules that ``from module import name`` depends on (the module docstring's rules)."""
        if f"{module}.{name}" in self.modules:
            return {f"{module}.{name}"}
        info = self.modules.get(module)
        if info is None:
            return set()  # outside the package
        if module in seen:
            return {module}
        seen = seen | {module}
        if name in info.defined:
            return {module}
        if name in info.named:
            source, original = info.named[name]
            return self.resolve(source, original, seen) if source.startswith(PACKAGE) else {module}
        for star in info.stars:
            if star in self.modules and self._exports(star, name):
                return self.resolve(star, name, seen)
        return {m for m in self.modules if m == module or m.startswith(module + ".")}  # not followed: all of it

    def closure(self, imports: Iterable[tuple[str, str | None]]) -> set[str]:
        """Every package module that the imports ``(module, name or None)`` depend on, transitively."""
        todo = [(m, n) for m, n in imports if m.split(".")[0] == PACKAGE]
        reached: set[str] = set()
        while todo:
            module, name = todo.pop()
            targets = {module} if name is None else self.resolve(module, name)
            for target in targets:
                if target in reached or target not in self.modules:
                    continue
                reached.add(target)
                info = self.modules[target]
                if info.is_package and name is not None and target == module:
                    continue  # a name defined in the package's __init__: its re-exports are not followed
                if not info.is_package or name is None:
                    todo.extend((m, n) for m, n in info.imports if m.split(".")[0] == PACKAGE)
                todo.extend((m, None) for m in self.registered.get(target, ()))
        return reached

    def files(self, modules: Iterable[str]) -> list[Path]:
        """The files of ``modules``, the ``__init__.py`` of every package above them (and the module that resolves
        their names), and the package's YAML."""
        names = set(modules)
        for module in list(names):
            parts = module.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts)))
        if any(self.modules[m].is_package for m in names if m in self.modules and m != PACKAGE):
            names.add(f"{PACKAGE}.namespaces")  # which resolves the names of every stage
        paths = {self.modules[m].path for m in names if m in self.modules}
        paths.update(self.package_dir.rglob("*.yaml"))
        return sorted(paths)


def notebook_imports(notebook: Path) -> list[tuple[str, str | None]]:
    """The ``(module, name or None)`` imports of a notebook's code cells (IPython magics and shell lines skipped).

    Raises:
        SyntaxError: a code cell is not Python.
    """
    cells = json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", [])
    found: list[tuple[str, str | None]] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        lines = (source if isinstance(source, str) else "".join(source)).splitlines()
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)
        for node in ast.walk(ast.parse(code, filename=str(notebook))):
            if isinstance(node, ast.Import):
                found.extend((alias.name, None) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.extend((node.module, None if a.name == "*" else a.name) for a in node.names)
    return found


@lru_cache(maxsize=4)
def _graph(package_dir: str, stamp: tuple[tuple[str, float], ...]) -> ModuleGraph:
    return ModuleGraph(Path(package_dir))


def _package_graph(package_dir: Path) -> ModuleGraph:
    stamp = tuple((str(p), p.stat().st_mtime) for p in sorted(Path(package_dir).rglob("*.py")))
    return _graph(str(package_dir), stamp)


def notebook_dependencies(notebook: Path, package_dir: Path | None = None) -> list[Path]:
    """The package files a notebook's results depend on (:meth:`ModuleGraph.files` of its imports' closure)."""
    graph = _package_graph(Path(package_dir) if package_dir else Path(__file__).resolve().parents[1])
    return graph.files(graph.closure(notebook_imports(notebook)))


def notebook_source_hash(notebook: Path, package_dir: Path | None = None) -> str:
    """sha256 of the package files a notebook depends on (names relative to the package, then contents)."""
    package_dir = Path(package_dir) if package_dir else Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in notebook_dependencies(notebook, package_dir):
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
