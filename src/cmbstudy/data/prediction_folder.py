"""The prediction folder that ``cmbstudy predict`` writes and ``cmbstudy evaluate`` reads.

``PRED/`` holds ``prediction.json`` (the run, threshold, connectivity, device,
timing), ``predictions.tsv`` (one row per subject: CMB count and seconds) and
per subject ``sub-<id>/sub-<id>_desc-cmb_probseg.nii.gz`` (probability on the
input grid), ``sub-<id>/sub-<id>_desc-cmb_dseg.nii.gz`` (int16 instance labels)
and ``sub-<id>/sub-<id>_lesions.tsv`` (:data:`LESION_COLUMNS`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .io import read_json

__all__ = [
    "PREDICTION_INFO",
    "PREDICTIONS_TABLE",
    "LESION_COLUMNS",
    "subject_stem",
    "prediction_path",
    "read_prediction_threshold",
    "read_prediction_min_voxels",
]

PREDICTION_INFO = "prediction.json"
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
    return Path(pred_dir) / f"sub-{subject_id}" / f"sub-{subject_id}_desc-cmb_probseg.nii.gz"


def _read_info(pred_dir: Path) -> dict:
    return read_json(Path(pred_dir) / PREDICTION_INFO, advice="rerun `cmbstudy predict`", missing_ok=True)


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


def read_prediction_min_voxels(pred_dir: Path, default: int = 1) -> int:
    """The smallest lesion (voxels) ``cmbstudy predict`` kept (``PRED/prediction.json``), else ``default``.

    Raises:
        InputError: ``prediction.json`` exists but is not JSON or holds no valid value.
    """
    return int(_read_field(pred_dir, "min_voxels", default, int))
