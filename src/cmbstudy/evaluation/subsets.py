"""The lesion subsets of the tables: CMBs of at most 3 mm (the paper's Table 4), and recall by diameter.

One rule decides the diameter of every reference lesion (:func:`compute_reference_diameters`):
the generator's diameter when the synthetic cohort's ``lesions.tsv`` gives one, else the
diameter of the sphere with the component's volume. A lesion is "small" when that diameter
is at most :data:`SMALL_DIAMETER_MM`. Counts restricted to the subset follow
:func:`subset_counts`; recall per diameter bin follows :func:`compute_recall_by_size`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.datasets import SMALL_DIAMETER_MM
from ..errors import ConfigError
from .lesions import Lesions, equivalent_diameter_mm, find_lesions
from .matching import Match

__all__ = [
    "SMALL_DIAMETER_MM",
    "compute_reference_diameters",
    "reference_diameters_mm",
    "subset_counts",
    "compute_lesion_outcomes",
    "compute_recall_by_size",
]


def compute_reference_diameters(ref: Lesions, voxel_mm3: float, lesion_table: pd.DataFrame | None) -> np.ndarray:
    """Diameter (mm) per reference component.

    With a synthetic ``lesions.tsv``: the largest ``diameter_mm`` among the table's
    lesions whose centre voxel lies in the component (a centre outside every
    component goes to the nearest component centroid); components no row reaches,
    and every component without a table, get the equivalent-sphere diameter of
    their mask volume.
    """
    diameters = equivalent_diameter_mm(ref.n_voxels, voxel_mm3)
    if lesion_table is None or ref.n == 0 or lesion_table.empty:
        return diameters
    from_table = np.full(ref.n, -np.inf)
    shape = np.array(ref.labels.shape)
    for _, row in lesion_table.iterrows():
        centre = np.array([row["x_vox"], row["y_vox"], row["z_vox"]], dtype=float)
        voxel = np.clip(np.rint(centre).astype(int), 0, shape - 1)
        label = int(ref.labels[tuple(voxel)])
        index = label - 1 if label else int(np.argmin(np.linalg.norm(ref.centroids - centre, axis=1)))
        from_table[index] = max(from_table[index], float(row["diameter_mm"]))
    return np.where(np.isfinite(from_table), from_table, diameters)


def reference_diameters_mm(mask: np.ndarray, voxel_mm3: float, lesion_table: pd.DataFrame | None = None,
                           connectivity: int = 26) -> np.ndarray:
    """(n_ref,) diameter (mm) of each connected component of a reference mask (X, Y, Z).

    The rule of the <= 3 mm subset (:func:`compute_reference_diameters`): the generator's diameter when a
    synthetic ``lesions.tsv`` is given, else the equivalent-sphere diameter of the component.
    """
    ref = find_lesions(np.asarray(mask), threshold=0.5, connectivity=connectivity)
    if lesion_table is None:
        return equivalent_diameter_mm(ref.n_voxels, voxel_mm3)
    return compute_reference_diameters(ref, voxel_mm3, lesion_table)


def subset_counts(
    match: Match, ref_in_subset: np.ndarray, pred_in_subset: np.ndarray
) -> tuple[int, int, int]:
    """(n_tp, n_fp, n_fn) restricted to a lesion subset (e.g. diameter <= 3 mm, Table 4).

    Rule: a true positive belongs to the subset when its *reference* lesion does; a
    false negative when the missed reference does; a false positive (no reference to
    judge it by) when the *predicted* lesion itself does, e.g. its equivalent-sphere
    diameter is <= 3 mm. Precision on the subset is then tp / (tp + fp) with these counts.

    Args:
        match: the full-volume match.
        ref_in_subset: (n_ref,) bool per reference lesion.
        pred_in_subset: (n_pred,) bool per predicted lesion (used for unmatched ones only).
    """
    ref_in_subset = np.asarray(ref_in_subset, dtype=bool)
    pred_in_subset = np.asarray(pred_in_subset, dtype=bool)
    tp = int(ref_in_subset[match.pairs[:, 1]].sum()) if match.n_tp else 0
    fn = int(ref_in_subset[match.fn].sum()) if match.n_fn else 0
    fp = int(pred_in_subset[match.fp].sum()) if match.n_fp else 0
    return tp, fp, fn


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
            :func:`compute_lesion_outcomes` or :func:`cmbstudy.study.tables.classical_floor.compute_classical_result`.
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
