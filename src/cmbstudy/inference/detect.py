"""Burden assessment on a user's scan: ``cmbstudy detect SCAN --out DIR``.

One T2*-GRE or SWI scan (or a folder of them) goes through the training
run's preprocessing (:func:`cmbstudy.preprocessing.preprocess_image`), the
network on every axial slice with its two neighbours (Cho et al. 2025,
Sec. 2.2), the restoration of the probability map onto the input grid and
affine, a threshold and 3D connected components (Sec. 2.4). Each component is
one detected CMB; the count gives the ARIA-H category (0, 1-4, 5-9, >=10).

Outputs follow the BIDS-derivatives layout: ``OUT/dataset_description.json``
and per scan ``OUT/sub-<id>/anat/`` with the instance mask (``_desc-cmb_dseg``,
int16), the probability map (``_desc-cmb_probseg``, float32), the lesion table,
a JSON summary and a PNG report page (drawn by the ``report`` callable, e.g.
:func:`cmbstudy.figures.report.plot_detection_report`, which the command line
passes: this module computes and writes, it draws nothing itself). The folder
is written atomically (:func:`cmbstudy.data.io.atomic_output_dir`).

A user's scan has no brain mask: when the model's profile extracts the brain
from the dataset's mask, detection uses Otsu thresholding instead
(``"threshold"``) unless ``brain_mask`` is given; the summary states which.
No atlas registration is done, so lesion locations are ``"unknown"``. Models
are resolved by :mod:`cmbstudy.inference.model_store`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import __version__
from ..config import PreprocessConfig
from ..data.aria_h import aria_h_category
from ..data.datasets import load_subjects
from ..data.io import (
    NIFTI_SUFFIXES,
    atomic_output_dir,
    check_output_dir,
    load_image,
    load_mask,
    save_nifti,
    write_json,
)
from ..device import resolve_device
from ..errors import ConfigError, InputError
from ..evaluation.lesions import (
    Lesions,
    equivalent_diameter_mm,
    voxel_volume_mm3,
)
from ..preprocessing.preprocess import preprocess_image
from .model_store import DetectionModel, load_detection_model
from .predict import detect_volume, lesion_table
from .sliding_window import predict_volume

__all__ = [
    "MODALITIES",
    "ScanResult",
    "DetectionSummary",
    "subject_label",
    "modality_from_name",
    "detect_scan",
    "detect_path",
    "ReportWriter",
]

#: Draws the report page of one scan: ``(image, labels, affine, header, path) -> path``, the
#: signature of :func:`cmbstudy.figures.report.plot_detection_report`.
ReportWriter = Callable[[np.ndarray, np.ndarray, np.ndarray, Mapping[str, Any], Path], Path]

MODALITIES = ("gre", "swi")
LOCATION_NOTE = "unknown: no atlas registration is done, so lesion locations are not assigned"


@dataclass(frozen=True)
class ScanResult:
    """What :func:`detect_scan` found and wrote for one scan."""

    subject_id: str  # BIDS label without "sub-"
    scan: Path  # input image
    cmb_count: int  # detected CMBs (3D components)
    aria_h_category: str  # "0", "1-4", "5-9" or ">=10"
    seconds: Mapping[str, float]  # preprocessing, model, postprocessing, total (s)
    files: Mapping[str, Path] = field(default_factory=dict)  # kind -> path written


@dataclass(frozen=True)
class DetectionSummary:
    """What :func:`detect_path` wrote (printed by ``cmbstudy detect``)."""

    out: Path  # derivatives folder
    model: str  # registry name of the network
    model_source: str  # run folder, checkpoint or packaged model
    threshold: float  # probability threshold
    device: str  # torch device
    scans: tuple[ScanResult, ...]  # one per scan, in input order
    intended_use: str  # research-use statement

    def __str__(self) -> str:
        lines = [f"detected CMBs in {len(self.scans)} scan(s) -> {self.out}",
                 f"  model: {self.model} ({self.model_source}), threshold {self.threshold:g}, {self.device}"]
        for r in self.scans:
            lines.append(
                f"  sub-{r.subject_id}: {r.cmb_count} CMB(s), ARIA-H category {r.aria_h_category} "
                f"({r.scan.name}, {r.seconds['total']:.1f} s)"
            )
        lines.append(f"  {self.intended_use}")
        return "\n".join(lines)


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _brain_extraction(cfg: PreprocessConfig, image: nib.Nifti1Image, brain_mask: Path | None
                      ) -> tuple[PreprocessConfig, nib.Nifti1Image | None, str]:
    """The preprocessing settings, brain mask and the sentence of ``summary.json`` on the brain mask used.

    A given mask wins; a profile trained with dataset masks falls back to Otsu thresholding.
    """
    if brain_mask is not None:
        brain_img = load_mask(brain_mask, reference=image, what="brain mask")
        return dataclasses.replace(cfg, brain_extraction="mask"), brain_img, f"given: {Path(brain_mask).name}"
    if cfg.brain_extraction == "mask":
        return (dataclasses.replace(cfg, brain_extraction="threshold"), None,
                "threshold: Otsu brain extraction (the model was trained with dataset brain masks; "
                "no --brain-mask was given)")
    return cfg, None, f"{cfg.brain_extraction}: the model profile's brain extraction"


def _detection_table(lesions: Lesions, affine: np.ndarray) -> pd.DataFrame:
    """The lesion table of ``predict`` with each lesion's equivalent diameter and its location."""
    table = lesion_table(lesions, affine)
    table.insert(table.columns.get_loc("volume_mm3") + 1, "equivalent_diameter_mm",
                 equivalent_diameter_mm(table["n_voxels"].to_numpy(), voxel_volume_mm3(affine)))
    table["location"] = "unknown"
    return table


def _write_outputs(stem: Path, image: nib.Nifti1Image, lesions: Lesions, prob: np.ndarray, table: pd.DataFrame,
                   header: Mapping[str, Any], report: ReportWriter | None) -> dict[str, Path]:
    """The instance and probability NIfTIs, the lesion table and the report page of one scan: kind -> path.

    ``summary`` is the path of the JSON summary, written last by the caller.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(image.affine, dtype=float)
    files = {
        "dseg": save_nifti(lesions.labels, affine, f"{stem}_desc-cmb_dseg.nii.gz", np.int16),
        "probseg": save_nifti(prob, affine, f"{stem}_desc-cmb_probseg.nii.gz", np.float32),
        "lesions": Path(f"{stem}_lesions.tsv"),
        "summary": Path(f"{stem}_summary.json"),
    }
    table.to_csv(files["lesions"], sep="\t", index=False, float_format="%.4f")
    if report is not None:
        files["report"] = report(np.asarray(image.dataobj, dtype=np.float32), lesions.labels, affine, header,
                                 Path(f"{stem}_report.png"))
    return files


def detect_scan(
    scan: Path,
    model: DetectionModel,
    out: Path,
    subject_id: str | None = None,
    modality: str | None = None,
    threshold: float | None = None,
    brain_mask: Path | None = None,
    device: str | torch.device = "auto",
    report: ReportWriter | None = None,
) -> ScanResult:
    """Detect CMBs in one scan and write its files into ``out/sub-<id>/anat/``.

    ``out`` is a folder being written (:func:`detect_path` passes its atomic
    temporary folder). Outputs lie on the input grid with the input affine.

    Args:
        scan: 3D T2*-GRE or SWI magnitude image (.nii / .nii.gz).
        model: from :func:`load_detection_model`.
        subject_id: label of the outputs (default :func:`subject_label`).
        modality: "gre" or "swi" (default :func:`modality_from_name`); recorded only.
        threshold: probability threshold (default the model's calibrated operating point).
        brain_mask: binary brain mask on the scan's grid (default: brain extraction).
        device: "auto", "cpu" or "cuda".
        report: draws the report page (``_report.png``); None writes no page.

    Raises:
        InputError: an unreadable or invalid scan or brain mask (see :mod:`cmbstudy.data.io`).
        ConfigError: bad modality, threshold or device.
    """
    scan = Path(scan)
    sid = subject_id or subject_label(scan)
    modality = modality or modality_from_name(scan)
    if modality not in MODALITIES:
        raise ConfigError(f"--modality {modality!r}: use gre or swi")
    profile = model.profile
    point = model.point_for(threshold)
    dev = resolve_device(device)
    start = time.perf_counter()
    image = load_image(scan, what="scan")
    cfg, brain_img, brain_source = _brain_extraction(profile.preprocess, image, brain_mask)
    volume = preprocess_image(image, cfg, brain_mask=brain_img, subject_id=sid)
    prep_done = time.perf_counter()
    prob = predict_volume(model.network, volume, profile.train.val_batch_size, dev, profile.train.patch_size)
    model_done = time.perf_counter()
    prob_input, lesions = detect_volume(prob, volume, point, profile.evaluation.connectivity)
    affine = np.asarray(image.affine, dtype=float)
    table = _detection_table(lesions, affine)
    post_done = time.perf_counter()
    if lesions.n > np.iinfo(np.int16).max:
        raise InputError(f"scan {scan}: {lesions.n} components exceed int16 labels: raise --threshold")
    count, category = int(lesions.n), aria_h_category(int(lesions.n))
    header = {
        "count": count, "category": category, "scan": scan.name, "model": f"{model.name} ({model.source})",
        "threshold": point.threshold, "intended_use": model.intended_use, "modality": modality,
    }
    files = _write_outputs(Path(out) / f"sub-{sid}" / "anat" / f"sub-{sid}", image, lesions, prob_input, table,
                           header, report)
    seconds = {"preprocessing": prep_done - start, "model": model_done - prep_done,
               "postprocessing": post_done - model_done, "total": time.perf_counter() - start}
    summary = {
        "subject_id": sid, "scan": scan.name, "input_sha256": _sha256(scan), "modality": modality,
        "cmb_count": count, "aria_h_category": category, "threshold": point.threshold,
        "min_voxels": point.min_voxels, "operating_point": point.to_json(),
        "brain_rule": "components whose centroid lies outside the brain mask are dropped",
        "connectivity": profile.evaluation.connectivity,
        "model": {"name": model.name, "source": model.source, "profile": profile.name,
                  "provenance": dict(model.provenance)},
        "cmbstudy_version": __version__, "device": str(dev), "seconds": seconds,
        "brain_mask_source": brain_source, "lesion_location": LOCATION_NOTE,
        "outputs": {kind: path.name for kind, path in files.items()},
        "intended_use": model.intended_use,
    }
    write_json(files["summary"], summary)
    return ScanResult(sid, scan, count, category, seconds, files)


def _scans_of(scan: Path, modality: str | None) -> list[tuple[Path, str, str, Path | None]]:
    """(image, subject id, modality, dataset brain mask) for a file, a BIDS-like root or a folder."""
    if scan.is_file() or not scan.exists():
        load_image(scan, what="scan")  # validates early: missing, not NIfTI, corrupt, not 3D ...
        return [(scan, subject_label(scan), modality or modality_from_name(scan), None)]
    if any(scan.glob("sub-*")):
        subjects = load_subjects(scan)
        items = [(s.image_path, s.subject_id, modality or s.modality, s.brain_mask_path) for s in subjects]
    else:
        paths = sorted(p for p in scan.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
        if not paths:
            raise InputError(f"folder {scan} holds no .nii or .nii.gz image: give a scan or a dataset root")
        items = [(p, subject_label(p), modality or modality_from_name(p), None) for p in paths]
    seen: dict[str, Path] = {}
    for path, sid, _, _ in items:
        if sid in seen:
            raise InputError(f"{seen[sid].name} and {path.name} in {scan} both map to sub-{sid}: rename one")
        seen[sid] = path
    return items


def detect_path(
    scan: str | Path,
    out: str | Path,
    model: str | Path | DetectionModel | None = None,
    modality: str | None = None,
    threshold: float | None = None,
    brain_mask: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    report: ReportWriter | None = None,
) -> DetectionSummary:
    """Detect CMBs in a scan, a BIDS-like dataset root, or a folder of NIfTI scans.

    Dataset roots (any layout :func:`cmbstudy.data.datasets.load_subjects` reads) use
    each subject's brain mask when the dataset has one. The whole ``out`` is
    written atomically: an error leaves nothing behind.

    Args:
        scan: image file or folder.
        out: derivatives folder to create (must be absent or empty unless ``overwrite``).
        model: run folder, ``.pt`` file, a loaded :class:`DetectionModel`, or None (packaged model).
        modality: override for every scan ("gre" or "swi").
        threshold: probability threshold (default: the model's calibrated operating point).
        brain_mask: brain mask of a single scan (not allowed with a folder).
        device: "auto", "cpu" or "cuda".
        overwrite: replace an existing non-empty ``out``.
        progress: tqdm progress bar over scans.
        report: draws each scan's report page (the command line passes
            :func:`cmbstudy.figures.report.plot_detection_report`); None writes no page.

    Raises:
        InputError / ConfigError / OutputError: as :func:`detect_scan`, and for a missing
            input, no packaged model, or an ``out`` that holds results.
    """
    scan, out = Path(scan).expanduser(), Path(out).expanduser()
    if modality is not None and modality not in MODALITIES:
        raise ConfigError(f"--modality {modality!r}: use gre or swi")
    check_output_dir(out, overwrite)
    items = _scans_of(scan, modality)
    if brain_mask is not None and scan.is_dir():
        raise ConfigError("--brain-mask applies to a single scan; a dataset root uses its own brain masks")
    loaded = model if isinstance(model, DetectionModel) else load_detection_model(model)
    point = loaded.point_for(threshold)
    dev = resolve_device(device)
    results = []
    with atomic_output_dir(out, overwrite) as tmp:
        description = {
            "Name": "cmbstudy CMB detection", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "cmbstudy", "Version": __version__,
                             "Description": f"cmbstudy detect with {loaded.name} ({loaded.source})"}],
        }
        (tmp / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
        for path, sid, mod, dataset_brain in tqdm(items, desc="detect", unit="scan", disable=not progress):
            results.append(detect_scan(path, loaded, tmp, subject_id=sid, modality=mod, threshold=threshold,
                                       brain_mask=Path(brain_mask) if brain_mask else dataset_brain, device=dev,
                                       report=report))
    results = [dataclasses.replace(r, files={k: out / p.relative_to(tmp) for k, p in r.files.items()})
               for r in results]
    return DetectionSummary(out, loaded.name, loaded.source, point.threshold, str(dev), tuple(results),
                            loaded.intended_use)
