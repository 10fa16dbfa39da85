"""The LoG floor with the second look (blob candidates scored by a run's image model, no network at all), and
one slice of the two looks of a run.

A row of the "one look or two" chapter (:mod:`cmbstudy.study.tables.looks`): the
classical detector's strongest dark blobs (:func:`cmbstudy.inference.candidates.find_candidates`
with an empty network map), each scored by the run's image model alone
(:meth:`cmbstudy.inference.second_look.SecondLook.image_score`, trained on the
blobs of the run's training subjects; the blobs that its screen drops score 0). Its threshold is the one with the best
lesion-wise F1 on the run's validation subjects
(:func:`cmbstudy.training.second_look.best_threshold`), so no test subject
chooses anything. It shows what the second look does without the network: if
it came close to the network with the second look, the network would add little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from ...config import Profile
from ...data.datasets import Subject, load_subjects
from ...data.io import load_mask, load_phase, load_scan
from ...data.prediction_folder import prediction_path
from ...data.run_folder import load_run_split
from ...evaluation.evaluate import load_lesion_table
from ...evaluation.lesions import find_lesions, voxel_volume_mm3
from ...evaluation.matching import match_paper
from ...evaluation.scores import summarize_detection
from ...evaluation.stats import bootstrap_detection_ci
from ...evaluation.subsets import compute_reference_diameters
from ...inference.candidates import find_candidates, keep_best
from ...inference.model_store import load_detection_model
from ...inference.second_look import SecondLook, candidate_features
from ...preprocessing.cache import default_cache_dir, load_preprocessed
from ...training.second_look import SecondLookCase, best_threshold, collect_candidates
from ..runs import TEST_PREDICTIONS

__all__ = ["LogFloor", "log_floor_second_look", "CandidateExample", "candidate_example"]


@dataclass(frozen=True)
class LogFloor:
    """The LoG floor with a run's second look on the test subjects.

    Attributes:
        summary: pooled precision, recall, F1, FP per subject with ``ci95`` (an evaluation summary's shape).
        outcomes: per reference CMB: subject_id, diameter_mm, detected.
        threshold: the image model's score threshold, chosen on the run's validation subjects.
        validation: the scores there at that threshold.
        candidates_per_subject: blobs looked at per test subject.
    """

    summary: dict
    outcomes: pd.DataFrame
    threshold: float
    validation: dict
    candidates_per_subject: float


def _blob_case(subject: Subject, profile: Profile, cache: Path) -> tuple[SecondLookCase, np.ndarray]:
    """A subject as the second look sees it, with an empty network map; and its scan's affine."""
    volume = load_preprocessed([subject], profile.preprocess, cache, progress=False)[0]
    scan = load_scan(subject.image_path)[0]
    image = np.asarray(scan.dataobj, dtype=np.float32)
    reference = np.asarray(load_mask(subject.mask_path).dataobj)
    return (SecondLookCase(np.zeros(image.shape, np.float32), image, volume.input_brain(), volume.input_voxel_mm,
                           reference, load_phase(subject.image_path, scan)), np.asarray(scan.affine, dtype=float))


def _kept(second: SecondLook, case: SecondLookCase, threshold: float, connectivity: int) -> tuple[np.ndarray, int]:
    """The centres of the blobs the image model keeps at ``threshold`` (duplicates suppressed); how many it looked
    at (past the screen)."""
    s = second.settings
    candidates = find_candidates(case.probability, case.image, case.brain, case.voxel_mm, s.candidate_threshold,
                                 s.log_candidates, connectivity)
    scores = second.image_score(candidate_features(candidates, case.probability, case.brain, case.voxel_mm,
                                                   case.phase))
    return (candidates.centres[keep_best(candidates.centres, scores, threshold, second.merge_distance)],
            int(np.count_nonzero(scores > 0)))


def log_floor_second_look(run_dir: Path | str, data_root: Path | str, test_root: Path | str, profile: Profile,
                          subject_ids: Sequence[str] | None = None) -> LogFloor | None:
    """The LoG floor with the second look of ``run_dir`` on its test subjects (None: the run has no second look).

    Args:
        run_dir: a training run with a second look (``RUN/second_look.joblib``).
        data_root: the run's training pool (its validation subjects choose the threshold).
        test_root: the test cohort; the run's predicted test subjects (``RUN/pred-test``) are scored,
            or ``subject_ids``.
    """
    run_dir = Path(run_dir)
    model = load_detection_model(run_dir)
    second = model.second_look
    if second is None:
        return None
    ev, cache = profile.evaluation, default_cache_dir(run_dir)
    pool = {s.subject_id: s for s in load_subjects(Path(data_root))}
    validation = [_blob_case(pool[i], model.profile, cache)[0] for i in load_run_split(run_dir, "val")]
    found = collect_candidates(validation, second.settings, ev.match_distance_voxels, ev.connectivity)
    scores = second.image_score(found.features) if len(found.labels) else np.zeros(0)
    threshold, chosen = best_threshold(found, scores, ev.match_distance_voxels)
    wanted = set(subject_ids) if subject_ids is not None else {
        folder.name.removeprefix("sub-") for folder in (run_dir / TEST_PREDICTIONS).glob("sub-*")}
    counts, outcomes, seen = [], [], []
    for subject in load_subjects(Path(test_root)):
        if subject.subject_id not in wanted or subject.mask_path is None:
            continue
        case, affine = _blob_case(subject, model.profile, cache)
        centres, n_candidates = _kept(second, case, threshold, ev.connectivity)
        ref = find_lesions(case.reference, 0.5, ev.connectivity)
        table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
        diameters = compute_reference_diameters(ref, voxel_volume_mm3(affine), table)
        match = match_paper(centres, ref.centroids, ev.match_distance_voxels)
        counts.append((match.n_tp, match.n_fp, match.n_fn))
        found_refs = set(match.pairs[:, 1].tolist()) if len(match.pairs) else set()
        outcomes += [{"subject_id": subject.subject_id, "diameter_mm": float(d), "detected": i in found_refs}
                     for i, d in enumerate(diameters)]
        seen.append(n_candidates)
    summary = summarize_detection(counts)
    if counts:
        summary["ci95"] = {k: [lo, hi] for k, (_, lo, hi) in bootstrap_detection_ci(
            counts, n_resamples=ev.n_bootstrap, seed=profile.seed).items()}
    return LogFloor(summary, pd.DataFrame(outcomes, columns=["subject_id", "diameter_mm", "detected"]),
                    float(threshold), dict(chosen), float(np.mean(seen)) if seen else math.nan)


@dataclass(frozen=True)
class CandidateExample:
    """One axial slice of a test subject with the first look's candidates and the second look's verdicts.

    Attributes:
        image: (X, Y) slice of the scan on its input grid; z: its index; subject_id: whose.
        points: kind (:data:`cmbstudy.figures.candidates.CANDIDATE_STYLES`) -> (n, 2) (x, y) of the
            candidates and reference CMBs within one slice of ``z``.
        n_candidates: candidates of the whole volume; n_looked_at: those past the screen; n_kept: those the
            second look kept.
    """

    subject_id: str
    z: int
    image: np.ndarray
    points: dict
    n_candidates: int
    n_looked_at: int
    n_kept: int

    @property
    def title(self) -> str:
        """The figure's title: whose slice."""
        return f"sub-{self.subject_id}, slice {self.z}: the first look and the second"


def candidate_example(run_dir: Path | str, test_root: Path | str, profile: Profile) -> CandidateExample | None:
    """The test subject with the most reference CMBs, on the slice holding most of them (None: no second look).

    The network's map is the run's single-stage prediction (``RUN/pred-test``); candidates,
    scores and the kept ones are those of the run's lesion rule with two stages.
    """
    run_dir = Path(run_dir)
    model = load_detection_model(run_dir)
    second, point = model.second_look, model.operating_point
    if second is None or point.second_look is None:
        return None
    ev, cache = profile.evaluation, default_cache_dir(run_dir)
    subjects = [s for s in load_subjects(Path(test_root))
                if s.mask_path is not None and prediction_path(run_dir / TEST_PREDICTIONS, s.subject_id).is_file()]
    if not subjects:
        return None
    references = {s.subject_id: find_lesions(np.asarray(load_mask(s.mask_path).dataobj), 0.5, ev.connectivity)
                  for s in subjects}
    subject = max(subjects, key=lambda s: (references[s.subject_id].n, s.subject_id))
    ref = references[subject.subject_id]
    case, _ = _blob_case(subject, model.profile, cache)
    probability = np.asarray(nib.load(prediction_path(run_dir / TEST_PREDICTIONS, subject.subject_id)).dataobj,
                             dtype=np.float32)
    s = second.settings
    candidates = find_candidates(probability, case.image, case.brain, case.voxel_mm, s.candidate_threshold,
                                 s.log_candidates, ev.connectivity)
    scores = second.score(candidate_features(candidates, probability, case.brain, case.voxel_mm, case.phase))
    kept = np.zeros(candidates.n, bool)
    kept[keep_best(candidates.centres, scores, point.second_look, second.merge_distance)] = True
    slices = np.rint(ref.centroids[:, 2]).astype(int) if ref.n else np.array([case.image.shape[2] // 2])
    z = int(np.bincount(slices).argmax())
    near = lambda xyz: np.abs(xyz[:, 2] - z) <= 1  # noqa: E731  (within one slice of the one shown)
    gaps = (np.linalg.norm(candidates.centres[:, None] - ref.centroids[None], axis=2).min(axis=1)
            if ref.n and candidates.n else np.full(candidates.n, np.inf))
    on_cmb = gaps <= ev.match_distance_voxels
    centres = candidates.centres
    looked = scores > 0  # past the screen
    points = {"screened out": centres[~looked & near(centres)][:, :2],
              "dropped": centres[looked & ~kept & near(centres)][:, :2],
              "kept, CMB": centres[kept & on_cmb & near(centres)][:, :2],
              "kept, not a CMB": centres[kept & ~on_cmb & near(centres)][:, :2],
              "reference": ref.centroids[near(ref.centroids)][:, :2] if ref.n else np.zeros((0, 2))}
    return CandidateExample(subject.subject_id, z, case.image[:, :, z], points, candidates.n, int(looked.sum()),
                            int(kept.sum()))
