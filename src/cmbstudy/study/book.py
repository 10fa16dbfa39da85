"""The book: the executed notebooks copied into ``book/executed/`` and rendered by Jupyter Book 1.

Jupyter Book 1 (Sphinx) builds offline, with warnings as errors and nitpicky
references (``-W -n``), so a broken glue key, citation or cross-reference fails
the build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..data.io import write_text_atomically
from ..errors import CmbStudyError

__all__ = ["BookError", "build_book_from", "build_book"]


class BookError(CmbStudyError):
    """The book build failed."""


def build_book_from(executed_dir: Path, book_dir: Path) -> Path:
    """Copy executed notebooks into ``book/executed/`` and render the book; returns index.html."""
    target = book_dir / "executed"
    target.mkdir(exist_ok=True)
    for notebook in sorted(Path(executed_dir).glob("[0-9][0-9]_*.ipynb")):
        if not notebook.name.endswith(".failed.ipynb"):
            write_text_atomically(target / notebook.name, _prepare_for_book(notebook.read_text()))
    return build_book(book_dir)


def build_book(book_dir: Path) -> Path:
    """Render ``book_dir`` with Jupyter Book 1, warnings as errors; returns index.html.

    Raises:
        BookError: the build failed (its log's last lines are in the message).
    """
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
