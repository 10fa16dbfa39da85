"""Stage namespaces that import their modules on first use (PEP 562), so that a name costs only its module.

Each subpackage re-exports its modules' public names (``cmbstudy.study.tables.compare_methods``). Imported
eagerly, that made every import of one name run every module of the subpackage and of the subpackages they
import: a notebook that reads a table imported torch and MONAI (about 2.5 s of a kernel's start) because
another module of its stage trains networks. A stage's ``__init__.py`` now states its re-exports as plain
import statements under ``if TYPE_CHECKING:``, which readers, type checkers and the study's dependency walk
(:mod:`cmbstudy.study.dependencies`) read as before, and hands its own file to :func:`lazy_stage`, which reads
those statements and imports a module when one of its names is first asked for.

Written here because ``lazy_loader`` (SPEC 1) needs each name listed by hand, or a stub file without the
``from .module import *`` that every stage uses.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any, Callable

__all__ = ["lazy_stage"]


def _type_checking_imports(init: Path) -> tuple[list[str], list[str]]:
    """The modules that ``init`` star-imports and those it imports whole (``from . import m``), in its order,
    from its top-level ``if TYPE_CHECKING:`` block."""
    starred, whole = [], []
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.level == 1:
                    if statement.module and [a.name for a in statement.names] == ["*"]:
                        starred.append(statement.module)
                    elif statement.module is None:
                        whole.extend(alias.name for alias in statement.names)
    return starred, whole


def _module_file(folder: Path, module: str) -> Path:
    path = folder / f"{module}.py"
    return path if path.is_file() else folder / module / "__init__.py"


def _public_names(folder: Path, module: str) -> list[str]:
    """A module's ``__all__``, read from its source: a literal list, whose ``*other.__all__`` entries are
    those of the sibling module ``other``.

    Raises:
        ValueError: the module states no literal ``__all__``.
    """
    for node in ast.parse(_module_file(folder, module).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__" \
                and isinstance(node.value, ast.List):
            names = []
            for element in node.value.elts:
                if isinstance(element, ast.Constant):
                    names.append(element.value)
                elif isinstance(element, ast.Starred) and isinstance(element.value, ast.Attribute) \
                        and isinstance(element.value.value, ast.Name):
                    names.extend(_public_names(folder, element.value.value.id))
                else:
                    raise ValueError(f"{module}: __all__ entry {ast.unparse(element)} cannot be read")
            return names
    raise ValueError(f"{module} states no literal __all__")


def lazy_stage(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` of the stage ``package`` whose ``__init__.py`` is ``init_file``.

    ``__all__`` holds the public names of the star-imported modules in the order of the ``TYPE_CHECKING``
    block (a name exported by two modules comes from the first), then the modules imported whole.
    ``__getattr__`` imports the module that defines a name when it is first asked for, and any module of the
    stage by its name.
    """
    init = Path(init_file)
    starred, whole = _type_checking_imports(init)
    owner: dict[str, str] = {}
    for module in starred:
        for name in _public_names(init.parent, module):
            owner.setdefault(name, module)
    names = [*owner, *whole]
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name in owner:  # read from its module each time, so that a name patched there is patched here too
            return getattr(importlib.import_module(f"{package}.{owner[name]}"), name)
        if name in whole or name in starred or _module_file(init.parent, name).is_file():
            return importlib.import_module(f"{package}.{name}")  # any module of the stage, as an eager one had
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__, names
