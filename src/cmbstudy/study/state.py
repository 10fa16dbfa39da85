"""What the study runner remembers between runs: the state of its steps and one record per training run.

``OUT/study_state.json`` holds each step's key (the hash of its inputs) and
seconds. Each training run also writes its record beside its executed notebook
(``<run>.record.json``), so that jobs training runs at the same time (``cmbstudy
study --run NAME`` on a cluster) never write one file at once: the next study
reads every record back and skips the runs already trained.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from ..data.io import write_text_atomically
from .runs import STATE_FILE, TIMINGS_FILE

__all__ = ["RECORD_SUFFIX", "load_state", "load_instance_records", "write_timings", "sha256_of_files", "content_hash"]


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


def write_timings(out: Path, state: dict[str, Any], steps: Sequence[Any]) -> None:
    """``OUT/study_timings.tsv``: seconds of the last run of every step of ``steps`` (each training run of a
    step with ``instances``) and their total, in ``steps``' order; then ``state``, with that total, to
    ``OUT/study_state.json``."""
    lines = ["step\tinstance\tseconds\tfinished"]
    total = 0.0
    for step in steps:
        entry = state["steps"].get(step.name)
        if entry is None:
            continue
        if step.instances is not None:
            for name, sub in sorted(entry.get("instances", {}).items()):
                lines.append(f"{step.name}\t{name}\t{sub['seconds']:.1f}\t{sub.get('finished', '')}")
        else:
            lines.append(f"{step.name}\t-\t{entry['seconds']:.1f}\t{entry.get('finished', '')}")
        total += float(entry["seconds"])
    lines.append(f"total\t-\t{total:.1f}\t-")
    state["total_seconds"] = round(total, 1)
    write_text_atomically(out / TIMINGS_FILE, "\n".join(lines) + "\n")
    write_text_atomically(out / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))


def sha256_of_files(paths: Sequence[Path]) -> str:
    """One hash of the files' names and bytes, in sorted order (a step's notebook in its skip key)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def content_hash(payload: Any) -> str:
    """The hash of ``payload`` as sorted JSON: a step's or a run's skip key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
