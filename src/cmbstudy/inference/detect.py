"""Burden assessment on a user's scans: ``cmbstudy detect SCAN --out DIR``.

``SCAN`` is one T2*-GRE or SWI file, a plain folder of them, or a dataset root
(any layout :func:`cmbstudy.data.datasets.load_subjects` reads: BIDS-like,
VALDO). Each scan goes through the model's preprocessing
(:func:`cmbstudy.preprocessing.preprocess_image`), the network on every axial
slice with its two neighbours (Cho et al. 2026, Sec. 2.2), the restoration of
the probability map onto the input grid, and the model's lesion rule: its second look
(with the phase image beside the scan, where there is one), or one stage. The count of
CMBs gives the ARIA-H category (0, 1-4, 5-9, >=10).

Brain: ``brain_extraction`` (``--brain-extraction``, default ``auto``) is
resolved per scan by :func:`cmbstudy.preprocessing.brain.resolve_brain_extraction`:
a given brain mask (``--brain-mask`` for one scan, the dataset's masks, or
``--brain-mask-pattern`` for a folder) wins, a skull-stripped image is used as
it is, anything else is brain-extracted; ``summary.json`` and the log say
which. NaN voxels outside the brain are set to 0 with a warning; inside it,
they are an error.

Outputs follow the BIDS-derivatives layout: ``OUT/dataset_description.json``,
``OUT/log.txt`` (every warning and choice), and per scan the instance mask
(``_desc-cmb_dseg``, int16), the probability map (``_desc-cmb_probseg``,
float32), the lesion table (with each CMB's MARS location when ``locate``),
a JSON summary, and the report (drawn by the ``report`` callable, e.g.
:func:`cmbstudy.figures.report.write_detection_reports`: this module computes
and writes, it draws nothing). Scans of a dataset root and BIDS-named files
go to ``sub-<id>/anat/sub-<id>_*``, other files to ``<stem>/<stem>_*``. The
folder is written atomically (:func:`cmbstudy.data.io.atomic_output_dir`), at
the umask's modes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import __version__
from ..data.aria_h import aria_h_category
from ..data.io import (atomic_output_dir, check_output_dir, load_mask, load_phase, load_scan, phase_beside, save_nifti,
                       write_json)
from ..device import resolve_device
from ..errors import ConfigError, InputError
from ..data.prediction_folder import DSEG_SUFFIX, LESIONS_SUFFIX, PROBSEG_SUFFIX, SUMMARY_SUFFIX
from ..evaluation.lesions import Lesions, equivalent_diameter_mm, voxel_volume_mm3
from ..evaluation.operating_point import BRAIN_RULE, OperatingPoint
from ..preprocessing.brain import resolve_brain_extraction
from ..preprocessing.preprocess import preprocess_image
from .location import LesionLocations
from .model_store import DetectionModel, load_detection_model
from .pipeline import VolumeDetection, describe_rule, detect_preprocessed, map_rule
from .predict import lesion_table
from .scan_inputs import find_scans, modality_from_name, subject_label

__all__ = [
    "MODALITIES",
    "ScanResult",
    "ScanDetection",
    "DetectionSummary",
    "find_cmbs",
    "subject_label",
    "modality_from_name",
    "detect_scan",
    "detect_path",
    "ReportWriter",
    "Locator",
]

#: Draws the reports of one scan: ``(image, labels, affine, header, lesion table, stem) -> {kind: path}``,
#: the signature of :func:`cmbstudy.figures.report.write_detection_reports`.
ReportWriter = Callable[[np.ndarray, np.ndarray, np.ndarray, Mapping[str, Any], pd.DataFrame, Path],
                        Mapping[str, Path]]
#: Assigns each lesion a location: ``(image, centroids (n, 3) voxels, brain mask) -> LesionLocations``,
#: the signature of :func:`cmbstudy.inference.location.assign_locations`.
Locator = Callable[[nib.Nifti1Image, np.ndarray, np.ndarray | None], LesionLocations]

MODALITIES = ("gre", "swi")
LOCATION_NOTE = "unknown: no atlas registration was asked for (--no-location)"
NOTHING_TO_LOCATE = "no CMB detected: no atlas registration was needed"
LOG_FILE = "log.txt"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanResult:
    """What :func:`detect_scan` found and wrote for one scan."""

    subject_id: str  # BIDS label without "sub-", or the file stem made alphanumeric
    scan: Path  # input image
    cmb_count: int  # detected CMBs (3D components)
    aria_h_category: str  # "0", "1-4", "5-9" or ">=10"
    seconds: Mapping[str, float]  # preprocessing, model, postprocessing, total (s)
    files: Mapping[str, Path] = field(default_factory=dict)  # kind -> path written
    brain_extraction: str = ""  # what was used as the brain, and why


@dataclass(frozen=True)
class DetectionSummary:
    """What :func:`detect_path` wrote (printed by ``cmbstudy detect``)."""

    out: Path  # derivatives folder
    model: str  # registry name of the network
    model_source: str  # run folder, checkpoint or packaged model
    device: str  # torch device
    scans: tuple[ScanResult, ...]  # one per scan, in input order
    intended_use: str  # research-use statement
    method: str = ""  # one stage or two (:func:`~cmbstudy.inference.pipeline.describe_rule`)

    def __str__(self) -> str:
        lines = [f"detected CMBs in {len(self.scans)} scan(s) -> {self.out}",
                 f"  model: {self.model} ({self.model_source}), {self.device}",
                 f"  method: {self.method}"]
        for r in self.scans:
            lines.append(
                f"  {r.subject_id}: {r.cmb_count} CMB(s), ARIA-H category {r.aria_h_category} "
                f"({r.scan.name}, {r.seconds['total']:.1f} s; brain: {r.brain_extraction})"
            )
        lines.append(f"  {self.intended_use}")
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Collect(logging.Handler):
    """Keeps the messages of the ``cmbstudy`` logger while a scan is processed."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def _collecting() -> Iterator[_Collect]:
    handler, root = _Collect(), logging.getLogger("cmbstudy")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(min(previous or logging.WARNING, logging.INFO))
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def _detection_table(lesions: Lesions, affine: np.ndarray, locations: Sequence[str] | None) -> pd.DataFrame:
    """The lesion table of ``predict`` with each lesion's equivalent diameter and its location."""
    table = lesion_table(lesions, affine)
    table.insert(table.columns.get_loc("volume_mm3") + 1, "equivalent_diameter_mm",
                 equivalent_diameter_mm(table["n_voxels"].to_numpy(), voxel_volume_mm3(affine)))
    table["location"] = list(locations) if locations is not None else "unknown"
    return table


@dataclass(frozen=True)
class ScanDetection:
    """One scan through the detector (:func:`find_cmbs`), nothing written."""

    image: nib.Nifti1Image  # the scan as read
    lesions: Lesions  # the CMBs found, on the scan's grid
    detection_map: np.ndarray  # what ``_desc-cmb_probseg`` holds (:func:`~cmbstudy.inference.pipeline.detection_map`)
    result: VolumeDetection  # the network's probability, the brain, the lesion rule's detections
    brain_method: str  # the brain extraction used, and why (``brain_source``)
    brain_source: str
    seconds_preprocessing: float
    phase: np.ndarray | None = None  # the phase image beside the scan, where the second look read one


def find_cmbs(scan: Path, model: DetectionModel, point: OperatingPoint, device: torch.device,
              brain_mask: Path | None = None, brain_extraction: str = "auto", subject_id: str = "") -> ScanDetection:
    """Read, brain-extract and preprocess ``scan``, then find its CMBs under ``point``: the path of ``detect``.

    Raises:
        InputError: an unreadable or invalid scan or brain mask, NaN voxels inside the brain.
        ConfigError: a bad brain extraction, or a two-stage ``point`` for a model without a second look.
    """
    scan = Path(scan)
    start = time.perf_counter()
    image, nonfinite = load_scan(scan)
    brain_img = load_mask(brain_mask, reference=image, what="brain mask") if brain_mask is not None else None
    method, brain_source = resolve_brain_extraction(brain_extraction, np.asarray(image.dataobj),
                                                    brain_img is not None)
    if brain_mask is not None and method == "mask":
        brain_source += f" ({Path(brain_mask).name})"
    phase = load_phase(scan, image) if point.second_look is not None else None  # the second look reads it
    log.info("%s: brain extraction %s%s", scan.name, brain_source, "; phase image beside it read" * (phase is not None))
    cfg = dataclasses.replace(model.profile.preprocess, brain_extraction=method)
    volume = preprocess_image(image, cfg, brain_mask=brain_img, subject_id=subject_id or subject_label(scan),
                              nonfinite=nonfinite)
    prep = time.perf_counter() - start
    result = detect_preprocessed(model, volume, [point], device, np.asarray(image.dataobj), phase)
    return ScanDetection(image, result.detections[0].lesions, result.maps[0], result, method, brain_source, prep, phase)


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
    brain_extraction: str = "auto",
    prefix: Path | None = None,
    locate: Locator | None = None,
    single_stage: bool = False,
) -> ScanResult:
    """Detect CMBs in one scan and write its files under ``out/<prefix>``.

    ``out`` is a folder being written (:func:`detect_path` passes its atomic
    temporary folder). Outputs lie on the input grid with the input affine.

    Args:
        scan: 3D T2*-GRE or SWI magnitude image (.nii / .nii.gz).
        model: from :func:`load_detection_model`.
        subject_id: label of the outputs (default :func:`subject_label`).
        modality: "gre" or "swi" (default :func:`modality_from_name`); recorded only.
        threshold: probability threshold (default the model's calibrated operating point).
        brain_mask: binary brain mask on the scan's grid.
        device: "auto", "cpu" or "cuda".
        report: draws the reports; None writes none.
        brain_extraction: ``--brain-extraction`` (auto, none, mask, threshold, deepbet).
        prefix: output stem relative to ``out`` (default ``sub-<id>/anat/sub-<id>``).
        locate: assigns each lesion its location (e.g. :func:`cmbstudy.inference.location.assign_locations`);
            None: "unknown".
        single_stage: the network alone (the paper's method), without the model's second look.

    Raises:
        InputError: an unreadable or invalid scan or brain mask (see :mod:`cmbstudy.data.io`),
            or NaN voxels inside the brain.
        ConfigError: bad modality, threshold, brain extraction or device.
    """
    scan = Path(scan)
    sid = subject_id or subject_label(scan)
    modality = modality or modality_from_name(scan)
    if modality not in MODALITIES:
        raise ConfigError(f"--modality {modality!r}: use gre or swi")
    profile = model.profile
    point = model.point_for(threshold, single_stage)
    dev = resolve_device(device)
    with _collecting() as notes:
        start = time.perf_counter()
        found = find_cmbs(scan, model, point, dev, brain_mask, brain_extraction, sid)
        image, result, method, brain_source = found.image, found.result, found.brain_method, found.brain_source
        lesions, detection_map = found.lesions, found.detection_map
        phase = phase_beside(scan).name if found.phase is not None else None  # the second look read it
        prep_done = start + found.seconds_preprocessing
        affine = np.asarray(image.affine, dtype=float)
        locations, where = None, {"method": LOCATION_NOTE if locate is None else NOTHING_TO_LOCATE}
        if locate is not None and lesions.n:
            found = locate(image, lesions.centroids, result.brain)
            locations, where = found.labels, found.as_dict()
        table = _detection_table(lesions, affine, locations)
    if lesions.n > np.iinfo(np.int16).max:
        raise InputError(f"scan {scan}: {lesions.n} components exceed int16 labels: raise --threshold")
    count, category = int(lesions.n), aria_h_category(int(lesions.n))
    stem = Path(out) / (prefix or Path(f"sub-{sid}") / "anat" / f"sub-{sid}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = {
        "dseg": save_nifti(lesions.labels, affine, f"{stem}{DSEG_SUFFIX}", np.int16),
        "probseg": save_nifti(detection_map, affine, f"{stem}{PROBSEG_SUFFIX}", np.float32),
        "lesions": Path(f"{stem}{LESIONS_SUFFIX}"),
    }
    table.to_csv(files["lesions"], sep="\t", index=False, float_format="%.4f")
    map_threshold, map_min_voxels = map_rule(point)
    rule = describe_rule(point, model.second_look)
    header = {"count": count, "category": category, "scan": scan.name, "model": f"{model.name} ({model.source})",
              "threshold": map_threshold, "stages": point.stages, "method": rule, "intended_use": model.intended_use,
              "modality": modality}
    if report is not None:
        files.update(report(np.asarray(image.dataobj, dtype=np.float32), lesions.labels, affine, header, table, stem))
    files["summary"] = Path(f"{stem}{SUMMARY_SUFFIX}")
    seconds = {"preprocessing": prep_done - start, "model": result.seconds_model,
               "postprocessing": result.seconds_post, "total": time.perf_counter() - start}
    summary = {
        "subject_id": sid, "scan": scan.name, "input_sha256": _sha256(scan), "modality": modality,
        "cmb_count": count, "aria_h_category": category, "method": rule,
        "stages": point.stages, "n_candidates": result.detections[0].n_candidates,
        "threshold": map_threshold, "min_voxels": map_min_voxels, "operating_point": point.to_json(),
        "brain_rule": BRAIN_RULE, "connectivity": point.connectivity,
        "model": {"name": model.name, "source": model.source, "profile": profile.name,
                  "provenance": dict(model.provenance)},
        "cmbstudy_version": __version__, "device": str(dev), "seconds": seconds,
        "brain_extraction": {"method": method, "reason": brain_source}, "phase_image": phase,
        "lesion_location": dict(where), "notes": notes.messages,
        "outputs": {kind: path.name for kind, path in files.items()},
        "intended_use": model.intended_use,
    }
    write_json(files["summary"], summary)
    return ScanResult(sid, scan, count, category, seconds, files, brain_source)


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
    brain_extraction: str = "auto",
    brain_mask_pattern: str | None = None,
    overrides: Sequence[str] = (),
    locate: Locator | None = None,
    single_stage: bool = False,
) -> DetectionSummary:
    """Detect CMBs in a scan, a plain folder of NIfTI scans, or a dataset root.

    Dataset roots (any layout :func:`cmbstudy.data.datasets.load_subjects` reads) use
    each subject's brain mask when the dataset has one. The whole ``out`` is
    written atomically: an error leaves nothing behind.

    Args:
        scan: image file or folder.
        out: derivatives folder to create (must be absent or empty unless ``overwrite``).
        model: what ``--model`` names (run folder, ``.pt`` file, ``packaged``), a loaded
            :class:`DetectionModel`, or None (the packaged model).
        modality: override for every scan ("gre" or "swi").
        threshold: probability threshold (default: the model's calibrated operating point).
        brain_mask: brain mask of a single scan (not allowed with a folder).
        device: "auto", "cpu" or "cuda".
        overwrite: replace an existing non-empty ``out``.
        progress: tqdm progress bar over scans.
        report: draws each scan's reports (the command line passes
            :func:`cmbstudy.figures.report.write_detection_reports`); None writes none.
        brain_extraction: ``auto``, ``none``, ``mask``, ``threshold`` or ``deepbet`` (see the module docstring).
        brain_mask_pattern: a plain folder's (or a file's) brain masks, beside each scan:
            ``{stem}`` is the scan's file name without ``.nii[.gz]``, ``{subject}`` its label,
            e.g. ``"{stem}_brainmask.nii.gz"``.
        overrides: ``--set section.key=value`` on the model's profile.
        locate: assigns lesion locations (see :func:`detect_scan`).
        single_stage: the network alone (the paper's method); default: the model's second look where it has one.

    Raises:
        InputError / ConfigError / OutputError: as :func:`detect_scan`, and for a missing
            input, no packaged model, or an ``out`` that holds results.
    """
    scan, out = Path(scan).expanduser(), Path(out).expanduser()
    if modality is not None and modality not in MODALITIES:
        raise ConfigError(f"--modality {modality!r}: use gre or swi")
    if brain_mask is not None and scan.is_dir():
        raise ConfigError("--brain-mask applies to a single scan: for a folder give --brain-mask-pattern "
                          "(e.g. '{stem}_brainmask.nii.gz'); a dataset root uses its own brain masks")
    if brain_mask is not None and brain_mask_pattern:
        raise ConfigError("give --brain-mask or --brain-mask-pattern, not both")
    check_output_dir(out, overwrite)
    with _collecting() as messages:
        items = find_scans(scan, modality, brain_mask_pattern)
        loaded = model if isinstance(model, DetectionModel) else load_detection_model(model, overrides)
        point = loaded.point_for(threshold, single_stage)
        dev = resolve_device(device)
        results = []
        with atomic_output_dir(out, overwrite) as tmp:
            description = {
                "Name": "cmbstudy CMB detection", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "cmbstudy", "Version": __version__,
                                 "Description": f"cmbstudy detect with {loaded.name} ({loaded.source})"}],
            }
            (tmp / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
            for item in tqdm(items, desc="detect", unit="scan", disable=not progress):
                results.append(detect_scan(item.image, loaded, tmp, subject_id=item.subject_id,
                                           modality=item.modality, threshold=threshold, device=dev, report=report,
                                           brain_mask=Path(brain_mask) if brain_mask else item.brain_mask,
                                           brain_extraction=brain_extraction, prefix=item.prefix, locate=locate,
                                           single_stage=single_stage))
            (tmp / LOG_FILE).write_text("".join(f"{m}\n" for m in messages.messages))
    results = [dataclasses.replace(r, files={k: out / p.relative_to(tmp) for k, p in r.files.items()})
               for r in results]
    return DetectionSummary(out, loaded.name, loaded.source, str(dev), tuple(results),
                            loaded.intended_use, describe_rule(point, loaded.second_look))
