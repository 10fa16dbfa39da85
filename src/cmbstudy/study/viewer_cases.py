"""The scans the book's viewers open: test subjects chosen by rule (notebook 11) and a cohort example (notebook 01).

Notebook 11's viewer shows four test subjects as the main network at the comparison fold scored
them (with its second look where the run has one), each chosen for one thing a reader should see:

1. **a clear true positive**: the found CMB over 3 mm with the highest probability;
2. **a missed small CMB**: the largest missed CMB of at most 3 mm (sizes as the study measures them:
   the synthetic ``lesions.tsv``'s diameters, else the sphere of the mask's volume);
3. **a false positive on a vein**: the most probable false positive on or beside a vein and away
   from the brain's edge (named after the synthetic cohort's mimic map, which only explains errors:
   no detector reads it);
4. **a false positive at the brain's edge**: the most probable one within
   :data:`~cmbstudy.study.tables.errors.EDGE_VOXELS` of it.

Each rule takes its best candidate among subjects not chosen yet, preferring the modalities in turn
(GRE, SWI, GRE, SWI) so that both are seen. A rule the two looks leave no candidate for is looked for
in the first look's predictions (the case says so); a rule with no candidate at all is named in the note.
Notebook 01's viewer shows the SWI training subject with the most kinds of mimic (then the most
CMBs), with its phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ..data.datasets import Subject, load_subjects
from ..data.io import load_image, load_mask
from ..errors import InputError
from ..evaluation.evaluate import VolumeEvaluation
from ..evaluation.lesions import voxel_volume_mm3
from ..evaluation.subsets import SMALL_DIAMETER_MM, compute_reference_diameters
from .examples import find_prediction_dir, load_subject_evaluation, reference_lesion_table
from .runs import TEST_PREDICTIONS, TEST_PREDICTIONS_TWO_STAGE, load_runs, run_name
from .tables.errors import EDGE_VOXELS, classify_false_positives, edge_distances

__all__ = ["VIEWER_RULES", "ViewerCase", "ViewerCases", "CohortExample", "select_viewer_cases",
           "select_cohort_example"]

#: The rules of notebook 11's viewer, in order: (key, what the reader sees).
VIEWER_RULES: tuple[tuple[str, str], ...] = (
    ("clear_tp", "a clear true positive"),
    ("small_fn", f"a missed CMB of at most {SMALL_DIAMETER_MM:g} mm"),
    ("vein_fp", "a false positive on a vein"),
    ("edge_fp", "a false positive at the brain's edge"),
)
_MODALITY_TURNS = ("gre", "swi")


@dataclass(frozen=True)
class ViewerCase:
    """One subject of notebook 11's viewer and the mark its rule chose."""

    rule: str  # what the reader sees (VIEWER_RULES)
    subject_id: str
    modality: str
    site: str
    images: tuple[tuple[str, np.ndarray], ...]  # magnitude, and phase where the scan has one (canonical RAS)
    affine: np.ndarray  # the canonical grid's affine
    evaluation: VolumeEvaluation
    focus: tuple[str, int]  # the chosen mark: ("TP", reference index), ("FN", reference index) or ("FP", prediction index)
    ref_diameters_mm: np.ndarray  # each reference CMB's diameter as the study measures it (the <= 3 mm rule's)
    notes: dict[tuple[str, int], str] = field(default_factory=dict)  # what each FP lies on, the chosen mark's rule
    stage: str = "two looks"  # whose predictions: "two looks", "first look only" or "one look" (no second look trained)

    @property
    def key(self) -> str:
        return f"sub-{self.subject_id}"

    @property
    def title(self) -> str:
        return f"{self.rule}: sub-{self.subject_id} ({self.modality.upper()}, {self.site}; {self.stage})"


@dataclass(frozen=True)
class ViewerCases:
    """Notebook 11's viewer: its subjects, a table of them and a note on rules with no candidate."""

    cases: tuple[ViewerCase, ...]
    table: pd.DataFrame
    note: str
    predictions: str  # the detector searched first: "two looks", or "one look" when the run has no second look

    @property
    def detector(self) -> str:
        """How the chapter names the detector searched first."""
        return {"two looks": "with its second look", "one look": "(it has no second look)"}.get(self.predictions, "")


def _canonical_images(subject: Subject, magnitude: np.ndarray) -> tuple[tuple[tuple[str, np.ndarray], ...], np.ndarray]:
    affine = nib.as_closest_canonical(load_image(subject.image_path)).affine
    images = [("magnitude", magnitude)]
    if "phase" in subject.extra_paths:
        phase = nib.as_closest_canonical(load_image(subject.extra_paths["phase"], what="phase", allow_zero=True))
        images.append(("phase", np.asarray(phase.dataobj, dtype=np.float32)))
    return tuple(images), np.asarray(affine, dtype=float)


def _diameters(subject: Subject, evaluation: VolumeEvaluation) -> np.ndarray:
    voxel_mm3 = voxel_volume_mm3(nib.load(subject.image_path).affine)  # the header only: a volume has no orientation
    return compute_reference_diameters(evaluation.ref, voxel_mm3, reference_lesion_table(subject))


def _candidates(subject: Subject, evaluation: VolumeEvaluation, mimic: np.ndarray | None,
                spacing: tuple[float, ...]) -> tuple[list[tuple[str, tuple, tuple[str, int]]], dict]:
    """(rule key, sort key (best first), mark) of every mark of one subject a rule could choose, and the FP notes.

    A CMB is small or not as the study counts it (``evaluation.ref_small``, from the diameters of
    :func:`_diameters`), and the same diameters order the candidates.
    """
    pred, ref, match = evaluation.pred, evaluation.ref, evaluation.match
    ref_mm = _diameters(subject, evaluation) if ref.n else np.zeros(0)
    found = []
    for p, r in np.asarray(match.pairs, dtype=int).reshape(-1, 2).tolist():
        if not evaluation.ref_small[r]:
            found.append(("clear_tp", (-float(pred.max_prob[p]), -float(ref_mm[r])), ("TP", r)))
    for r in np.asarray(match.fn, dtype=int).tolist():
        if evaluation.ref_small[r]:
            found.append(("small_fn", (-float(ref_mm[r]),), ("FN", r)))
    notes: dict[tuple[str, int], str] = {}
    fp = np.asarray(match.fp, dtype=int)
    if fp.size:
        edge = edge_distances(subject, pred.centroids[fp])
        kinds = classify_false_positives(pred.labels, fp, mimic, spacing) if mimic is not None else None
        for i, p in enumerate(fp.tolist()):
            at_edge = bool(edge[i] <= EDGE_VOXELS)
            mimic_name = str(kinds["mimic"].iloc[i]) if kinds is not None else ""
            notes[("FP", p)] = "at the brain's edge" if at_edge else (f"on or beside: {mimic_name}" if mimic_name else "")
            if at_edge:
                found.append(("edge_fp", (-float(pred.max_prob[p]),), ("FP", p)))
            elif mimic_name == "vein":
                found.append(("vein_fp", (-float(pred.max_prob[p]),), ("FP", p)))
    return found, notes


def _gather(subjects: list[Subject], pred_dir: Path) -> tuple[dict[str, list], dict]:
    """Every rule's candidates among ``subjects`` as ``pred_dir`` scored them, and each subject's FP notes.

    Only the candidates are kept, not the volumes: the chosen subjects are read again.
    """
    per_rule: dict[str, list] = {key: [] for key, _ in VIEWER_RULES}
    notes_of = {}
    for subject in subjects:
        if find_prediction_dir(subject.subject_id, [pred_dir]) is None:
            continue
        _, evaluation, mimic = load_subject_evaluation(subject, pred_dir)
        # the header only (load_subject_evaluation has read and checked the image; a RAS file is not read again)
        spacing = nib.as_closest_canonical(nib.load(subject.image_path)).header.get_zooms()[:3]
        found, notes_of[subject.subject_id] = _candidates(subject, evaluation, mimic, tuple(float(s) for s in spacing))
        for rule, order, mark in found:
            per_rule[rule].append((order, subject.subject_id, subject.modality, mark))
    return per_rule, notes_of


def select_viewer_cases(results_dir: Path | str, test_root: Path | str, main: str, fold: int) -> ViewerCases:
    """Notebook 11's viewer subjects (module docstring), from the run ``main`` at ``fold``.

    The run's predictions with its second look are searched first. A rule with no candidate there
    (the second look may have removed every vein false positive) is looked for in the network's own
    predictions, the first look, and its case says so.

    Raises:
        InputError: as :func:`cmbstudy.study.examples.load_subject_evaluation`.
    """
    name = run_name(main, fold)
    runs, missing = load_runs(results_dir, [name])
    if missing:
        return ViewerCases((), pd.DataFrame(), f"**Run not found** (notebook 03 not run): {name}.", "")
    run_dir = runs[name].run_dir
    two_stage = (run_dir / TEST_PREDICTIONS_TWO_STAGE).is_dir()
    stages = [(run_dir / TEST_PREDICTIONS_TWO_STAGE, "two looks"), (run_dir / TEST_PREDICTIONS, "first look only")] \
        if two_stage else [(run_dir / TEST_PREDICTIONS, "one look")]
    subjects = load_subjects(Path(test_root))
    by_id = {s.subject_id: s for s in subjects}
    gathered: dict[int, tuple[dict, dict]] = {}
    cases, chosen, empty = [], set(), []
    for turn, (rule, what) in enumerate(VIEWER_RULES):
        for index, (pred_dir, stage) in enumerate(stages):
            if index not in gathered:
                gathered[index] = _gather(subjects, pred_dir)
            per_rule, notes_of = gathered[index]
            options = sorted((c for c in per_rule[rule] if c[1] not in chosen), key=lambda c: (c[0], c[1]))
            preferred = [c for c in options if c[2] == _MODALITY_TURNS[turn % 2]] or options
            if preferred:
                break
        else:
            empty.append(what)
            continue
        _, sid, _, mark = preferred[0]
        chosen.add(sid)
        subject, notes = by_id[sid], notes_of[sid]
        image, evaluation, _ = load_subject_evaluation(subject, pred_dir)
        images, affine = _canonical_images(subject, image)
        notes = {**notes, mark: f"chosen: {what}" + (f"; {notes[mark]}" if notes.get(mark) else "")}
        cases.append(ViewerCase(what, sid, subject.modality, subject.site, images, affine, evaluation, mark,
                                _diameters(subject, evaluation), notes, stage))
    table = pd.DataFrame([{"shows": c.rule, "subject": c.subject_id, "modality": c.modality.upper(), "site": c.site,
                           "detector": c.stage, "TP": c.evaluation.row["n_tp"], "FP": c.evaluation.row["n_fp"],
                           "FN": c.evaluation.row["n_fn"]} for c in cases])
    note = "" if not empty else "No test subject shows " + "; ".join(empty) + ": the viewer leaves those out."
    return ViewerCases(tuple(cases), table, note, stages[0][1])


@dataclass(frozen=True)
class CohortExample:
    """Notebook 01's viewer subject: its images, CMB mask and mimic map on the canonical grid."""

    subject_id: str
    modality: str
    site: str
    images: tuple[tuple[str, np.ndarray], ...]
    affine: np.ndarray
    cmb_mask: np.ndarray
    mimic: np.ndarray

    @property
    def key(self) -> str:
        return f"sub-{self.subject_id}"

    @property
    def title(self) -> str:
        return f"sub-{self.subject_id} ({self.modality.upper()}, {self.site})"


def select_cohort_example(data_root: Path | str, modality: str = "swi") -> CohortExample:
    """The ``modality`` subject of ``data_root`` with the most kinds of mimic, then the most CMBs (lowest id on ties).

    Raises:
        InputError: no subject of that modality with a CMB mask and a mimic map.
    """
    def canonical(image: nib.Nifti1Image) -> np.ndarray:
        return np.asarray(nib.as_closest_canonical(image).dataobj)

    best = None
    for subject in load_subjects(Path(data_root)):
        if subject.modality != modality or subject.mask_path is None or "mimic" not in subject.extra_paths:
            continue
        mimic = canonical(nib.load(subject.extra_paths["mimic"]))  # labels 0-4 (MIMIC_LABELS), not a binary mask
        mask = canonical(load_mask(subject.mask_path, what="reference CMB mask")) > 0
        n_cmb = ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]
        rank = (-len(set(np.unique(mimic).tolist()) - {0}), -n_cmb, subject.subject_id)
        if best is None or rank < best[0]:
            best = (rank, subject, mask, mimic)
    if best is None:
        raise InputError(f"{data_root} has no {modality} subject with a CMB mask and a mimic map")
    _, subject, mask, mimic = best
    magnitude = np.asarray(nib.as_closest_canonical(load_image(subject.image_path)).dataobj, dtype=np.float32)
    images, affine = _canonical_images(subject, magnitude)
    return CohortExample(subject.subject_id, subject.modality, subject.site, images, affine, mask,
                         mimic.astype(np.int64))
