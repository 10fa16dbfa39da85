"""Which scans ``cmbstudy detect`` reads: one file, a plain folder of NIfTI files, or a dataset root.

A dataset root holds ``sub-*`` folders (any layout
:func:`cmbstudy.data.datasets.load_subjects` reads: BIDS-like, VALDO) and gives
each scan its subject id and brain mask. A plain folder gives every NIfTI file
that is not a mask or an output (by name), its label taken from the file name
(:func:`subject_label`), and its brain mask from a pattern. Outputs of dataset
scans and BIDS-named files go to ``sub-<id>/anat/sub-<id>_*``, others to
``<stem>/<stem>_*``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..data.datasets import load_subjects
from ..data.io import NIFTI_SUFFIXES, load_scan
from ..errors import ConfigError, InputError

__all__ = ["ScanItem", "subject_label", "modality_from_name", "find_scans"]

# file names of a plain folder that are masks or outputs, not scans
_NOT_A_SCAN = re.compile(r"(^|[_-])(mask|brainmask|brain[_-]mask|cmb|cmbs|dseg|probseg|seg|label|labels)$",
                         re.IGNORECASE)
log = logging.getLogger(__name__)


def _strip(name: str) -> str:
    for suffix in NIFTI_SUFFIXES[::-1]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def subject_label(path: Path) -> str:
    """BIDS label of ``sub-XXX[_ses-YY]_...`` (``"XXX"``, ``"XXX_ses-YY"``), else the file stem made alphanumeric."""
    stem = _strip(Path(path).name)
    match = re.match(r"sub-([A-Za-z0-9]+)(_ses-[A-Za-z0-9]+)?", stem)
    if match:
        return match.group(1) + (match.group(2) or "")
    label = re.sub(r"[^A-Za-z0-9]", "", stem)
    return label or "scan"


def modality_from_name(path: Path) -> str:
    """``"swi"`` for a BIDS ``_swi`` suffix, else ``"gre"``."""
    return "swi" if _strip(Path(path).name).lower().endswith("_swi") else "gre"


@dataclass(frozen=True)
class ScanItem:
    """One scan to detect on, with its label, modality, brain mask and output stem."""

    image: Path
    subject_id: str
    modality: str
    brain_mask: Path | None
    prefix: Path  # output stem relative to OUT


def _bids_prefix(sid: str) -> Path:
    return Path(f"sub-{sid}") / "anat" / f"sub-{sid}"


def _mask_of(path: Path, pattern: str) -> Path:
    """The brain mask ``--brain-mask-pattern`` names for the scan ``path``, beside it."""
    return path.parent / pattern.format(stem=_strip(path.name), subject=subject_label(path))


def _file_item(path: Path, modality: str | None, pattern: str | None) -> ScanItem:
    stem, sid = _strip(path.name), subject_label(path)
    mask = None
    if pattern:
        mask = _mask_of(path, pattern)
        if not mask.is_file():
            raise InputError(f"--brain-mask-pattern {pattern!r}: {mask} does not exist for scan {path.name}")
    prefix = _bids_prefix(sid) if stem.startswith("sub-") else Path(stem) / stem
    return ScanItem(path, sid, modality or modality_from_name(path), mask, prefix)


def find_scans(scan: Path, modality: str | None, pattern: str | None) -> list[ScanItem]:
    """The scans of a file, a dataset root (``sub-*`` folders) or a plain folder of NIfTI files."""
    if scan.is_file() or not scan.exists():
        load_scan(scan)  # validates early: missing, not NIfTI, corrupt, not 3D ...
        return [_file_item(scan, modality, pattern)]
    if any(p.is_dir() for p in scan.glob("sub-*")):
        if pattern:
            raise ConfigError("--brain-mask-pattern applies to a plain folder of scans; a dataset root uses "
                              "its own brain masks")
        items = [ScanItem(s.image_path, s.subject_id, modality or s.modality, s.brain_mask_path,
                       _bids_prefix(s.subject_id)) for s in load_subjects(scan)]
    else:
        paths = sorted(p for p in scan.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
        masks = {_mask_of(p, pattern) for p in paths} if pattern else set()
        skipped = [p for p in paths if p in masks or _NOT_A_SCAN.search(_strip(p.name)) or "_part-phase" in p.name]
        if skipped:  # a phase image is read beside its magnitude (cmbstudy.data.io.phase_beside), not on its own
            log.info("%d file(s) in %s are masks, phase images or outputs, not scans: %s", len(skipped), scan,
                     ", ".join(p.name for p in skipped[:5]))
        paths = [p for p in paths if p not in skipped]
        if not paths:
            raise InputError(f"folder {scan} holds no .nii or .nii.gz scan: give a scan, a folder of scans "
                             "or a dataset root")
        items = [_file_item(p, modality, pattern) for p in paths]
    seen: dict[str, Path] = {}
    for item in items:
        if item.subject_id in seen:
            raise InputError(f"{seen[item.subject_id].name} and {item.image.name} in {scan} both map to "
                             f"{item.subject_id}: rename one")
        seen[item.subject_id] = item.image
    return items
