"""The prediction folders that ``cmbstudy predict`` and ``cmbstudy detect`` write and ``cmbstudy evaluate`` reads.

``predict`` writes ``PRED/prediction.json`` (the model, threshold, connectivity,
device, timing), ``predictions.tsv`` (one row per subject: CMB count and
seconds) and per subject ``sub-<id>/sub-<id>_desc-cmb_probseg.nii.gz``
(probability on the input grid), ``sub-<id>/sub-<id>_desc-cmb_dseg.nii.gz``
(int16 instance labels) and ``sub-<id>/sub-<id>_lesions.tsv`` (:data:`LESION_COLUMNS`).

``detect`` writes a BIDS derivative: per scan ``sub-<id>/anat/sub-<id>_*`` (a
dataset root or BIDS-named files) or ``<stem>/<stem>_*`` (other file names),
each with a ``_summary.json`` that names its subject, its files and its
operating point. :func:`find_predictions` reads either layout.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .io import read_json

__all__ = [
    "PREDICTION_INFO",
    "PROBSEG_SUFFIX",
    "DSEG_SUFFIX",
    "LESIONS_SUFFIX",
    "SUMMARY_SUFFIX",
    "PREDICTIONS_TABLE",
    "LESION_COLUMNS",
    "subject_stem",
    "prediction_path",
    "find_predictions",
    "read_prediction_threshold",
    "read_prediction_min_voxels",
    "read_prediction_connectivity",
    "read_prediction_match_distance",
]

PREDICTION_INFO = "prediction.json"
#: The ends of a subject's file names after its stem (:func:`subject_stem`, or ``detect``'s per-scan stem).
PROBSEG_SUFFIX, DSEG_SUFFIX, LESIONS_SUFFIX, SUMMARY_SUFFIX = (
    "_desc-cmb_probseg.nii.gz", "_desc-cmb_dseg.nii.gz", "_lesions.tsv", "_summary.json")
PREDICTIONS_TABLE = "predictions.tsv"
#: Columns of a lesion table: centroid in voxels (input array indices) and scanner mm, size, max probability.
LESION_COLUMNS: tuple[str, ...] = (
    "lesion_id", "x_vox", "y_vox", "z_vox", "x_mm", "y_mm", "z_mm", "n_voxels", "volume_mm3", "max_prob",
)


def subject_stem(pred_dir: Path, subject_id: str) -> Path:
    """``PRED/sub-<id>/sub-<id>``: the common start of a subject's files."""
    return Path(pred_dir) / f"sub-{subject_id}" / f"sub-{subject_id}"


def prediction_path(pred_dir: Path, subject_id: str) -> Path:
    """``PRED/sub-<id>/sub-<id>_desc-cmb_probseg.nii.gz``: a subject's probability map."""
    return Path(f"{subject_stem(pred_dir, subject_id)}{PROBSEG_SUFFIX}")


def _detect_summaries(pred_dir: Path) -> list[tuple[Path, dict]]:
    """(summary path, content) of every per-scan ``*_summary.json`` that ``cmbstudy detect`` wrote."""
    found = []
    for path in sorted(Path(pred_dir).glob(f"**/*{SUMMARY_SUFFIX}")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"detection summary {path} cannot be read ({exc}): rerun `cmbstudy detect`") from exc
        if isinstance(data, dict) and "subject_id" in data and "probseg" in data.get("outputs", {}):
            found.append((path, data))
    return found


def find_predictions(pred_dir: Path) -> dict[str, Path]:
    """Subject id -> probability map of every subject in a ``predict`` or ``detect`` output folder.

    Raises:
        InputError: an unreadable detection summary, or two scans of one subject.
    """
    pred_dir = Path(pred_dir)
    found = {p.parent.name[len("sub-"):]: p for p in sorted(pred_dir.glob(f"sub-*/sub-*{PROBSEG_SUFFIX}"))
             if p.name == f"{p.parent.name}{PROBSEG_SUFFIX}"}
    for path, data in _detect_summaries(pred_dir):
        sid, probseg = str(data["subject_id"]), path.parent / data["outputs"]["probseg"]
        if sid in found and found[sid] != probseg:
            raise InputError(f"{pred_dir} holds two predictions of subject {sid} ({found[sid]}, {probseg}): "
                             "keep one")
        found[sid] = probseg
    return found


def _read_info(pred_dir: Path) -> dict:
    """``prediction.json`` of ``predict``, else the operating point shared by every ``detect`` summary."""
    info = read_json(Path(pred_dir) / PREDICTION_INFO, advice="rerun `cmbstudy predict`", missing_ok=True)
    if info:
        return info
    points = {(data.get("threshold"), data.get("min_voxels"), data.get("connectivity", 26))
              for _, data in _detect_summaries(Path(pred_dir))}
    if len(points) > 1:
        raise InputError(f"the scans in {pred_dir} were detected at different operating points {sorted(points)}: "
                         "pass --threshold to evaluate them at one")
    if points:
        threshold, min_voxels, connectivity = points.pop()
        return {"threshold": threshold, "min_voxels": min_voxels, "connectivity": connectivity}
    return {}


def _read_field(pred_dir: Path, key: str, default: float | int, cast: type) -> float | int:
    try:
        return cast(_read_info(pred_dir).get(key, default))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{Path(pred_dir) / PREDICTION_INFO} holds no valid {key} ({exc}): "
                         "rerun `cmbstudy predict`") from exc


def read_prediction_threshold(pred_dir: Path, default: float = 0.5) -> float:
    """The probability threshold ``cmbstudy predict`` used (``PRED/prediction.json``), else ``default``.

    Raises:
        InputError: ``prediction.json`` exists but is not JSON or holds no valid value.
    """
    return float(_read_field(pred_dir, "threshold", default, float))


def read_prediction_connectivity(pred_dir: Path, default: int = 26) -> int:
    """The connectivity of the components ``predict`` or ``detect`` reported, else ``default``.

    Raises:
        InputError: ``prediction.json`` exists but is not JSON or holds no valid value.
    """
    return int(_read_field(pred_dir, "connectivity", default, int))


def read_prediction_match_distance(pred_dir: Path, default: float = 4.0) -> float:
    """The paper rule's match distance (voxels) of the profile ``predict`` ran with, else ``default``.

    Raises:
        InputError: ``prediction.json`` exists but is not JSON or holds no valid value.
    """
    return float(_read_field(pred_dir, "match_distance_voxels", default, float))


def read_prediction_min_voxels(pred_dir: Path, default: int = 1) -> int:
    """The smallest lesion (voxels) ``cmbstudy predict`` kept (``PRED/prediction.json``), else ``default``.

    Raises:
        InputError: ``prediction.json`` exists but is not JSON or holds no valid value.
    """
    return int(_read_field(pred_dir, "min_voxels", default, int))
