"""What the book shows of an executed notebook: the injected parameters collapsed, empty notes dropped."""

from __future__ import annotations

import json

import nbformat

from cmbstudy.study.book import _prepare_for_book


def test_injected_parameters_are_collapsed_and_empty_notes_dropped() -> None:
    notebook = nbformat.v4.new_notebook()
    injected = nbformat.v4.new_code_cell("profile = 'smoke'")
    injected.metadata["tags"] = ["injected-parameters"]
    note = nbformat.v4.new_code_cell("display(Markdown(note))")
    note.outputs = [
        nbformat.v4.new_output("display_data", data={"text/plain": "<IPython.core.display.Markdown object>",
                                                     "text/markdown": ""}),
        nbformat.v4.new_output("display_data", data={"text/plain": "<IPython.core.display.Markdown object>",
                                                     "text/markdown": "**Runs not found**"}),
    ]
    notebook.cells = [injected, note]
    shown = json.loads(_prepare_for_book(nbformat.writes(notebook)))
    assert shown["cells"][0]["metadata"]["tags"] == ["injected-parameters", "hide-input"]
    assert ["".join(o["data"]["text/markdown"]) for o in shown["cells"][1]["outputs"]] == ["**Runs not found**"]
