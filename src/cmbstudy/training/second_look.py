"""Training the second look: an image model on training subjects, a combiner on validation subjects.

A candidate (:mod:`cmbstudy.inference.candidates`) is labelled a CMB when it
is the nearest candidate to a reference lesion's centroid, within the paper's
match distance; other candidates within that distance of a reference are left
out of training (a noise blob beside a CMB is neither one, and at detection the
best scored of them stands for the lesion); the rest are labelled not a CMB.
No mimic label or site is used, so it trains the same way on real data. Two models, so that nothing is scored by a network on its own training
subjects:

1. the image model (scikit-learn's gradient boosting on the image features, and
   a small 3D CNN on each candidate's patch,
   :func:`~cmbstudy.training.patch_model.fit_patch_model`) is trained on the
   blob candidates of the run's training subjects, found with no network at
   all, so runs with the same training subjects share it
   (:mod:`cmbstudy.training.fit_cache`);
2. the combiner of the image model's score with the network's features is
   trained on the candidates of the validation subjects, which the network never
   saw. A blob that the image model's gradient boosting gives less than
   ``second_look.screen_probability`` is dropped by the screen
   (:func:`~cmbstudy.inference.second_look.screened`) and scores 0, as at
   detection; the combiner still learns from it. Each kind of
   ``second_look.classifiers`` (gradient boosting, logistic regression) is
   scored out of fold over subject folds of them, the folds drawn
   ``second_look.cv_repeats`` times; the threshold on its score with the best
   lesion-wise F1 (paper rule, after
   :func:`~cmbstudy.inference.candidates.suppress_duplicates`), pooled over the
   draws, is its operating point, and the kind with the best F1 is refitted on
   every validation candidate. With a dozen validation subjects one draw of the
   folds moves the chosen threshold by chance; the draws average that out.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..config import SecondLookConfig
from ..data.datasets import Subject, describe_dataset, load_subjects
from ..data.io import load_mask, load_phase, load_scan
from ..data.outputs import save_nifti
from ..errors import ConfigError, InputError, OutputError
from ..evaluation.lesions import find_lesions
from ..evaluation.matching import match_paper
from ..evaluation.operating_point import OperatingPoint
from ..evaluation.scores import summarize_detection
from ..inference.candidates import find_candidates, keep_best_at
from ..inference.model_store import DetectionModel, packaged_model_path, second_look_path
from ..inference.second_look import (IMAGE_COLUMNS, THRESHOLDS, SecondLook, boosted_scores, candidate_features,
                                     image_scores, save_second_look, screened, stack_scores)
from ..inference.sliding_window import predict_volume
from ..models.patch_net import PatchNet
from ..preprocessing.cache import default_cache_dir, load_preprocessed
from .fit_cache import fit_key, load_or_fit
from .patch_model import fit_patch_model

__all__ = ["CLASSIFIERS", "SecondLookCase", "CandidateSet", "make_classifier", "collect_candidates", "recall_ceiling",
           "best_threshold", "fit_image_model", "fit_second_look", "SecondLookSummary", "train_model_second_look"]

CLASSIFIERS: tuple[str, ...] = ("boosting", "logistic")


@dataclass(frozen=True)
class SecondLookCase:
    """One validation subject on its input grid: what the second look sees, and its reference."""

    probability: np.ndarray  # (X, Y, Z) the network's probability map
    image: np.ndarray  # (X, Y, Z) the scan (magnitude) as read
    brain: np.ndarray  # (X, Y, Z) bool brain mask
    voxel_mm: tuple[float, float, float]  # voxel sizes (mm)
    reference: np.ndarray  # (X, Y, Z) binary CMB mask
    phase: np.ndarray | None = None  # (X, Y, Z) the phase image beside the scan, None where there is none


@dataclass(frozen=True)
class CandidateSet:
    """Every candidate of a set of subjects, with its features and label."""

    features: np.ndarray  # (n, N_COLUMNS): named features, then patches (inference.features.candidate_features)
    labels: np.ndarray  # (n,) 1: the nearest to a reference CMB; 0: none within the match distance; -1: beside one
    subjects: np.ndarray  # (n,) index of the subject
    centres: list[np.ndarray]  # per subject, (n_s, 3) candidate centres
    references: list[np.ndarray]  # per subject, (m_s, 3) reference centroids
    recall_ceiling: float  # share of reference CMBs with a candidate within the match distance


def make_classifier(kind: str, seed: int, small: bool = False) -> Any:
    """A scikit-learn classifier of ``kind`` ("boosting" or "logistic"), seeded; ``small`` for a few hundred
    candidates (the combiner): shallower trees, fewer rounds.

    Raises:
        ConfigError: an unknown kind.
    """
    if kind == "boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        if small:
            return HistGradientBoostingClassifier(max_iter=60, learning_rate=0.05, max_depth=2, min_samples_leaf=8,
                                                  l2_regularization=1.0, random_state=seed)
        return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15,
                                              min_samples_leaf=10, l2_regularization=1.0, random_state=seed)
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    raise ConfigError(f"second-look classifier {kind!r}: use one of {', '.join(CLASSIFIERS)}")


def recall_ceiling(found: CandidateSet, keep: np.ndarray, match_distance: float) -> float:
    """The share of ``found``'s reference CMBs with a candidate where ``keep`` is True within ``match_distance``."""
    reached = 0
    for s, ref in enumerate(found.references):
        kept = found.centres[s][np.asarray(keep, bool)[found.subjects == s]]
        if len(ref) and len(kept):
            reached += int((np.linalg.norm(kept[:, None] - ref[None], axis=2).min(axis=0) <= match_distance).sum())
    total = sum(len(ref) for ref in found.references)
    return reached / total if total else math.nan


def collect_candidates(cases: Sequence[SecondLookCase], settings: SecondLookConfig, match_distance: float,
                       connectivity: int = 26) -> CandidateSet:
    """Candidates, features and labels of ``cases`` (the module docstring)."""
    features, labels, subjects, centres, references = [], [], [], [], []
    found = total = 0
    for index, case in enumerate(cases):
        candidates = find_candidates(case.probability, case.image, case.brain, case.voxel_mm,
                                     settings.candidate_threshold, settings.log_candidates, connectivity)
        ref = find_lesions(np.asarray(case.reference), 0.5, connectivity).centroids
        if len(ref) and candidates.n:
            gaps = np.linalg.norm(candidates.centres[:, None] - ref[None], axis=2)
            label = np.where(gaps.min(axis=1) <= match_distance, -1, 0)
            reached = gaps.min(axis=0) <= match_distance
            label[np.argmin(gaps, axis=0)[reached]] = 1
            labels.append(label)
            found += int(reached.sum())
        else:
            labels.append(np.zeros(candidates.n, int))
        total += len(ref)
        features.append(candidate_features(candidates, case.probability, case.brain, case.voxel_mm, case.phase))
        subjects.append(np.full(candidates.n, index))
        centres.append(candidates.centres)
        references.append(ref)
    return CandidateSet(np.concatenate(features) if features else np.zeros((0, 0)),
                        np.concatenate(labels) if labels else np.zeros(0, int),
                        np.concatenate(subjects) if subjects else np.zeros(0, int), centres, references,
                        found / total if total else math.nan)


def best_threshold(found: CandidateSet, scores: np.ndarray | Sequence[np.ndarray], match_distance: float
                   ) -> tuple[float, dict]:
    """The score threshold with the best pooled F1 (paper rule; ties: fewer FPs, then higher), and its scores.

    ``scores``: one score per candidate, or several such arrays (out-of-fold draws), whose counts are pooled:
    FPs per subject are then the mean over the draws.
    """
    draws = np.atleast_2d(np.asarray(scores, dtype=np.float64))  # (draws, candidates)
    # per draw and subject: its candidates' centres, its reference centroids, and the candidates kept at each
    # threshold (duplicates suppressed once per subject, not once per threshold)
    kept = [(centres, ref, keep_best_at(centres, drawn[found.subjects == s], THRESHOLDS, match_distance))
            for drawn in draws for s, (centres, ref) in enumerate(zip(found.centres, found.references))]
    best: tuple[tuple[float, ...], float, dict] | None = None
    for i, threshold in enumerate(THRESHOLDS):
        counts = []
        for centres, ref, at in kept:
            match = match_paper(centres[at[i]], ref, match_distance)
            counts.append((match.n_tp, match.n_fp, match.n_fn))
        summary = summarize_detection(counts)
        if math.isnan(summary["f1"]):
            continue
        key = (summary["f1"], -summary["fp_per_subject"], threshold)
        if best is None or key > best[0]:
            best = (key, float(threshold),
                    {k: float(summary[k]) for k in ("precision", "recall", "f1", "fp_per_subject")})
    if best is None:
        return 0.5, {}
    return best[1], best[2]


def _out_of_fold(kind: str, inputs: np.ndarray, found: CandidateSet, n_splits: int, seed: int,
                 groups: np.ndarray | None = None, draw: int = 0) -> np.ndarray:
    """Each candidate's score from a combiner fitted on the other subject folds (scikit-learn's GroupKFold, its
    folds shuffled by ``seed`` and ``draw``); ``groups`` (per case) keeps the cases of one person in one fold (a
    scan and its skull-stripped twin)."""
    from sklearn.model_selection import GroupKFold

    scores = np.zeros(len(found.labels))
    by_candidate = found.subjects if groups is None else np.asarray(groups)[found.subjects]
    n_groups = len(np.unique(by_candidate))
    shuffle = int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])
    folds = GroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=shuffle)
    for train, held in folds.split(inputs, found.labels, by_candidate):
        train = train[found.labels[train] >= 0]
        if len(np.unique(found.labels[train])) < 2:
            scores[held] = float(found.labels[train].mean()) if len(train) else 0.0
            continue
        model = make_classifier(kind, seed, small=True).fit(inputs[train], found.labels[train])
        scores[held] = model.predict_proba(inputs[held])[:, 1]
    return scores


def _enough(found: CandidateSet) -> bool:
    return (found.labels == 1).sum() >= 2 and (found.labels == 0).sum() >= 2


def fit_image_model(blobs: CandidateSet, seed: int) -> Any:
    """The image model (gradient boosting, :func:`make_classifier`) fitted on the image features of ``blobs``,
    candidates beside a CMB (label -1) left out."""
    known = blobs.labels >= 0
    inputs = blobs.features[known, IMAGE_COLUMNS]
    # a feature no training scan has (the phase, where none has a phase image) is constant here, so that the
    # model never splits on it; scikit-learn's binning cannot take a column with no value at all
    inputs = np.where(np.isnan(inputs).all(axis=0), 0.0, inputs)
    return make_classifier("boosting", seed).fit(inputs, blobs.labels[known])


def _fit_image_models(training: Sequence[SecondLookCase], settings: SecondLookConfig, match_distance: float,
                      connectivity: int, seed: int) -> tuple[Any, PatchNet | None, int, int]:
    """The image model fitted on the blobs of ``training`` (gradient boosting, patch CNN or None, and the number of
    blobs and of CMBs among them); the models are None where too few blobs of either kind."""
    blank = [dataclasses.replace(c, probability=np.zeros_like(c.probability)) for c in training]
    blobs = collect_candidates(blank, settings, match_distance, connectivity)
    counts = int(len(blobs.labels)), int((blobs.labels == 1).sum())
    if not _enough(blobs):
        return None, None, *counts
    patch_model = fit_patch_model(blobs, seed) if settings.patch_model else None
    return fit_image_model(blobs, seed), patch_model, *counts


def fit_second_look(cases: Sequence[SecondLookCase], training: Sequence[SecondLookCase], settings: SecondLookConfig,
                    point: OperatingPoint, match_distance: float, seed: int, groups: Sequence[int] | None = None,
                    cache: Path | None = None) -> tuple[SecondLook | None, OperatingPoint, dict[str, Any]]:
    """Train the second look and set its threshold in the run's lesion rule ``point`` (the module docstring).

    Args:
        cases: the validation subjects, with the network's probability maps.
        training: the training subjects (their probability maps are not used: the image model sees blobs only).
        groups: per case of ``cases``, the person it is (None: each case its own): the out-of-fold folds keep
            a person's cases together.
        cache: a folder where the image model is kept under the hash of what it is fitted on
            (:func:`~cmbstudy.training.fit_cache.load_or_fit`), for runs with the same training subjects to
            share; None: always fitted.

    Returns:
        The second look (None when either set holds too few candidates of either kind to learn from),
        ``point`` with its ``second_look`` threshold (unchanged without one), and a report: candidates,
        recall ceiling, and each combiner's out-of-fold threshold and scores.
    """
    arrays = [a for c in training for a in (c.image, c.brain, c.reference, c.phase, np.asarray(c.voxel_mm))]
    key = fit_key(arrays, {"fit": "second-look image model", "settings": dataclasses.asdict(settings),
                           "match_distance": match_distance, "connectivity": point.connectivity, "seed": seed})
    image_model, patch_model, n_blobs, n_blob_cmbs = load_or_fit(
        cache, key, lambda: _fit_image_models(training, settings, match_distance, point.connectivity, seed))
    found = collect_candidates(cases, settings, match_distance, point.connectivity)
    report: dict[str, Any] = {"n_subjects": len(cases), "n_candidates": int(len(found.labels)),
                              "n_candidate_cmbs": int((found.labels == 1).sum()), "recall_ceiling": found.recall_ceiling,
                              "n_training_subjects": len(training), "n_training_blobs": n_blobs,
                              "n_training_blob_cmbs": n_blob_cmbs, "image_model_key": key, "classifiers": {}}
    looked, boosted = np.ones(len(found.labels), bool), None
    if image_model is not None and len(found.labels):
        boosted = boosted_scores(image_model, found.features)
        looked = screened(found.features, boosted, settings.screen_probability)
        report.update({"n_looked_at": int(looked.sum()),
                       "screened_recall_ceiling": recall_ceiling(found, looked, match_distance)})
    if len(cases) < 2 or not _enough(found) or image_model is None:
        report["note"] = "too few candidates of either kind to learn from: one stage kept"
        return None, point, report
    inputs = stack_scores(image_scores(image_model, patch_model, found.features, boosted), found.features)
    for kind in settings.classifiers:
        # the combiner learns from every candidate; a blob that the screen drops scores 0, as at detection
        draws = [np.where(looked, _out_of_fold(kind, inputs, found, settings.cv_splits, seed, groups, draw), 0.0)
                 for draw in range(max(1, settings.cv_repeats))]
        threshold, summary = best_threshold(found, draws, match_distance)
        report["classifiers"][kind] = {"threshold": threshold, **summary}
    ranked = sorted(report["classifiers"].items(), key=lambda kv: (kv[1].get("f1", -1.0),
                                                                   -kv[1].get("fp_per_subject", math.inf)),
                    reverse=True)
    kind, chosen = ranked[0]
    report["chosen"] = kind
    known = found.labels >= 0
    combiner = make_classifier(kind, seed, small=True).fit(inputs[known], found.labels[known])
    second = SecondLook(kind, combiner, image_model, settings, float(match_distance), float(chosen["threshold"]),
                        {"out_of_fold": chosen, "recall_ceiling": found.recall_ceiling}, patch_model=patch_model)
    validation = {**dict(point.validation or {}), "second_look": chosen}
    return second, dataclasses.replace(point, second_look=float(chosen["threshold"]), validation=validation), report


@dataclass(frozen=True)
class SecondLookSummary:
    """What :func:`train_model_second_look` wrote (printed by ``cmbstudy second-look``)."""

    model: str  # the model's source
    path: Path  # the second look written
    report: dict[str, Any]  # as :func:`fit_second_look` reports

    def __str__(self) -> str:
        r = self.report
        chosen = r["classifiers"][r["chosen"]]
        return (f"second look of {self.model} -> {self.path}\n"
                f"  {r['n_candidates']} candidates on {r['n_subjects']} validation subjects (recall ceiling "
                f"{r['recall_ceiling']:.3f}), {r.get('n_looked_at', r['n_candidates'])} past the screen (recall "
                f"ceiling {r.get('screened_recall_ceiling', r['recall_ceiling']):.3f}); image model on "
                f"{r['n_training_blobs']} blobs of "
                f"{r['n_training_subjects']} subjects\n"
                f"  {r['chosen']} at {chosen['threshold']:g}: out-of-fold precision {chosen['precision']:.3f}, "
                f"recall {chosen['recall']:.3f}, F1 {chosen['f1']:.3f}, {chosen['fp_per_subject']:.2f} FP per subject")


def _stripped_twin(subject: Subject, image: np.ndarray, brain: np.ndarray, affine: np.ndarray, folder: Path) -> Subject:
    """The subject's scan times its brain mask, written under ``folder``, with no brain mask: a scan as VALDO
    ships them, which ``detect`` takes with the non-zero voxels as the brain."""
    path = folder / f"sub-{subject.subject_id}stripped.nii.gz"
    save_nifti(np.where(brain, image, 0.0).astype(np.float32), affine, path, np.float32)
    return dataclasses.replace(subject, subject_id=f"{subject.subject_id}stripped", image_path=path,
                               brain_mask_path=None, extra_paths={})


def train_model_second_look(model: DetectionModel, data_root: Path, out: Path, validation_fraction: float = 0.5,
                            seed: int = 0, overwrite: bool = False, progress: bool = True,
                            skull_stripped: bool = True) -> SecondLookSummary:
    """Train a second look for a trained model on a labelled dataset: ``cmbstudy second-look``.

    The subjects of ``data_root`` are split with ``seed``: ``validation_fraction`` of them are the
    combiner's (the model predicts them; none may be a subject it was trained on), the rest the image
    model's. Written to ``out/<model stem>.second_look.joblib`` (and its ``.json``), where
    :func:`~cmbstudy.inference.model_store.load_detection_model` finds it beside a model file of that stem.

    With ``skull_stripped``, every subject is seen twice: as given (with its phase image, where it has one), and
    skull-stripped with no brain mask and no phase
    (its scan times its brain mask; the brain is then the non-zero voxels, as ``detect`` finds it on such
    scans), so that the second look knows the edge of a stripped brain. A subject and its twin stay on
    one side of the split and in one out-of-fold fold.

    Raises:
        InputError: fewer than four subjects with a CMB mask.
        ConfigError: a validation fraction outside (0, 1).
        OutputError: the second look exists and ``overwrite`` is false.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(f"validation fraction {validation_fraction!r} must lie in (0, 1), e.g. 0.5")
    subjects = [s for s in load_subjects(Path(data_root)) if s.mask_path is not None]
    if len(subjects) < 4:
        raise InputError(f"{data_root} holds {len(subjects)} subjects with a CMB mask: a second look needs at least 4")
    source = Path(model.source) if not model.source.startswith("packaged:") else packaged_model_path()
    target = Path(out) / second_look_path(Path(source)).name
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists: pass --overwrite to replace it")
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_val = min(max(2, int(round(validation_fraction * len(subjects)))), len(subjects) - 2)
    validation, training = [subjects[i] for i in order[:n_val]], [subjects[i] for i in order[n_val:]]
    profile, cache, device = model.profile, default_cache_dir(Path(data_root)), torch.device("cpu")
    stripped = dataclasses.replace(profile.preprocess, brain_extraction="nonzero")
    cases, blobs, groups, combined = [], [], [], {s.subject_id for s in validation}
    with tempfile.TemporaryDirectory(prefix="second-look-") as twins:
        for subject in tqdm(validation + training, desc="second look", unit="subject", disable=not progress):
            volume = load_preprocessed([subject], profile.preprocess, cache, progress=False)[0]
            scan = load_scan(subject.image_path)[0]
            image = np.asarray(scan.dataobj, dtype=np.float32)
            reference = np.asarray(load_mask(subject.mask_path).dataobj)
            looks = [(volume, image, load_phase(subject.image_path, scan))]
            if skull_stripped:  # stripped as VALDO ships its scans: no phase beside them
                twin = _stripped_twin(subject, image, volume.input_brain(), np.asarray(scan.affine), Path(twins))
                looks.append((load_preprocessed([twin], stripped, Path(twins) / "cache", progress=False)[0],
                              np.asarray(load_scan(twin.image_path)[0].dataobj, dtype=np.float32), None))
            for seen, pixels, phase in looks:
                if subject.subject_id in combined:
                    prob = predict_volume(model.network, seen, profile.train.val_batch_size, device,
                                          profile.train.patch_size)
                    probability = np.clip(seen.restore(prob, order=1), 0.0, 1.0).astype(np.float32)
                    cases.append(SecondLookCase(probability, pixels, seen.input_brain(), seen.input_voxel_mm,
                                                reference, phase))
                    groups.append(subject.subject_id)
                else:
                    blobs.append(SecondLookCase(np.zeros(pixels.shape, np.float32), pixels, seen.input_brain(),
                                                seen.input_voxel_mm, reference, phase))
    ev = profile.evaluation
    second, _, report = fit_second_look(cases, blobs, profile.second_look, model.operating_point.single_stage,
                                        ev.match_distance_voxels, seed,
                                        groups=[sorted(set(groups)).index(g) for g in groups])
    if second is None:
        raise InputError(f"{data_root}: {report.get('note')}; give more subjects with CMBs")
    provenance = {"model": model.source, "data": describe_dataset(Path(data_root)), "seed": seed,
                  "skull_stripped_twins": skull_stripped,
                  "validation_subjects": [s.subject_id for s in validation],
                  "training_subjects": [s.subject_id for s in training], "report": report}
    provenance["data"].pop("data_root", None)
    Path(out).mkdir(parents=True, exist_ok=True)
    return SecondLookSummary(model.source, save_second_look(second, target, provenance), report)
