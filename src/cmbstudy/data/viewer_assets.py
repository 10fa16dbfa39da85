"""The pages' JavaScript, so that they open with no network: the scan viewer (NiiVue and its controls) and MathJax.

Both come from the npm registry at the versions pinned in the project's ``package-lock.json``;
``npm ci`` in the project's root (``make setup`` runs it) puts them in ``node_modules/``:

- NiiVue (BSD-2-Clause) draws the scan viewers' volumes; ``cmb-viewer.js`` (in ``viewer_static/``
  beside this module) is the viewer's own controls. :func:`install_viewer_assets` copies both beside
  the pages that use them (the book's ``viewer/``, ``cmbstudy detect``'s output), with a notice of
  NiiVue's version, licence and integrity hash. The pages are written by :mod:`cmbstudy.figures.viewer`.
- MathJax (Apache-2.0) typesets the book's formulas; :func:`install_mathjax` copies its combined
  TeX/MathML component and its fonts into the book, which Jupyter Book would otherwise load from a CDN.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .io import write_text_atomically

__all__ = ["ASSET_FILES", "NODE_MODULES_ENV", "NIIVUE_SCRIPT", "VIEWER_SCRIPT", "MATHJAX_SCRIPT",
           "find_npm_package", "find_niivue", "install_viewer_assets", "install_mathjax", "niivue_version"]

#: Environment variable naming a ``node_modules`` folder, where the project's root is not found
#: above this module (e.g. a package installed without its checkout).
NODE_MODULES_ENV = "CMBSTUDY_NODE_MODULES"
NIIVUE_PACKAGE = "@niivue/niivue"
NIIVUE_SCRIPT = "niivue.umd.js"
VIEWER_SCRIPT = "cmb-viewer.js"
NOTICE = "NOTICE.txt"
#: The files :func:`install_viewer_assets` puts beside a viewer page.
ASSET_FILES = (NIIVUE_SCRIPT, VIEWER_SCRIPT, NOTICE)
MATHJAX_PACKAGE = "mathjax"
#: MathJax's combined component (TeX and MathML in, HTML-CSS out), and the fonts it reads beside it.
MATHJAX_SCRIPT = "tex-mml-chtml.js"
_MATHJAX_FONTS = Path("output", "chtml", "fonts", "woff-v2")
_STATIC = Path(__file__).with_name("viewer_static")


def find_npm_package(name: str, roots: Sequence[Path] | None = None) -> Path:
    """The folder of the npm package ``name`` in ``$CMBSTUDY_NODE_MODULES`` or a ``node_modules`` folder.

    Args:
        roots: folders whose ``node_modules`` are searched (default: every folder above this module,
            which holds the project's root in a checkout).

    Raises:
        InputError: not found; the message says how to install it.
    """
    folders = [Path(os.environ[NODE_MODULES_ENV]).expanduser()] if os.environ.get(NODE_MODULES_ENV) else []
    roots = Path(__file__).resolve().parents if roots is None else roots
    folders += [Path(root) / "node_modules" for root in roots]
    for folder in folders:
        if (folder / name / "package.json").is_file():
            return folder / name
    raise InputError(f"the npm package {name} was not found: run `npm ci` in the project's root (`make setup` "
                     f"does), or set {NODE_MODULES_ENV} to a node_modules folder that holds it")


def find_niivue(roots: Sequence[Path] | None = None) -> Path:
    """NiiVue's bundled script (``dist/niivue.umd.js``; see :func:`find_npm_package`).

    Raises:
        InputError: not installed.
    """
    script = find_npm_package(NIIVUE_PACKAGE, roots) / "dist" / NIIVUE_SCRIPT
    if not script.is_file():
        raise InputError(f"{script} is missing: run `npm ci` in the project's root again")
    return script


def _package(folder: Path) -> dict:
    return json.loads((folder / "package.json").read_text())


def _notice(package_dir: Path, shipped: str) -> str:
    meta = _package(package_dir)
    lock = next((p / "package-lock.json" for p in package_dir.parents if (p / "package-lock.json").is_file()), None)
    integrity = ""
    if lock is not None:
        entry = json.loads(lock.read_text()).get("packages", {}).get(f"node_modules/{meta.get('name')}", {})
        integrity = entry.get("integrity", "")
    return (f"{shipped}: {meta.get('name')} {meta.get('version', '?')}, licence {meta.get('license', 'unknown')}, "
            f"from the npm registry{f', integrity {integrity}' if integrity else ''}; {meta.get('homepage', '')}\n")


def install_viewer_assets(folder: str | Path) -> dict[str, Path]:
    """Copy the viewer's scripts into ``folder`` with a notice of NiiVue's version and licence.

    Returns:
        File name -> path written (:data:`ASSET_FILES`).

    Raises:
        InputError: NiiVue not installed (:func:`find_niivue`).
    """
    script = find_niivue()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(script, folder / NIIVUE_SCRIPT)
    shutil.copyfile(_STATIC / VIEWER_SCRIPT, folder / VIEWER_SCRIPT)
    write_text_atomically(folder / NOTICE, _notice(script.parent.parent, NIIVUE_SCRIPT)
                          + f"{VIEWER_SCRIPT}: part of cmbstudy, under its licence.\n")
    return {name: folder / name for name in ASSET_FILES}


def install_mathjax(folder: str | Path) -> Path:
    """Copy MathJax's combined component and its fonts into ``folder``; returns the script's path.

    Raises:
        InputError: MathJax not installed (:func:`find_npm_package`).
    """
    es5 = find_npm_package(MATHJAX_PACKAGE) / "es5"
    folder = Path(folder)
    shutil.rmtree(folder / _MATHJAX_FONTS, ignore_errors=True)
    shutil.copytree(es5 / _MATHJAX_FONTS, folder / _MATHJAX_FONTS)
    shutil.copyfile(es5 / MATHJAX_SCRIPT, folder / MATHJAX_SCRIPT)
    write_text_atomically(folder / NOTICE, _notice(es5.parent, MATHJAX_SCRIPT))
    return folder / MATHJAX_SCRIPT


def niivue_version() -> str:
    """The version of the NiiVue that :func:`find_niivue` finds (its ``package.json``).

    Raises:
        InputError: NiiVue not installed.
    """
    return str(_package(find_niivue().parent.parent).get("version", "unknown"))
