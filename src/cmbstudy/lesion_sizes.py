"""Reference lesion sizes and per-lesion detection outcomes: recall by lesion diameter.

Companion of Table 4 of Cho et al. (2025) (lesions <= 3 mm, :mod:`cmbstudy.comparison`):
every reference lesion gets a diameter (mm), by the rule of the <= 3 mm subset of
:mod:`cmbstudy.evaluation`, and a detected flag under the paper's matching rule, so
that recall can be read per diameter bin for each method. Per-lesion outcomes are
recomputed from the saved probability maps, since ``eval-val.json`` keeps only counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError, InputError
from .metrics import equivalent_diameter_mm, find_lesions

__all__ = [
    "compute_lesion_outcomes",
    "compute_recall_by_size",
    "reference_diameters_mm",
    "load_reference_diameters",
    "load_lesion_outcomes",
]


def compute_lesion_outcomes(evaluations: Mapping[str, Any]) -> pd.DataFrame:
    """Per reference lesion: (subject_id, diameter_mm, detected) from per-subject volume evaluations.

    Args:
        evaluations: subject id -> (:class:`cmbstudy.evaluation.VolumeEvaluation`, (n_ref,) diameters mm).
    """
    frames = []
    for subject_id, (evaluation, diameters) in evaluations.items():
        detected = np.zeros(evaluation.ref.n, dtype=bool)
        if evaluation.match.n_tp:
            detected[evaluation.match.pairs[:, 1]] = True
        frames.append(pd.DataFrame({"subject_id": subject_id, "diameter_mm": np.asarray(diameters, float),
                                    "detected": detected}))
    if not frames:
        return pd.DataFrame(columns=["subject_id", "diameter_mm", "detected"])
    return pd.concat(frames, ignore_index=True)


def compute_recall_by_size(lesions: Mapping[str, pd.DataFrame], edges_mm: Sequence[float] = (0, 2, 3, 4, 6, np.inf)
                           ) -> pd.DataFrame:
    """Recall per reference-diameter bin for each method.

    Args:
        lesions: method label -> per-lesion table (diameter_mm, detected) from
            :func:`compute_lesion_outcomes` or :func:`cmbstudy.comparison.compute_classical_result`.
        edges_mm: bin edges (mm); bins are right-closed, (2, 3] holds the 3 mm lesions.

    Returns:
        index: bin label ("(2, 3] mm"); columns: "lesions" (reference count) and one recall column
        per method (NaN for an empty bin).

    Raises:
        ConfigError: fewer than two edges or edges not increasing.
    """
    edges = np.asarray(edges_mm, float)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"diameter bin edges {list(edges_mm)} must be at least two increasing values (mm)")
    labels = [f"({lo:g}, {hi:g}] mm" if np.isfinite(hi) else f"> {lo:g} mm" for lo, hi in zip(edges[:-1], edges[1:])]
    out = pd.DataFrame(index=pd.Index(labels, name="reference diameter"))
    for label, table in lesions.items():
        bins = pd.cut(table["diameter_mm"].astype(float), edges, labels=labels, right=True)
        grouped = table["detected"].astype(float).groupby(bins, observed=False)
        if "lesions" not in out:
            out["lesions"] = grouped.size().reindex(labels).fillna(0).astype(int)
        out[label] = grouped.mean().reindex(labels)
    return out


def reference_diameters_mm(mask: np.ndarray, voxel_mm3: float, lesion_table: pd.DataFrame | None = None
                           ) -> np.ndarray:
    """(n_ref,) diameter (mm) of each 26-connected component of a reference mask (X, Y, Z).

    The rule of the <= 3 mm subset (:mod:`cmbstudy.evaluation`): the generator's diameter when a
    synthetic ``lesions.tsv`` is given, else the equivalent-sphere diameter of the component.
    """
    from .evaluation import compute_reference_diameters  # the subset rule lives there; reused, not copied

    ref = find_lesions(np.asarray(mask), threshold=0.5)
    if lesion_table is None:
        return equivalent_diameter_mm(ref.n_voxels, voxel_mm3)
    return compute_reference_diameters(ref, voxel_mm3, lesion_table)


def load_reference_diameters(data_root: str | Path) -> dict[str, np.ndarray]:
    """Subject id -> (n_ref,) reference lesion diameters (mm) of every subject with a CMB mask.

    Components are in :func:`cmbstudy.metrics.find_lesions` order, as the centroids of
    :func:`cmbstudy.classical.load_detection_cases`.
    """
    from .datasets import load_subjects
    from .evaluation import load_lesion_table
    from .io import load_mask

    out = {}
    for subject in load_subjects(Path(data_root)):
        if subject.mask_path is None:
            continue
        mask = load_mask(subject.mask_path, what="reference CMB mask")
        table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
        voxel_mm3 = float(abs(np.linalg.det(mask.affine[:3, :3])))
        out[subject.subject_id] = reference_diameters_mm(np.asarray(mask.dataobj), voxel_mm3, table)
    return out


def load_lesion_outcomes(pred_dir: str | Path, data_root: str | Path, threshold: float = 0.5,
                         max_distance: float = 4.0) -> pd.DataFrame:
    """Per reference lesion of every predicted subject: (subject_id, diameter_mm, detected), paper rule.

    Recomputed from ``PRED/sub-<id>/*_probseg.nii.gz`` and the reference masks with
    :func:`cmbstudy.evaluation.evaluate_volume` (``eval-val.json`` keeps counts, not lesions).

    Raises:
        InputError: ``pred_dir`` does not exist.
    """
    from .datasets import load_subjects
    from .evaluation import load_lesion_table, evaluate_volume, prediction_path
    from .io import load_image, load_mask

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"prediction folder {pred_dir} does not exist: run `cmbstudy predict --out {pred_dir}` first")
    evaluations = {}
    for subject in load_subjects(Path(data_root)):
        path = prediction_path(pred_dir, subject.subject_id)
        if subject.mask_path is None or not path.is_file():
            continue
        mask = load_mask(subject.mask_path, what="reference CMB mask")
        probability = np.asarray(load_image(path, what="prediction", allow_zero=True).dataobj, dtype=np.float32)
        table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
        evaluation = evaluate_volume(probability, np.asarray(mask.dataobj), mask.affine, rule="paper",
                                     distance=max_distance, threshold=threshold, lesion_table=table)
        voxel_mm3 = float(abs(np.linalg.det(mask.affine[:3, :3])))
        evaluations[subject.subject_id] = (evaluation, reference_diameters_mm(np.asarray(mask.dataobj), voxel_mm3, table))
    return compute_lesion_outcomes(evaluations)
