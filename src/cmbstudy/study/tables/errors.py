"""What the remaining errors are: false positives by kind, missed CMBs by size.

A false positive is named after the synthetic cohort's mimic it lies on or
next to (``sub-<id>_label-mimic_dseg``: 1 vein, 2 calcification, 3 air-tissue
artefact, 4 deep-nuclei iron), and flagged when its centroid lies within
:data:`EDGE_VOXELS` of the brain's edge, where a skull-stripped scan has dark
rims and cortical veins. A missed CMB is binned by its diameter. Both tables
say why a detector falls short of a target where a score alone cannot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ...data.datasets import Subject, load_subjects
from ...data.io import load_mask
from ...errors import InputError
from ...evaluation.evaluate import load_lesion_outcomes
from ...synth.phantom import MIMIC_LABELS
from ..examples import find_prediction_dir, load_subject_evaluation

__all__ = ["NO_MIMIC", "MIMIC_DISTANCE_MM", "EDGE_VOXELS", "BRAIN_EDGE", "SIZE_BINS_MM", "classify_false_positives", "edge_distances",
           "compute_fp_mimic_table", "summarize_fp_mimics", "summarize_error_kinds", "summarize_misses_by_size"]

#: Category of a false positive with no mimic label within the distance.
NO_MIMIC = "other (no mimic nearby)"
#: A false positive not on a mimic is named after the nearest mimic voxel within this distance (mm).
MIMIC_DISTANCE_MM = 3.0
#: A false positive whose centroid lies this close to the brain's edge (in-plane voxels) is an edge one.
EDGE_VOXELS = 2.0
#: The kind of a false positive at the brain's edge (:func:`summarize_error_kinds`).
BRAIN_EDGE = "brain edge"
#: Diameter bins of the missed-CMB table (mm): (0, 2], (2, 3], (3, 5], (5, 10], (10, inf).
SIZE_BINS_MM: tuple[float, ...] = (0.0, 2.0, 3.0, 5.0, 10.0, float("inf"))


def edge_distances(subject: Subject, centroids: np.ndarray) -> np.ndarray:
    """In-plane distance (voxels) from each (X, Y, Z) centroid to the first voxel outside the brain mask."""
    if subject.brain_mask_path is None or not len(centroids):
        return np.full(len(centroids), np.nan)
    brain = np.asarray(nib.as_closest_canonical(load_mask(subject.brain_mask_path, what="brain mask")).dataobj) > 0
    inside = np.stack([ndimage.distance_transform_edt(brain[:, :, z]) for z in range(brain.shape[2])], axis=2)
    index = np.clip(np.rint(centroids).astype(int), 0, np.array(brain.shape) - 1)
    return inside[tuple(index.T)]


def classify_false_positives(
    pred_labels: np.ndarray,
    fp: Sequence[int],
    mimic: np.ndarray,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    max_distance_mm: float = MIMIC_DISTANCE_MM,
    names: Mapping[int, str] = MIMIC_LABELS,
) -> pd.DataFrame:
    """Name the mimic each false-positive component lies on or next to.

    A component overlapping mimic voxels takes the label most of its overlapping
    voxels carry; otherwise the label of the mimic voxel nearest to any of its
    voxels (Euclidean, in mm) when that is within ``max_distance_mm``; otherwise
    :data:`NO_MIMIC`.

    Args:
        pred_labels: (X, Y, Z) predicted instance labels, 1..n (``VolumeEvaluation.pred.labels``).
        fp: 0-based indices of the false-positive components (``Match.fp``).
        mimic: (X, Y, Z) mimic label map (0 none), same grid.
        spacing_mm: voxel size along X, Y, Z (mm).
        max_distance_mm: farthest a mimic may lie from a component that is named after it.
        names: mimic label -> name.

    Returns:
        One row per false positive: lesion (label), n_voxels, mimic (name), overlap
        (fraction of the component's voxels on that mimic), distance_mm (0 when overlapping,
        NaN when no mimic was found).

    Raises:
        InputError: shapes differ, or an index names no component.
    """
    labels, mim = np.asarray(pred_labels), np.asarray(mimic).astype(np.int64)
    if labels.shape != mim.shape or labels.ndim != 3:
        raise InputError(f"predicted labels {labels.shape} and mimic map {mim.shape} must be 3D on one grid")
    n = int(labels.max(initial=0))
    bad = [int(i) for i in fp if not 0 <= int(i) < n]
    if bad:
        raise InputError(f"false-positive indices {bad} name no component (the prediction has {n})")
    columns = ["lesion", "n_voxels", "mimic", "overlap", "distance_mm"]
    if not len(fp):
        return pd.DataFrame(columns=columns)
    if mim.any():
        distance, nearest = ndimage.distance_transform_edt(mim == 0, sampling=spacing_mm, return_indices=True)
        nearest_label = mim[tuple(nearest)]
    rows = []
    for index in (int(i) for i in fp):
        voxels = labels == index + 1
        on = mim[voxels]
        name, overlap, dist = NO_MIMIC, 0.0, float("nan")
        if (on > 0).any():
            values, counts = np.unique(on[on > 0], return_counts=True)
            best = int(values[np.argmax(counts)])
            name, overlap, dist = names.get(best, f"label {best}"), float(counts.max() / on.size), 0.0
        elif mim.any():
            d = distance[voxels]
            closest = int(np.argmin(d))
            if d[closest] <= max_distance_mm:
                best = int(nearest_label[voxels][closest])
                name, dist = names.get(best, f"label {best}"), float(d[closest])
        rows.append({"lesion": index + 1, "n_voxels": int(voxels.sum()), "mimic": name, "overlap": overlap,
                     "distance_mm": dist})
    return pd.DataFrame(rows, columns=columns)


def compute_fp_mimic_table(
    pred_dirs: Sequence[Path], data_root: Path, max_distance_mm: float = MIMIC_DISTANCE_MM,
    rule: str = "paper",
) -> pd.DataFrame:
    """Every false positive of the predicted subjects, named after the nearest mimic (synthetic cohort).

    Args:
        pred_dirs: prediction folders (e.g. a run's ``pred-test``); a subject is read from the
            first folder that holds it; subjects with no prediction are skipped.
        data_root: the reference dataset.
        max_distance_mm: see :func:`classify_false_positives`.
        rule: matching rule deciding which components are false positives.

    Returns:
        :func:`classify_false_positives` rows with subject_id, site, modality and
        edge_distance_voxels (in-plane voxels from the component's centroid to outside the
        brain mask; NaN without one); subjects without a mimic map contribute rows with
        mimic "unknown (no mimic labels)".

    Raises:
        InputError: as :func:`cmbstudy.study.examples.load_subject_evaluation`.
    """
    frames = []
    for subject in load_subjects(Path(data_root)):
        folder = find_prediction_dir(subject.subject_id, pred_dirs)
        if folder is None or subject.mask_path is None:
            continue
        _, evaluation, mimic = load_subject_evaluation(subject, folder, rule)
        if mimic is None:
            table = pd.DataFrame({"lesion": evaluation.match.fp + 1, "mimic": "unknown (no mimic labels)"})
        else:
            spacing = nib.as_closest_canonical(nib.load(subject.image_path)).header.get_zooms()[:3]
            table = classify_false_positives(evaluation.pred.labels, evaluation.match.fp, mimic, spacing,
                                             max_distance_mm)
        table["edge_distance_voxels"] = edge_distances(subject, evaluation.pred.centroids[evaluation.match.fp])
        frames.append(table.assign(subject_id=subject.subject_id, site=subject.site, modality=subject.modality))
    columns = ["subject_id", "site", "modality", "lesion", "n_voxels", "mimic", "overlap", "distance_mm",
               "edge_distance_voxels"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)


def summarize_fp_mimics(table: pd.DataFrame, n_subjects: int) -> pd.DataFrame:
    """False positives per mimic type: count, share of all false positives, per subject.

    Args:
        table: :func:`compute_fp_mimic_table` rows.
        n_subjects: subjects evaluated (for the per-subject rate).

    Returns:
        Index every mimic name of :data:`MIMIC_LABELS` (but "none") and :data:`NO_MIMIC`,
        plus any other name found; columns false_positives, share, per_subject.

    Raises:
        InputError: ``n_subjects`` < 1 or no ``mimic`` column.
    """
    if n_subjects < 1 or "mimic" not in table.columns:
        raise InputError(f"need a mimic column and at least one subject (got {n_subjects})")
    order = [name for label, name in sorted(MIMIC_LABELS.items()) if label > 0] + [NO_MIMIC]
    order += [name for name in table["mimic"].unique() if name not in order]
    counts = table["mimic"].value_counts().reindex(order, fill_value=0).astype(int)
    total = int(counts.sum())
    return pd.DataFrame({
        "false_positives": counts,
        "share": counts / total if total else np.nan,
        "per_subject": counts / n_subjects,
    }).rename_axis("mimic")


def summarize_error_kinds(table: pd.DataFrame, n_subjects: int) -> pd.DataFrame:
    """False positives by kind: at the brain's edge first (:data:`BRAIN_EDGE`), else by mimic.

    Args:
        table: :func:`compute_fp_mimic_table` rows (``edge_distance_voxels`` NaN: not at the edge).
        n_subjects: subjects evaluated.

    Returns:
        Index kind (brain edge, each mimic, :data:`NO_MIMIC`); columns false_positives, share, per_subject.
    """
    edge = pd.to_numeric(table.get("edge_distance_voxels", pd.Series(dtype=float)), errors="coerce") <= EDGE_VOXELS
    kinds = table.assign(mimic=np.where(edge.reindex(table.index, fill_value=False), BRAIN_EDGE, table["mimic"]))
    summary = summarize_fp_mimics(kinds, n_subjects)
    order = [BRAIN_EDGE] + [k for k in summary.index if k != BRAIN_EDGE]
    return summary.reindex(order, fill_value=0).rename_axis("kind")


def summarize_misses_by_size(pred_dirs: Sequence[Path], data_root: Path,
                             bins_mm: Sequence[float] = SIZE_BINS_MM) -> pd.DataFrame:
    """Reference CMBs by diameter: how many there are, how many were found and missed, and the recall.

    Lesions of a subject are read from the first prediction folder holding it (paper rule,
    at the folder's operating point).

    Returns:
        Index the diameter bin ("<= 2 mm", "2-3 mm", ...); columns n_ref, detected, missed, recall, share_of_misses.
    """
    frames, seen = [], set()
    for folder in pred_dirs:
        found = load_lesion_outcomes(folder, data_root)
        frames.append(found[~found["subject_id"].isin(seen)])
        seen |= set(found["subject_id"])
    outcomes = pd.concat(frames, ignore_index=True) if frames else None
    labels = [f"<= {bins_mm[1]:g} mm"] + [f"{lo:g}-{hi:g} mm" for lo, hi in zip(bins_mm[1:-2], bins_mm[2:-1])]
    labels += [f"> {bins_mm[-2]:g} mm"]
    if outcomes is None or outcomes.empty:
        return pd.DataFrame(0, index=pd.Index(labels, name="diameter"),
                            columns=["n_ref", "detected", "missed", "recall", "share_of_misses"])
    size = pd.cut(outcomes["diameter_mm"], list(bins_mm), labels=labels, include_lowest=True)
    grouped = outcomes.groupby(size, observed=False)["detected"]
    table = pd.DataFrame({"n_ref": grouped.size(), "detected": grouped.sum().astype(int)})
    table["missed"] = table["n_ref"] - table["detected"]
    table["recall"] = table["detected"] / table["n_ref"].where(table["n_ref"] > 0)
    total = int(table["missed"].sum())
    table["share_of_misses"] = table["missed"] / total if total else np.nan
    return table.rename_axis("diameter")
