"""The subjects and slices the figure notebooks show (10, 11), and the arrays behind them.

- which subjects (most reference lesions, modalities alternating), which axial
  slices (most lesion pixels; centres of lesions <= 3 mm) to draw;
- one subject's evaluation on canonical (RAS) arrays for the overlays, read from a
  prediction folder of ``cmbstudy predict``;
- a run's preprocessed validation volumes, as the run saw them, for Grad-CAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.orientations import aff2axcodes

from ..data.datasets import Subject, load_subjects
from ..data.io import load_image, load_mask
from ..data.prediction_folder import (
    prediction_path,
    read_prediction_min_voxels,
    read_prediction_threshold,
)
from ..data.run_folder import load_run_profile
from ..errors import InputError
from ..evaluation.evaluate import VolumeEvaluation, evaluate_volume
from ..preprocessing.cache import default_cache_dir, load_preprocessed
from ..preprocessing.geometry import PreprocessedVolume
from .runs import TEST_PREDICTIONS, dataset_label, load_runs, run_name, test_report

__all__ = [
    "Case",
    "QualitativeCases",
    "load_qualitative_cases",
    "find_prediction_dir",
    "load_subject_evaluation",
    "reference_lesion_table",
    "load_test_volumes",
    "select_example_subjects",
    "select_example_slices",
    "select_small_lesion_slices",
]


def find_prediction_dir(subject_id: str, pred_dirs: Sequence[Path]) -> Path | None:
    """The first of ``pred_dirs`` holding a prediction of ``subject_id`` (None if none does)."""
    for folder in pred_dirs:
        if prediction_path(Path(folder), subject_id).is_file():
            return Path(folder)
    return None


def reference_lesion_table(subject: Subject) -> pd.DataFrame | None:
    """The synthetic ``lesions.tsv`` of ``subject`` (diameters), when its scan is stored in RAS orientation (else None).

    Its voxel columns index the stored grid, which is the canonical one only for a RAS scan.
    """
    stored_ras = aff2axcodes(nib.load(subject.image_path).affine) == ("R", "A", "S")
    if "lesions" in subject.extra_paths and stored_ras:
        return pd.read_csv(subject.extra_paths["lesions"], sep="\t")
    return None


def load_subject_evaluation(
    subject: Subject, pred_dir: Path, rule: str = "paper", threshold: float | None = None
) -> tuple[np.ndarray, VolumeEvaluation, np.ndarray | None]:
    """One subject's image, evaluation and mimic map in canonical (RAS) orientation, for overlays.

    Args:
        subject: a reference subject (with a CMB mask).
        pred_dir: prediction folder holding ``sub-<id>`` (``cmbstudy predict``).
        rule: matching rule, "paper" or "valdo".
        threshold: probability threshold; None takes the one in ``PRED/prediction.json`` (else 0.5);
            the minimum lesion size is always the folder's.

    Returns:
        (image (X, Y, Z) float32, :class:`VolumeEvaluation`, mimic labels (X, Y, Z) or None).
        The synthetic ``lesions.tsv`` (lesion diameters) is used when the scan is already
        stored in RAS orientation; otherwise diameters come from the mask volumes.

    Raises:
        InputError: no CMB mask, no prediction for the subject, grids that differ.
    """
    if subject.mask_path is None:
        raise InputError(f"subject {subject.subject_id} has no CMB mask: overlays need a reference")
    path = prediction_path(Path(pred_dir), subject.subject_id)
    if not path.is_file():
        raise InputError(f"{path} does not exist: run `cmbstudy predict` for subject {subject.subject_id}")
    image = nib.as_closest_canonical(load_image(subject.image_path))
    ref = nib.as_closest_canonical(load_mask(subject.mask_path, what="reference CMB mask"))
    prob = nib.as_closest_canonical(load_image(path, what="prediction", allow_zero=True))
    if not image.shape == ref.shape == prob.shape:
        raise InputError(f"image {image.shape}, mask {ref.shape} and prediction {prob.shape} of "
                         f"{subject.subject_id} differ in shape: rerun `cmbstudy predict` on this dataset")
    table = reference_lesion_table(subject)
    evaluation = evaluate_volume(
        np.asarray(prob.dataobj, dtype=np.float32), np.asarray(ref.dataobj), ref.affine, rule=rule,
        threshold=read_prediction_threshold(Path(pred_dir)) if threshold is None else threshold, lesion_table=table,
        min_voxels=read_prediction_min_voxels(Path(pred_dir)),
    )
    mimic = None
    if "mimic" in subject.extra_paths:
        mimic = np.asarray(nib.as_closest_canonical(nib.load(subject.extra_paths["mimic"])).dataobj).astype(np.int64)
    return np.asarray(image.dataobj, dtype=np.float32), evaluation, mimic


def load_test_volumes(run_dir: Path, test_root: Path) -> list[PreprocessedVolume]:
    """The preprocessed test subjects a run predicted (``RUN/pred-test/sub-*``), as the run sees them.

    Preprocessing follows the run's ``profile.yaml``; volumes come from the shared cache
    (:func:`cmbstudy.preprocessing.cache.default_cache_dir`).

    Returns:
        One :class:`PreprocessedVolume` per predicted test subject, (Z, S, S) arrays, sorted by subject.

    Raises:
        InputError: missing run files, or predicted subjects absent from ``test_root``.
    """
    run_dir = Path(run_dir)
    profile = load_run_profile(run_dir)
    wanted = sorted(folder.name.removeprefix("sub-") for folder in (run_dir / TEST_PREDICTIONS).glob("sub-*"))
    by_id = {s.subject_id: s for s in load_subjects(Path(test_root))}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise InputError(f"test subjects {missing[:5]} of {run_dir} are not in {test_root}: give the study's test root")
    return load_preprocessed([by_id[i] for i in wanted], profile.preprocess, default_cache_dir(run_dir), progress=False)


def select_example_subjects(per_subject: pd.DataFrame, subjects: Sequence[Subject], n: int = 3) -> list[str]:
    """Subjects to show: the one with most reference lesions of each modality, then the next most.

    Args:
        per_subject: rows with subject_id and n_ref (``EvaluationReport.per_subject``).
        subjects: the dataset's subjects (their modality).
        n: how many at most.

    Returns:
        Subject ids, modalities alternating (sorted by name) while each still has subjects.

    Raises:
        InputError: ``n`` < 1.
    """
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    modality = {s.subject_id: s.modality for s in subjects}
    rows = pd.DataFrame(per_subject)
    rows = rows[rows["subject_id"].isin(modality)].assign(modality=lambda f: f["subject_id"].map(modality))
    rows = rows.sort_values(["n_ref", "subject_id"], ascending=[False, True])
    queues = {m: list(part["subject_id"]) for m, part in rows.groupby("modality", sort=True)}
    chosen: list[str] = []
    while len(chosen) < n and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < n:
                chosen.append(str(queue.pop(0)))
    return chosen


def select_example_slices(volumes: Sequence[PreprocessedVolume], n: int = 3) -> list[tuple[int, int]]:
    """(volume index, axial slice) pairs for Grad-CAM figures: one slice per subject with lesions.

    Each subject contributes its slice with the most reference lesion pixels (lowest
    index on ties); subjects are taken in order until ``n`` pairs are found.

    Raises:
        InputError: ``n`` < 1.
    """
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    chosen = []
    for index, volume in enumerate(volumes):
        if volume.mask is None or not volume.mask.any():
            continue
        per_slice = np.asarray(volume.mask).reshape(volume.mask.shape[0], -1).sum(axis=1)
        chosen.append((index, int(np.argmax(per_slice))))
        if len(chosen) == n:
            break
    return chosen


def select_small_lesion_slices(evaluation: VolumeEvaluation, n: int = 2) -> list[int]:
    """Axial slices (last axis) holding the centres of reference lesions <= 3 mm, at most ``n``, ascending.

    Slices with more small lesions come first (lowest index on ties).

    Raises:
        InputError: ``n`` < 1.
    """
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    small = np.flatnonzero(evaluation.ref_small)
    if small.size == 0:
        return []
    z = np.rint(evaluation.ref.centroids[small, 2]).astype(int)
    values, counts = np.unique(z, return_counts=True)
    order = np.lexsort((values, -counts))
    return sorted(int(v) for v in values[order][:n])


@dataclass(frozen=True)
class Case:
    """One subject of the overlay figures (Figs. 2-3): its canonical image, evaluation and small-lesion slices."""

    subject_id: str
    modality: str
    site: str
    image: np.ndarray  # (X, Y, Z) float32, canonical RAS
    evaluation: VolumeEvaluation
    small_slices: tuple[int, ...]  # axial slices holding reference CMBs <= 3 mm (at most 2)

    @property
    def title(self) -> str:
        return f"sub-{self.subject_id} ({self.modality.upper()}, {self.site})"


@dataclass(frozen=True)
class QualitativeCases:
    """The test subjects notebook 11 shows, from the main network's predictions at the comparison fold.

    Attributes:
        note: markdown on missing runs ("" when none is missing).
        cases: the subjects shown; shown: their counts as a table.
        with_small: the cases with a reference CMB of at most 3 mm; small_note: markdown naming the others.
    """

    dataset: str
    note: str
    cases: tuple[Case, ...]
    shown: pd.DataFrame
    with_small: tuple[Case, ...]
    small_note: str
    modalities: str
    n_small: int


def load_qualitative_cases(results_dir: Path | str, test_root: Path | str, main: str, fold: int,
                           n: int = 3) -> QualitativeCases:
    """The ``n`` test subjects with the most reference CMBs (modalities alternating), as ``main`` at ``fold`` scored them."""
    runs, missing = load_runs(results_dir, [run_name(main, fold)])
    note = (f"**Runs not found** (not trained by this profile, or notebook 03 not run): {', '.join(missing)}."
            if missing else "")
    report = test_report(results_dir, run_name(main, fold)) if runs else None
    subjects = {s.subject_id: s for s in load_subjects(Path(test_root))}
    pred_dirs = [runs[name].run_dir / TEST_PREDICTIONS for name in sorted(runs)]
    chosen = select_example_subjects(pd.DataFrame(report.per_subject), list(subjects.values()), n) if report else []
    cases = []
    for sid in chosen:
        image, evaluation, _ = load_subject_evaluation(subjects[sid], find_prediction_dir(sid, pred_dirs))
        cases.append(Case(sid, subjects[sid].modality, subjects[sid].site, image, evaluation,
                          tuple(select_small_lesion_slices(evaluation, 2))))
    keys = ("n_ref", "n_tp", "n_fp", "n_fn", "n_ref_small")
    shown = pd.DataFrame([{"subject": c.subject_id, "modality": c.modality, "site": c.site,
                           **{k: c.evaluation.row[k] for k in keys}} for c in cases])
    without = [c.subject_id for c in cases if not c.small_slices]
    return QualitativeCases(
        dataset=dataset_label(test_root), note=note, cases=tuple(cases), shown=shown,
        with_small=tuple(c for c in cases if c.small_slices),
        small_note="\n\n".join(f"sub-{sid}: no reference CMB of at most 3 mm." for sid in without),
        modalities=", ".join(sorted(shown["modality"].str.upper().unique())) if len(shown) else "none",
        n_small=int(shown["n_ref_small"].sum()) if len(shown) else 0,
    )
