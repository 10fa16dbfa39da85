"""What the study runner remembers between runs: the state of its steps and one record per training run.

``OUT/study_state.json`` holds each step's key (the hash of its inputs) and
seconds. Each training run also writes its record beside its executed notebook
(``<run>.record.json``), so that jobs training runs at the same time (``cmbstudy
study --run NAME`` on a cluster) never write one file at once: the next study
reads every record back and skips the runs already trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RECORD_SUFFIX", "load_state", "load_instance_records"]


#: Suffix of the record (key, seconds, finished) written beside each executed training run.
RECORD_SUFFIX = ".record.json"


def load_instance_records(folder: Path) -> dict[str, dict[str, Any]]:
    """Run name -> its record, from the files :data:`RECORD_SUFFIX` of ``folder`` (unreadable ones skipped)."""
    records = {}
    for path in sorted(folder.glob(f"*{RECORD_SUFFIX}")):
        try:
            records[path.name[: -len(RECORD_SUFFIX)]] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return records


def load_state(path: Path) -> dict[str, Any]:
    """The study state saved at ``path`` (``{"steps": {}}`` when missing or unreadable)."""
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError:
            return {"steps": {}}
        if isinstance(state, dict) and isinstance(state.get("steps"), dict):
            return state
    return {"steps": {}}
