"""Subjects of a dataset root: synthetic cohort, generic BIDS-like sets and VALDO 2021 Task 2.

Three layouts are read (they are declared in ``data_manifest.yaml``):

* ``synthetic`` -- the cohort written by ``cmbstudy synth``: BIDS-like, with a
  ``dataset_description.json`` whose ``cmbstudy.dataset`` is ``"synthetic"``.
* ``bids`` -- any BIDS-like set: ``sub-<id>/anat/`` or ``sub-<id>/ses-<s>/anat/``
  holding one magnitude image with suffix ``T2starw``, ``swi``, ``T2S`` or
  ``GRE`` (the modality follows the suffix: ``swi`` -> "swi", else "gre"), and
  optionally ``<prefix>_label-CMB_mask.nii.gz`` and ``<prefix>_label-brain_mask.nii.gz``.
* ``valdo2021-cmb`` -- the MICCAI 2021 VALDO challenge, Task 2:
  ``sub-<id>/sub-<id>_space-T2S_desc-masked_T2S.nii.gz`` with the CMB mask
  ``sub-<id>/sub-<id>_space-T2S_CMB.nii.gz`` (skull-stripped T2*-GRE).

Only file discovery happens here; reading and validating volumes is
:mod:`cmbstudy.data.io`, orientation and resampling :mod:`cmbstudy.preprocessing`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import pandas as pd

from ..errors import InputError
from .io import phase_beside

__all__ = [
    "LAYOUTS",
    "IMAGE_SUFFIXES",
    "CMB_MASK_ENTITY",
    "BRAIN_MASK_ENTITY",
    "VALDO_IMAGE",
    "VALDO_MASK",
    "VALDO_SITES",
    "SMALL_DIAMETER_MM",
    "Subject",
    "load_subjects",
    "detect_layout",
    "load_participants",
    "describe_dataset",
    "aria_h_strata",
    "load_study_subjects",
]

LAYOUTS: tuple[str, ...] = ("synthetic", "bids", "valdo2021-cmb")
_LAYOUT_ALIASES = {"bids-like": "bids"}

# Image suffix -> modality, in order of preference when a folder holds several.
IMAGE_SUFFIXES: Mapping[str, str] = MappingProxyType(
    {"T2starw": "gre", "swi": "swi", "T2S": "gre", "GRE": "gre"}
)
_NIFTI = (".nii.gz", ".nii")
CMB_MASK_ENTITY = "_label-CMB_mask"
BRAIN_MASK_ENTITY = "_label-brain_mask"
MIMIC_ENTITY = "_label-mimic_dseg"
#: Largest diameter (mm) of a small CMB, the bound of the paper's Table 4: the synthetic cohort's
#: ``lesions.tsv`` flags its lesions ``small`` by it, and the evaluation's small-lesion subset uses it.
SMALL_DIAMETER_MM = 3.0

# VALDO 2021 Task 2 file names, ``{id}`` being the full BIDS label such as "101".
VALDO_IMAGE = "sub-{id}_space-T2S_desc-masked_T2S.nii.gz"
VALDO_MASK = "sub-{id}_space-T2S_CMB.nii.gz"
# Cohort by the first digit of the VALDO subject label (1xx SABRE, 2xx RSS, 3xx ALFA).
VALDO_SITES: Mapping[str, str] = MappingProxyType({"1": "SABRE", "2": "RSS", "3": "ALFA"})


@dataclass(frozen=True)
class Subject:
    """One scan of a dataset, with the paths of its files (nothing is read yet)."""

    subject_id: str  # BIDS label without "sub-", e.g. "001" ("001_ses-2" for a session)
    image_path: Path  # magnitude image (T2*-GRE or SWI)
    mask_path: Path | None  # binary CMB mask; None when the dataset has no reference for it
    modality: str  # "gre" | "swi"
    site: str  # acquisition site or cohort; "unknown" when not given
    brain_mask_path: Path | None  # binary brain mask, None when absent
    extra_paths: Mapping[str, Path] = field(default_factory=dict)  # "phase", "mimic", "lesions"

    def __reduce__(self):
        # a read-only mapping (MappingProxyType) cannot be pickled: it travels to worker processes as a dict
        return _rebuild_subject, (self.subject_id, self.image_path, self.mask_path, self.modality, self.site,
                                  self.brain_mask_path, dict(self.extra_paths))


def _rebuild_subject(subject_id, image_path, mask_path, modality, site, brain_mask_path, extra_paths) -> Subject:
    return Subject(subject_id, image_path, mask_path, modality, site, brain_mask_path, MappingProxyType(extra_paths))


def _strip_nifti(name: str) -> str:
    for ext in _NIFTI:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _existing(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _subject_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("sub-*") if p.is_dir())


def _read_description(root: Path) -> dict:
    path = root / "dataset_description.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): fix or remove it") from exc
    return data if isinstance(data, dict) else {}


def _bids_image(anat: Path, prefix: str) -> tuple[Path, str] | None:
    """The preferred magnitude image in ``anat`` and its modality (phase images excluded)."""
    for suffix, modality in IMAGE_SUFFIXES.items():
        found = sorted(
            p for ext in _NIFTI for p in anat.glob(f"{prefix}*_{suffix}{ext}")
            if "_part-phase" not in p.name
        )
        if found:
            return found[0], modality
    return None


def _anat_dirs(subject_dir: Path) -> list[tuple[str, Path]]:
    """(session label or "", anat folder) pairs of one ``sub-*`` folder."""
    pairs = [("", subject_dir / "anat")] if (subject_dir / "anat").is_dir() else []
    for ses in sorted(subject_dir.glob("ses-*")):
        if (ses / "anat").is_dir():
            pairs.append((ses.name[len("ses-"):], ses / "anat"))
    return pairs


def _expected_mask_path(image_path: Path, layout: str) -> Path:
    """Where the CMB mask of ``image_path`` is expected, whether or not it exists."""
    if layout == "valdo2021-cmb":
        return image_path.with_name(image_path.name.replace("_desc-masked_T2S", "_CMB"))
    stem = _strip_nifti(image_path.name)
    base = stem.rsplit("_", 1)[0]  # drop the suffix (T2starw, swi, ...)
    return image_path.with_name(f"{base}{CMB_MASK_ENTITY}.nii.gz")


def _bids_subjects(root: Path, participants: pd.DataFrame) -> list[Subject]:
    subjects = []
    for subject_dir in _subject_dirs(root):
        label = subject_dir.name[len("sub-"):]
        for session, anat in _anat_dirs(subject_dir):
            prefix = f"sub-{label}" + (f"_ses-{session}" if session else "")
            found = _bids_image(anat, prefix)
            if found is None:
                continue
            image, modality = found
            stem = _strip_nifti(image.name)
            base, suffix = stem.rsplit("_", 1)
            extras = {
                "phase": phase_beside(image),
                "mimic": _existing(*(anat / f"{base}{MIMIC_ENTITY}{e}" for e in _NIFTI)),
                "lesions": _existing(anat / f"{base}_lesions.tsv"),
            }
            site = "unknown"
            if label in participants.index and "site" in participants.columns:
                value = participants.loc[label, "site"]
                site = str(value) if pd.notna(value) and str(value) else "unknown"
            subjects.append(
                Subject(
                    subject_id=label + (f"_ses-{session}" if session else ""),
                    image_path=image,
                    mask_path=_existing(*(anat / f"{base}{CMB_MASK_ENTITY}{e}" for e in _NIFTI)),
                    modality=modality,
                    site=site,
                    brain_mask_path=_existing(*(anat / f"{base}{BRAIN_MASK_ENTITY}{e}" for e in _NIFTI)),
                    extra_paths=MappingProxyType({k: v for k, v in extras.items() if v is not None}),
                )
            )
    return subjects


def _valdo_subjects(root: Path) -> list[Subject]:
    subjects = []
    for subject_dir in _subject_dirs(root):
        label = subject_dir.name[len("sub-"):]
        image = subject_dir / VALDO_IMAGE.format(id=label)
        if not image.is_file():
            continue
        mask = subject_dir / VALDO_MASK.format(id=label)
        subjects.append(
            Subject(
                subject_id=label,
                image_path=image,
                mask_path=mask if mask.is_file() else None,
                modality="gre",
                site=VALDO_SITES.get(label[:1], "unknown"),
                brain_mask_path=None,
                extra_paths=MappingProxyType({}),
            )
        )
    return subjects


def detect_layout(root: Path) -> str:
    """``"synthetic"``, ``"bids"`` or ``"valdo2021-cmb"`` from the files under ``root``.

    Raises:
        InputError: ``root`` is missing, not a folder, or matches no known layout.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"dataset root {root} does not exist: check the path or $CMBSTUDY_DATA")
    if not root.is_dir():
        raise InputError(f"dataset root {root} is not a folder: give the folder holding sub-*/")
    subject_dirs = _subject_dirs(root)
    if not subject_dirs:
        raise InputError(
            f"dataset root {root} holds no sub-* folders: give a BIDS-like or VALDO root "
            "(or make one with `cmbstudy synth --out ROOT`)"
        )
    for subject_dir in subject_dirs:
        label = subject_dir.name[len("sub-"):]
        if (subject_dir / VALDO_IMAGE.format(id=label)).is_file():
            return "valdo2021-cmb"
    for subject_dir in subject_dirs:
        label = subject_dir.name[len("sub-"):]
        for session, anat in _anat_dirs(subject_dir):
            prefix = f"sub-{label}" + (f"_ses-{session}" if session else "")
            if _bids_image(anat, prefix) is not None:
                info = _read_description(root).get("cmbstudy", {})
                if isinstance(info, dict) and info.get("dataset") == "synthetic":
                    return "synthetic"
                return "bids"
    raise InputError(
        f"dataset root {root}: no sub-*/[ses-*/]anat/*_{{{','.join(IMAGE_SUFFIXES)}}}.nii[.gz] "
        f"and no VALDO sub-*/{VALDO_IMAGE.format(id='*')} found: unknown layout "
        "(see data_manifest.yaml for the expected file names)"
    )


def _normalise_layout(dataset: str) -> str:
    layout = _LAYOUT_ALIASES.get(dataset, dataset)
    if layout not in LAYOUTS:
        raise InputError(
            f"unknown dataset {dataset!r}: use one of synthetic, bids-like, valdo2021-cmb "
            "(or leave it out to detect the layout)"
        )
    return layout


def load_participants(root: Path) -> pd.DataFrame:
    """``participants.tsv`` indexed by participant id without ``sub-``; empty frame if absent.

    Raises:
        InputError: the file exists but cannot be parsed or has no ``participant_id`` column.
    """
    path = Path(root) / "participants.tsv"
    if not path.is_file():
        return pd.DataFrame(index=pd.Index([], name="participant_id", dtype=str))
    try:
        frame = pd.read_csv(path, sep="\t", dtype={"participant_id": str}, na_values=["n/a"])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path} cannot be read as a tab-separated table ({exc}): fix it") from exc
    if "participant_id" not in frame.columns:
        raise InputError(
            f"{path} has no participant_id column (columns: {list(frame.columns)}): "
            "add one holding sub-<label>"
        )
    frame["participant_id"] = frame["participant_id"].astype(str).map(
        lambda v: re.sub(r"^sub-", "", v.strip())
    )
    if frame["participant_id"].duplicated().any():
        dups = sorted(frame.loc[frame["participant_id"].duplicated(), "participant_id"])
        raise InputError(f"{path} lists participants more than once: {dups[:5]}; remove duplicates")
    return frame.set_index("participant_id")


def load_subjects(root: Path, dataset: str | None = None) -> list[Subject]:
    """Every subject under ``root``, sorted by id.

    Args:
        root: dataset root folder.
        dataset: ``"synthetic"``, ``"bids"`` (or ``"bids-like"``), ``"valdo2021-cmb"``;
            None detects the layout with :func:`detect_layout`.

    Raises:
        InputError: missing or empty root, unknown layout or dataset name, no subject found.
    """
    root = Path(root)
    layout = detect_layout(root) if dataset is None else _normalise_layout(dataset)
    if dataset is not None and not root.is_dir():
        detect_layout(root)  # raises the missing-root message
    if layout == "valdo2021-cmb":
        subjects = _valdo_subjects(root)
    else:
        subjects = _bids_subjects(root, load_participants(root))
    if not subjects:
        raise InputError(
            f"dataset root {root}: no subject with an image in the {layout!r} layout: "
            "check --dataset and the file names in data_manifest.yaml"
        )
    return sorted(subjects, key=lambda s: s.subject_id)


def describe_dataset(root: Path) -> dict:
    """Provenance of a dataset root: its path, layout, name and generator.

    ``name`` and ``generated_by`` come from ``dataset_description.json`` when
    present; for the synthetic cohort, ``cmbstudy`` holds its profile, seed and
    generator settings. Written beside every training run (``RUN/dataset.json``).

    Raises:
        InputError: ``root`` is not a dataset (see :func:`detect_layout`).
    """
    root = Path(root)
    info: dict = {"data_root": str(root.resolve()), "layout": detect_layout(root)}
    description = root / "dataset_description.json"
    if description.is_file():
        try:
            desc = json.loads(description.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{description} is not valid JSON ({exc}): fix or remove it") from exc
        info["name"] = desc.get("Name")
        info["generated_by"] = desc.get("GeneratedBy")
        if "cmbstudy" in desc:
            info["cmbstudy"] = desc["cmbstudy"]
    return info


def aria_h_strata(root: Path, subject_ids: Sequence[str]) -> dict[str, str] | None:
    """Subject id -> ARIA-H category from ``participants.tsv``, or None when some subject has none.

    The strata of the cross-validation folds and of a real dataset's test split.
    """
    frame = load_participants(Path(root))
    if "aria_h_category" not in frame.columns or not set(subject_ids) <= set(frame.index):
        return None
    return {s: str(frame.loc[s, "aria_h_category"]) for s in subject_ids}


def load_study_subjects(data_root: Path, test_root: Path) -> list[Subject]:
    """The subjects of the training dataset and, when it is another folder, of the test set.

    Subjects of the two roots share no label (the synthetic test cohort's are ``sub-test001``...).

    Raises:
        InputError: as :func:`load_subjects`, or a label found in both roots.
    """
    subjects = load_subjects(Path(data_root))
    if Path(test_root).resolve() == Path(data_root).resolve():
        return subjects
    test = load_subjects(Path(test_root))
    shared = sorted({s.subject_id for s in subjects} & {s.subject_id for s in test})
    if shared:
        raise InputError(f"subjects {shared[:5]} are in both {data_root} and {test_root}: a test set must hold "
                         "other subjects (and other labels) than the training data")
    return subjects + test
