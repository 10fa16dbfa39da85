"""The stages import their modules on first use: a name costs its own module, and every name still resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from cmbstudy.namespaces import lazy_stage

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "cmbstudy"
STAGES = sorted(".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")
                if "lazy_stage" in p.read_text())


def _in_fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_every_stage_with_many_modules_is_lazy() -> None:
    assert {"cmbstudy.data", "cmbstudy.models", "cmbstudy.study", "cmbstudy.study.tables", "cmbstudy.training",
            "cmbstudy.inference", "cmbstudy.figures"} <= set(STAGES)


def test_a_table_and_the_verdicts_are_read_without_torch_or_monai() -> None:
    loaded = _in_fresh_python(
        "import sys\n"
        "from cmbstudy.study.tables import compare_methods, summarize_burden\n"
        "from cmbstudy.study.verdicts import make_abstract\n"
        "from cmbstudy.data import load_study_subjects\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    assert loaded == "[]"


def test_the_registry_knows_every_network_without_importing_them_first() -> None:
    names = _in_fresh_python("from cmbstudy.models.registry import list_models; print(' '.join(list_models()))")
    assert set(names.split()) == {"rlk_unet_cbam", "dou2016_cnn3d", "nnunet_dynunet", "fan2022_unet", "tsuchida2024_shiva",
                                 "wei2022_mmoc"}


def test_the_registry_imports_every_module_that_registers_a_network() -> None:
    from cmbstudy.models.registry import BUILT_IN

    registering = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                   if "register_model(" in p.read_text() and p.name != "registry.py"}
    assert set(BUILT_IN) == registering


@pytest.mark.parametrize("stage", STAGES)
def test_every_public_name_is_its_module_s_object(stage: str) -> None:
    package = importlib.import_module(stage)
    assert package.__all__ and len(set(package.__all__)) == len(package.__all__)
    values = {name: getattr(package, name) for name in package.__all__}
    modules = [m for m in vars(package).values() if isinstance(m, type(package)) and m.__name__.startswith(stage)]
    for name, value in values.items():
        if isinstance(value, type(package)):
            assert value.__name__ == f"{stage}.{name}"
        else:
            assert any(name in getattr(m, "__all__", ()) and getattr(m, name) is value for m in modules), name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
        package.not_a_name  # noqa: B018


def test_names_come_from_the_type_checking_block_in_its_order(tmp_path: Path) -> None:
    stage = tmp_path / "stage_probe"
    stage.mkdir()
    (stage / "first.py").write_text('from . import second\nfrom .second import *\n\n__all__ = ["A", *second.__all__]\n'
                                    'A = 1\n')
    (stage / "second.py").write_text('__all__ = ["B"]\nB = 2\n')
    (stage / "third.py").write_text('__all__ = ["B", "C"]\nB = 3\nC = 4\n')
    (stage / "fourth.py").write_text('__all__ = []\nD = 5\n')  # a module the block does not name
    (stage / "__init__.py").write_text(
        '"""probe"""\nfrom typing import TYPE_CHECKING\nfrom cmbstudy.namespaces import lazy_stage\n'
        "if TYPE_CHECKING:\n    from .first import *\n    from .third import *\n    from . import second\n"
        "__getattr__, __dir__, _names = lazy_stage(__name__, __file__)\n__all__ = _names\n")
    sys.path.insert(0, str(tmp_path))
    try:
        probe = importlib.import_module("stage_probe")
        assert probe.__all__ == ["A", "B", "C", "second"]
        assert "stage_probe.third" not in sys.modules
        assert (probe.A, probe.B, probe.C) == (1, 2, 4)  # B from the first module that exports it
        assert probe.second.B == 2
        assert probe.fourth.D == 5 and "fourth" not in probe.__all__
        with pytest.MonkeyPatch.context() as patch:  # a name patched in its module is patched in the stage
            patch.setattr(probe.third, "C", 40)
            assert probe.C == 40
        assert probe.C == 4
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("stage_probe")]:
            del sys.modules[name]


def test_a_module_without_a_literal_all_is_refused(tmp_path: Path) -> None:
    (tmp_path / "loose.py").write_text("__all__ = sorted(['x'])\n")
    (tmp_path / "__init__.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                          "    from .loose import *\n")
    with pytest.raises(ValueError, match="loose states no literal __all__"):
        lazy_stage("cmbstudy", str(tmp_path / "__init__.py"))
