"""The prediction folder that ``cmbstudy predict`` writes and ``cmbstudy evaluate`` reads.

``PRED/`` holds ``prediction.json`` (the run, threshold, connectivity, device,
timing), ``predictions.tsv`` (one row per subject: CMB count and seconds) and
per subject ``sub-<id>/sub-<id>_desc-cmb_probseg.nii.gz`` (probability on the
input grid), ``sub-<id>/sub-<id>_desc-cmb_dseg.nii.gz`` (int16 instance labels)
and ``sub-<id>/sub-<id>_lesions.tsv`` (:data:`LESION_COLUMNS`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

__all__ = [
    "PREDICTION_INFO",
    "PREDICTIONS_TABLE",
    "LESION_COLUMNS",
    "subject_stem",
    "prediction_path",
    "read_prediction_threshold",
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


def read_prediction_threshold(pred_dir: Path, default: float = 0.5) -> float:
    """The probability threshold ``cmbstudy predict`` used (``PRED/prediction.json``), else ``default``.

    Raises:
        InputError: ``prediction.json`` exists but is not valid prediction metadata.
    """
    info = Path(pred_dir) / PREDICTION_INFO
    if not info.is_file():
        return default
    try:
        return float(json.loads(info.read_text()).get("threshold", default))
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{info} is not valid prediction metadata ({exc}): rerun `cmbstudy predict`") from exc
