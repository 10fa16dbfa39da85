"""The marks of a scan viewer (:mod:`cmbstudy.figures.viewer`), from the arrays the study computed.

- :func:`evaluation_scan`: a test subject as the study scored it, each true positive (its
  prediction and its reference together), false positive and missed CMB outlined, as in Figs. 2-3;
- :func:`detection_scan`: a user's scan with each CMB ``cmbstudy detect`` found (its instance mask
  and lesion table);
- :func:`cohort_scan`: a synthetic subject's CMBs and, for each kind of mimic, the piece of it that
  lies nearest a CMB, so that a CMB and its look-alike are seen side by side.

The evaluation is read by its attributes (``pred`` and ``ref`` with ``labels``, ``centroids``,
``n_voxels`` and ``max_prob``; ``match`` with ``pairs``, ``fp`` and ``fn``), not imported:
figures draw what the compute code hands over.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import InputError
from .viewer import ViewerMark, ViewerScan

__all__ = ["equivalent_diameter", "evaluation_scan", "table_marks", "detection_scan", "cohort_scan"]


def equivalent_diameter(n_voxels: float, voxel_mm3: float) -> float:
    """Diameter (mm) of the sphere with the volume of ``n_voxels`` voxels of ``voxel_mm3`` mm³ each."""
    return float((6.0 * n_voxels * voxel_mm3 / np.pi) ** (1.0 / 3.0))


def _voxel_mm3(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3])))


def _centre(centroid: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(round(float(c))) for c in centroid)  # type: ignore[return-value]


def evaluation_scan(key: str, title: str, images: Sequence[tuple[str, np.ndarray]], affine: np.ndarray,
                    evaluation: Any, notes: Mapping[tuple[str, int], str] | None = None,
                    caption: str = "", focus: tuple[str, int] | None = None,
                    ref_diameters_mm: Sequence[float] | None = None) -> ViewerScan:
    """A scored subject: each TP, FP and FN outlined in the colours of Figs. 2-3.

    Args:
        key, title, images, affine: as :class:`~cmbstudy.figures.viewer.ViewerScan`; ``affine`` is the
            grid of the evaluation's label volumes.
        evaluation: a :class:`cmbstudy.evaluation.evaluate.VolumeEvaluation` (read by attribute).
        notes: a sentence per mark, keyed by ("FP", 0-based prediction index) or ("FN", 0-based
            reference index) or ("TP", 0-based reference index), e.g. "on a vein".
        caption: under the table.
        focus: the mark the viewer opens at, keyed as ``notes`` (default: the first).
        ref_diameters_mm: each reference lesion's diameter as the study measures it (the synthetic
            ``lesions.tsv``'s, :func:`cmbstudy.evaluation.subsets.compute_reference_diameters`); None: the
            diameter of the sphere of its voxels' volume.

    Returns:
        TPs, then FPs, then FNs, each numbered from 1 in its kind; a TP's probability is its
        prediction's, its diameter and centre the reference's. The arrays must be those the
        viewer shows: canonical (RAS) ones, whose voxel axes NiiVue takes as they are.
    """
    pred, ref, match = evaluation.pred, evaluation.ref, evaluation.match
    if np.shape(pred.labels) != np.shape(ref.labels):
        raise InputError(f"prediction {np.shape(pred.labels)} and reference {np.shape(ref.labels)} grids differ")
    notes = notes or {}
    voxel_mm3 = _voxel_mm3(affine)
    ref_mm = [equivalent_diameter(v, voxel_mm3) for v in ref.n_voxels] if ref_diameters_mm is None \
        else [float(d) for d in ref_diameters_mm]
    keys: list[tuple[str, int]] = []
    pred_id = np.zeros(pred.n + 1, dtype=np.int32)
    ref_id = np.zeros(ref.n + 1, dtype=np.int32)
    marks: list[ViewerMark] = []
    for number, (p, r) in enumerate(np.asarray(match.pairs, dtype=int).reshape(-1, 2).tolist(), start=1):
        marks.append(ViewerMark("TP", f"TP {number}", _centre(ref.centroids[r]), float(pred.max_prob[p]),
                                ref_mm[r], notes.get(("TP", r), "")))
        pred_id[p + 1] = ref_id[r + 1] = len(marks)
        keys.append(("TP", r))
    for number, p in enumerate(np.asarray(match.fp, dtype=int).tolist(), start=1):
        marks.append(ViewerMark("FP", f"FP {number}", _centre(pred.centroids[p]), float(pred.max_prob[p]),
                                equivalent_diameter(pred.n_voxels[p], voxel_mm3), notes.get(("FP", p), "")))
        pred_id[p + 1] = len(marks)
        keys.append(("FP", p))
    for number, r in enumerate(np.asarray(match.fn, dtype=int).tolist(), start=1):
        marks.append(ViewerMark("FN", f"FN {number}", _centre(ref.centroids[r]), None, ref_mm[r],
                                notes.get(("FN", r), "")))
        ref_id[r + 1] = len(marks)
        keys.append(("FN", r))
    from_pred = pred_id[np.asarray(pred.labels)]
    regions = np.where(from_pred > 0, from_pred, ref_id[np.asarray(ref.labels)])
    first = keys.index(focus) + 1 if focus in keys else 0
    return ViewerScan(key, title, tuple(images), np.asarray(affine, dtype=float), regions, tuple(marks), caption,
                      first)


def _text(value: Any) -> str:
    """A table cell as a note: empty for a missing value and for "unknown"."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "unknown" \
        else str(value)


def table_marks(table: pd.DataFrame, centres: Mapping[int, Sequence[float]] | None = None) -> tuple[ViewerMark, ...]:
    """One mark per row of ``detect``'s lesion table ("CMB <lesion_id>"), in lesion order.

    Args:
        table: lesion_id, x_vox, y_vox, z_vox, max_prob, and where present equivalent_diameter_mm
            and location (the note).
        centres: each lesion's centre on the grid the viewer shows, by lesion id; None: the table's
            voxel columns (the input's grid).
    """
    marks = []
    for row in table.sort_values("lesion_id").to_dict("records"):
        lesion = int(row["lesion_id"])
        centre = centres[lesion] if centres is not None else (row["x_vox"], row["y_vox"], row["z_vox"])
        marks.append(ViewerMark("detection", f"CMB {lesion}", _centre(centre), row.get("max_prob"),
                                row.get("equivalent_diameter_mm"), _text(row.get("location"))))
    return tuple(marks)


def detection_scan(key: str, title: str, image: np.ndarray, affine: np.ndarray, labels: np.ndarray,
                   table: pd.DataFrame, caption: str = "") -> ViewerScan:
    """A user's scan with the CMBs ``cmbstudy detect`` found, turned to the canonical (RAS) orientation.

    NiiVue takes a volume's voxel axes as they are when it moves to a voxel, so the scan and its
    labels are flipped and permuted to RAS here (nibabel's closest canonical, no resampling), and
    each mark's centre is its label's centre on that grid.

    Args:
        image: (X, Y, Z) the scan as ``detect`` read it; ``affine`` its voxel-to-mm affine.
        labels: (X, Y, Z) instance mask of ``detect`` (``_desc-cmb_dseg``), 1..n on the scan's grid.
        table: its lesion table (:func:`table_marks`).

    Raises:
        InputError: the table and the mask do not name the same lesions.
    """
    scan = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine))
    found = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(labels).astype(np.int32), affine))
    canonical = np.asarray(found.dataobj).astype(np.int64)
    n = int(canonical.max(initial=0))
    ids = sorted(table["lesion_id"].astype(int).tolist()) if len(table) else []
    if ids != list(range(1, n + 1)):
        raise InputError(f"{key}: the lesion table names lesions {ids[:10]} but the mask labels 1..{n}")
    centres = dict(zip(range(1, n + 1), ndimage.center_of_mass(canonical > 0, canonical, range(1, n + 1))))
    return ViewerScan(key, title, (("magnitude", np.asarray(scan.dataobj, dtype=np.float32)),),
                      np.asarray(scan.affine, dtype=float), canonical, table_marks(table, centres), caption)


def cohort_scan(key: str, title: str, images: Sequence[tuple[str, np.ndarray]], affine: np.ndarray,
                cmb_mask: np.ndarray, mimic: np.ndarray, names: Mapping[int, str], caption: str = "") -> ViewerScan:
    """A synthetic subject's CMBs and, per mimic kind, the piece of that mimic nearest a CMB.

    Args:
        cmb_mask: (X, Y, Z) reference CMB mask (components are CMBs, 26-connected).
        mimic: (X, Y, Z) mimic label map on the same grid (0 none).
        names: mimic label -> name (:data:`cmbstudy.synth.phantom.MIMIC_LABELS`); each name is a kind of mark.

    Returns:
        Every CMB ("CMB k"), then for each mimic label present, in label order, its connected piece
        holding the mimic voxel nearest a CMB's centre, marked at that voxel, its note naming the CMB
        and the distance (voxels).

    Raises:
        InputError: grids differ.
    """
    cmb_mask, mimic = np.asarray(cmb_mask) > 0, np.asarray(mimic).astype(np.int64)
    if cmb_mask.shape != mimic.shape:
        raise InputError(f"CMB mask {cmb_mask.shape} and mimic map {mimic.shape} grids differ")
    voxel_mm3 = _voxel_mm3(affine)
    full = ndimage.generate_binary_structure(3, 3)
    cmbs, n_cmb = ndimage.label(cmb_mask, structure=full)
    centres = np.atleast_2d(np.asarray(ndimage.center_of_mass(cmb_mask, cmbs, range(1, n_cmb + 1)))) if n_cmb else None
    sizes = np.bincount(cmbs.ravel(), minlength=n_cmb + 1)
    regions = cmbs.astype(np.int32)
    marks = [ViewerMark("CMB", f"CMB {k}", _centre(centres[k - 1]), None, equivalent_diameter(sizes[k], voxel_mm3))
             for k in range(1, n_cmb + 1)]
    for label in sorted(int(v) for v in np.unique(mimic) if v > 0):
        pieces, _ = ndimage.label(mimic == label, structure=full)
        voxels = np.argwhere(pieces > 0)
        if centres is None:
            nearest, which, distance = voxels[0], 0, float("nan")
        else:
            d = np.linalg.norm(voxels[:, None, :] - centres[None, :, :], axis=2)
            at = int(np.argmin(d.min(axis=1)))
            nearest, which, distance = voxels[at], int(np.argmin(d[at])), float(d[at].min())
        piece = pieces == pieces[tuple(nearest)]
        kind = names.get(label, f"mimic {label}")
        note = f"{distance:.0f} voxels from CMB {which + 1}" if centres is not None else ""
        marks.append(ViewerMark(kind, kind, _centre(nearest), None, None, note))
        regions[piece & (regions == 0)] = len(marks)
    return ViewerScan(key, title, tuple(images), np.asarray(affine, dtype=float), regions, tuple(marks), caption)
