"""``data_manifest.yaml``: load the dataset declarations and check a local copy against them.

The canonical manifest is ``data_manifest.yaml`` at the repository root (the
package is installed editable from a checkout, ``pip install -e .``); it is
located relative to this module. :func:`check_dataset` reads every volume of a
dataset root through :mod:`cmbstudy.data.io` and reports, per subject and file,
what is wrong and what to do: missing files, 4D or 2D volumes, NaN/Inf, empty
images, masks that are not 0/1 or not on the image grid, voxel sizes (a
warning above an anisotropy ratio of 6) and the subject count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml
from scipy import ndimage
from tqdm import tqdm

from ..errors import ConfigError, InputError
from .datasets import (
    Subject,
    _expected_mask_path,
    _normalise_layout,
    _read_description,
    _subject_dirs,
    detect_layout,
    load_participants,
    load_subjects,
)
from .io import load_mask, load_scan, voxel_sizes

__all__ = [
    "MANIFEST_NAME",
    "ANISOTROPY_WARNING",
    "STATUSES",
    "default_manifest_path",
    "load_manifest",
    "CheckRow",
    "DatasetReport",
    "check_dataset",
]

MANIFEST_NAME = "data_manifest.yaml"
ANISOTROPY_WARNING = 6.0  # largest / smallest voxel edge above which a warning is given
STATUSES: tuple[str, ...] = ("ok", "info", "warning", "error")
_ACCESS = ("generated", "registration", "public", "user-provided")
_REQUIRED_KEYS = ("access", "licence", "source", "layout", "files", "expected_subjects", "checksums")


def default_manifest_path() -> Path:
    """Where the manifest is expected: the repository root holding ``src/cmbstudy``."""
    return Path(__file__).resolve().parents[3] / MANIFEST_NAME


def load_manifest(path: str | Path | None = None) -> dict[str, Any]:
    """Read and validate ``data_manifest.yaml``.

    Args:
        path: manifest file; None uses :func:`default_manifest_path`.

    Raises:
        ConfigError: the file is missing, not YAML, or an entry lacks a required key.
    """
    path = Path(path) if path is not None else default_manifest_path()
    if not path.is_file():
        raise ConfigError(
            f"data manifest {path} not found: it ships at the repository root; "
            "install cmbstudy from a checkout (pip install -e .) or pass the manifest's path"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"data manifest {path} is not valid YAML ({exc}): fix it") from exc
    datasets = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError(f"data manifest {path} has no 'datasets' mapping: restore it from git")
    for name, entry in datasets.items():
        missing = [key for key in _REQUIRED_KEYS if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise ConfigError(f"data manifest {path}: dataset {name!r} lacks {missing}")
        if entry["access"] not in _ACCESS:
            raise ConfigError(
                f"data manifest {path}: dataset {name!r} has access {entry['access']!r}; use one of {_ACCESS}"
            )
    return data


@dataclass(frozen=True)
class CheckRow:
    """One check of one file (or of the whole dataset when ``subject`` is "-")."""

    subject: str  # subject id, or "-" for dataset-level checks
    file: str  # path relative to the dataset root
    status: str  # "ok" | "info" | "warning" | "error"
    problem: str  # what was found and, for a problem, what to do


@dataclass
class DatasetReport:
    """Result of :func:`check_dataset`: rows and a readable table."""

    root: Path  # dataset root that was checked
    dataset: str  # manifest entry, e.g. "valdo2021-cmb"
    layout: str  # detected or given layout
    n_subjects: int  # subjects found
    expected_subjects: int | None  # from the manifest (None: not stated)
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no row is an error (warnings and notes do not fail)."""
        return not any(row.status == "error" for row in self.rows)

    def count(self, status: str) -> int:
        """Number of rows with ``status``."""
        return sum(row.status == status for row in self.rows)

    def format_table(self) -> str:
        """Aligned table (subject, file, status, problem) and a one-line summary."""
        header = ("subject", "file", "status", "problem")
        body = [(r.subject, r.file, r.status, r.problem) for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(3)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3]
                 for row in [header, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(header[3]))
        expected = "" if self.expected_subjects is None else f" of {self.expected_subjects} expected"
        verdict = "OK" if self.ok else "FAILED"
        lines.append(
            f"{verdict}: {self.dataset} at {self.root}: {self.n_subjects} subjects{expected}; "
            f"{self.count('error')} errors, {self.count('warning')} warnings, {self.count('info')} notes"
        )
        return "\n".join(line.rstrip() for line in lines)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _participant_count(participants: Any, subject_id: str) -> int | None:
    label = subject_id.split("_ses-")[0]
    if "cmb_count" not in participants.columns or label not in participants.index:
        return None
    value = participants.loc[label, "cmb_count"]
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _nonfinite_row(subject: Subject, root: Path, bad: np.ndarray) -> CheckRow:
    """NaN/Inf voxels: an error inside the dataset's brain mask, else a warning (they are set to 0 outside it)."""
    where = _rel(subject.image_path, root)
    if subject.brain_mask_path is not None:
        try:
            inside = int((bad & (np.asarray(load_mask(subject.brain_mask_path).dataobj) > 0)).sum())
        except InputError:
            inside = 0  # the brain mask's own row reports what is wrong with it
        if inside:
            return CheckRow(subject.subject_id, where, "error",
                            f"{inside} of its {int(bad.sum())} NaN/Inf voxels lie inside the brain mask: "
                            "the scan is damaged there; export it again or repair those voxels")
    return CheckRow(subject.subject_id, where, "warning",
                    f"{int(bad.sum())} NaN/Inf voxels: accepted outside the brain (set to 0), an error inside it")


def _check_subject(
    subject: Subject, root: Path, layout: str, mask_required: bool, participants: Any
) -> list[CheckRow]:
    sid, rows = subject.subject_id, []
    image = None
    try:
        image, bad = load_scan(subject.image_path, what="image")
        if bad is not None:
            rows.append(_nonfinite_row(subject, root, bad))
        sizes = voxel_sizes(image)
        ratio = max(sizes) / min(sizes)
        text = (f"{subject.modality}, shape {tuple(image.shape[:3])}, voxel "
                f"{sizes[0]:.2f} x {sizes[1]:.2f} x {sizes[2]:.2f} mm")
        rows.append(CheckRow(sid, _rel(subject.image_path, root), "ok", text))
        if ratio > ANISOTROPY_WARNING:
            rows.append(CheckRow(
                sid, _rel(subject.image_path, root), "warning",
                f"voxel anisotropy {ratio:.1f} > {ANISOTROPY_WARNING:g}: slices are very thick "
                "for their in-plane size; check the acquisition (results may not transfer)",
            ))
    except InputError as exc:
        rows.append(CheckRow(sid, _rel(subject.image_path, root), "error", str(exc)))
    if subject.mask_path is None:
        expected = _expected_mask_path(subject.image_path, layout)
        if mask_required:
            rows.append(CheckRow(
                sid, _rel(expected, root), "error",
                f"CMB mask is missing: restore {expected.name} or remove sub-{sid} from the dataset",
            ))
        else:
            rows.append(CheckRow(sid, _rel(expected, root), "info",
                                 "no CMB mask: the subject can be predicted but not evaluated"))
    else:
        rows.extend(_check_mask(subject, image, root, participants))
    if subject.brain_mask_path is not None:
        where = _rel(subject.brain_mask_path, root)
        try:
            brain = load_mask(subject.brain_mask_path, reference=image, what="brain mask")
            n = int(np.count_nonzero(np.asarray(brain.dataobj)))
            if n == 0:
                rows.append(CheckRow(sid, where, "error",
                                     "brain mask is empty: re-export it or use brain extraction"))
            else:
                rows.append(CheckRow(sid, where, "ok", f"brain mask, {n} voxels"))
        except InputError as exc:
            rows.append(CheckRow(sid, where, "error", str(exc)))
    return rows


def _check_mask(subject: Subject, image: Any, root: Path, participants: Any) -> list[CheckRow]:
    sid, where = subject.subject_id, _rel(subject.mask_path, root)
    try:
        mask = load_mask(subject.mask_path, reference=image, what="CMB mask")
    except InputError as exc:
        return [CheckRow(sid, where, "error", str(exc))]
    data = np.asarray(mask.dataobj) > 0
    n_cmb = int(ndimage.label(data, structure=np.ones((3, 3, 3), bool))[1])
    declared = _participant_count(participants, sid)
    if n_cmb == 0:
        if declared is not None and declared > 0:
            return [CheckRow(sid, where, "error",
                             f"CMB mask is empty but participants.tsv says {declared} CMBs: "
                             "re-export the mask or correct participants.tsv")]
        source = " (participants.tsv: 0)" if declared == 0 else ""
        return [CheckRow(sid, where, "info", f"CMB mask has no CMB{source}: a CMB-free subject")]
    rows = [CheckRow(sid, where, "ok", f"CMB mask, {n_cmb} lesions (26-connected), {int(data.sum())} voxels")]
    if declared is not None and declared != n_cmb:
        rows.append(CheckRow(sid, where, "warning",
                             f"CMB mask has {n_cmb} connected lesions but participants.tsv says "
                             f"{declared}: touching lesions merge; check the mask if this is unexpected"))
    return rows


def _expected_count(entry: dict, root: Path) -> int | None:
    expected = entry.get("expected_subjects")
    if isinstance(expected, int) and not isinstance(expected, bool):
        return expected
    if isinstance(expected, str) and "dataset_description" in expected:
        value = _read_description(root).get("cmbstudy", {}).get("n_subjects")
        return int(value) if isinstance(value, int) else None
    return None


def _count_rows(subjects: Iterable[Subject], root: Path, entry: dict, expected: int | None,
                participants: Any) -> list[CheckRow]:
    rows = []
    found = {s.subject_id.split("_ses-")[0] for s in subjects}
    for subject_dir in _subject_dirs(root):
        label = subject_dir.name[len("sub-"):]
        if label not in found:
            rows.append(CheckRow(label, _rel(subject_dir, root), "error",
                                 "no image found in this subject folder: restore it (file names in "
                                 "data_manifest.yaml) or remove the folder"))
    n = len(found)
    if expected is not None and n != expected:
        severity = entry.get("missing_subjects", "warning") if n < expected else "warning"
        rows.append(CheckRow("-", ".", "error" if severity == "error" else "warning",
                             f"{n} subjects with an image, the manifest expects {expected}: "
                             "check that the copy is complete"))
    if len(participants.index):
        for label in sorted(set(participants.index) - found):
            rows.append(CheckRow(label, "participants.tsv", "warning",
                                 f"sub-{label} is listed in participants.tsv but has no image"))
    return rows


def check_dataset(root: Path, dataset: str | None = None, manifest: str | Path | None = None,
                  progress: bool = False) -> DatasetReport:
    """Validate every subject of a dataset root against the manifest.

    Args:
        root: dataset root folder.
        dataset: manifest entry (``synthetic``, ``bids-like``, ``valdo2021-cmb``) or
            layout name; None detects the layout.
        manifest: manifest path; None uses :func:`default_manifest_path`.
        progress: show a progress bar over subjects.

    Raises:
        InputError: missing root, unknown layout or dataset name, no subject found.
        ConfigError: the manifest cannot be read.
    """
    root = Path(root)
    detected = detect_layout(root)  # a missing root or an unknown layout is an InputError
    layout = detected if dataset is None else _normalise_layout(dataset)
    data = load_manifest(manifest)
    by_layout = {entry["layout"]: name for name, entry in data["datasets"].items()}
    if layout not in by_layout:
        raise ConfigError(f"data manifest declares no dataset with layout {layout!r}: add one")
    name = by_layout[layout]
    entry = data["datasets"][name]
    subjects = load_subjects(root, layout)
    participants = load_participants(root)
    required = entry.get("cmb_mask_required", True)
    mask_required = required is True or (
        isinstance(required, str) and any(s.mask_path is not None for s in subjects)
    )
    rows: list[CheckRow] = []
    for subject in tqdm(subjects, desc="check", unit="subject", disable=not progress):
        rows.extend(_check_subject(subject, root, layout, mask_required, participants))
    expected = _expected_count(entry, root)
    rows.extend(_count_rows(subjects, root, entry, expected, participants))
    n_subjects = len({s.subject_id.split("_ses-")[0] for s in subjects})
    return DatasetReport(root, name, layout, n_subjects, expected, rows)
