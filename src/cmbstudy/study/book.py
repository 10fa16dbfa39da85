"""The book: the executed notebooks copied into ``book/executed/`` and rendered by Jupyter Book 1.

Jupyter Book 1 (Sphinx) builds offline, with warnings as errors and nitpicky
references (``-W -n``), so a broken glue key, citation or cross-reference fails
the build. Before it builds, the scan viewer's scripts (NiiVue and its controls,
:func:`cmbstudy.data.viewer_assets.install_viewer_assets`) are copied into
``book/_extra/viewer``, and MathJax into ``book/_extra/mathjax``, so that the
rendered book opens with no network (Jupyter Book loads MathJax from a CDN
unless ``mathjax_path`` names a copy). Sphinx copies ``_extra`` into the site's root
(``html_extra_path``), so the chapters that hold a viewer load them as
:data:`BOOK_VIEWER_URL`; Jupyter Book would add every script of ``_static`` to every page.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ..data.io import write_text_atomically
from ..data.viewer_assets import install_mathjax, install_viewer_assets
from ..errors import CmbStudyError

__all__ = ["BOOK_VIEWER_DIR", "BOOK_VIEWER_URL", "BOOK_MATHJAX_DIR", "VIEWER_DATA", "BookError", "build_book_from", "build_book"]

#: Where the book keeps the scan viewer's scripts, relative to the book's folder (``_extra`` is the
#: book's ``html_extra_path``) ...
BOOK_VIEWER_DIR = "_extra/viewer"
#: ... and how a chapter of ``executed/`` reaches them in the rendered site.
BOOK_VIEWER_URL = "../viewer"
#: Where the book keeps MathJax (``mathjax_path`` in ``_config.yml`` names it, relative to ``_static``).
BOOK_MATHJAX_DIR = "_extra/mathjax"
#: The folder of the results where the notebooks write their viewers' scans (one subfolder per viewer,
#: :func:`cmbstudy.figures.viewer.write_linked_viewer`); the build copies it to ``BOOK_VIEWER_DIR/data``.
VIEWER_DATA = "viewer-data"


class BookError(CmbStudyError):
    """The book build failed."""


def build_book_from(executed_dir: Path, book_dir: Path, viewer_data: Path | None = None) -> Path:
    """Copy executed notebooks into ``book/executed/`` and render the book; returns index.html.

    ``viewer_data`` (the results' :data:`VIEWER_DATA`) replaces the book's copy of the viewers' scans.
    """
    target = book_dir / "executed"
    target.mkdir(exist_ok=True)
    for notebook in sorted(Path(executed_dir).glob("[0-9][0-9]_*.ipynb")):
        if not notebook.name.endswith(".failed.ipynb"):
            write_text_atomically(target / notebook.name, _prepare_for_book(notebook.read_text()))
    if viewer_data is not None:
        copy = book_dir / BOOK_VIEWER_DIR / "data"
        shutil.rmtree(copy, ignore_errors=True)
        if Path(viewer_data).is_dir():
            shutil.copytree(viewer_data, copy)
    return build_book(book_dir)


def build_book(book_dir: Path) -> Path:
    """Render ``book_dir`` with Jupyter Book 1, warnings as errors; returns index.html.

    Raises:
        BookError: the build failed (its log's last lines are in the message).
        InputError: NiiVue or MathJax is not installed (the message says how).
    """
    install_viewer_assets(book_dir / BOOK_VIEWER_DIR)
    install_mathjax(book_dir / BOOK_MATHJAX_DIR)
    jb = Path(sys.executable).with_name("jupyter-book")
    command = [str(jb) if jb.exists() else "jupyter-book", "build", str(book_dir),
               "--builder", "html", "-W", "-n", "--keep-going"]
    print(f"[study] book: {' '.join(command[1:])}", flush=True)
    # the redirect to the root page is written only when missing: a stale one would outlive a new toc root
    (book_dir / "_build" / "html" / "index.html").unlink(missing_ok=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BookError(f"the book build failed (exit {result.returncode}):\n{tail}")
    index = book_dir / "_build" / "html" / "index.html"
    print(f"[study] book: {index}", flush=True)
    return index


def _prepare_for_book(text: str) -> str:
    """The notebook's JSON as the book shows it.

    Papermill's injected-parameters cell is collapsed like the code around it, and
    an empty note (``display(Markdown(""))``, a chapter with nothing missing) is
    dropped: the book would print its repr in place of the empty markdown.
    """
    notebook = json.loads(text)
    for cell in notebook.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if not _is_empty_markdown(o)]
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def _is_empty_markdown(output: dict) -> bool:
    data = output.get("data", {})
    return output.get("output_type") == "display_data" and "text/markdown" in data and \
        not "".join(data["text/markdown"]).strip()
