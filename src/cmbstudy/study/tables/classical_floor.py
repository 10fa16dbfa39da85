"""The classical floor of Tables 2 and 4: the LoG detector tuned where the networks are calibrated.

The detector (:mod:`cmbstudy.models.baselines.classical`) has no weights; its two
thresholds are tuned (:func:`cmbstudy.training.classical.tune_classical`, pooled
lesion-wise F1) on the validation subjects of a fold, the subjects on which each
network's operating point is chosen, and it is scored on the test set with the
paper's rule, as the networks are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ...data.run_folder import SPLIT
from ...data.splits import load_splits, select_fold
from ...errors import InputError
from ...evaluation.matching import match_paper, pred_is_tp
from ...evaluation.scores import FrocCurve, compute_froc
from ...evaluation.subsets import SMALL_DIAMETER_MM
from ...models.baselines.classical import ClassicalParams, detect_classical
from ...training.classical import DetectionCase, tune_classical
from ..runs import run_path
from .format import CLASSICAL
from .methods import MethodResult

__all__ = ["compute_classical_result", "load_fold_splits"]


def _classical_fold(cases: Mapping[str, DetectionCase], val_ids: Sequence[str],
                    test: Sequence[tuple[str, DetectionCase]], ref_diameters_mm: Mapping[str, np.ndarray], fold: int,
                    max_distance: float) -> tuple[list[dict[str, Any]], FrocCurve | None, pd.DataFrame, str]:
    tuning = [cases[i] for i in val_ids if i in cases]
    if not tuning or not test:
        raise InputError(f"fold {fold}: {len(tuning)} validation and {len(test)} test subjects have an image, "
                         "brain mask and CMB mask; the classical detector needs both sets")
    params, _ = tune_classical(tuning, max_distance=max_distance)
    loose = ClassicalParams(params.sigmas_mm, 0.0, params.darkness, params.edge_mm)
    rows, scores, outcomes, lesions = [], [], [], []
    for subject_id, case in test:
        detection = detect_classical(case.image, case.brain, case.voxel_mm, loose)
        match = match_paper(detection.centroids[detection.peak_scores >= params.threshold], case.ref_centroids,
                            max_distance)
        small = np.asarray(ref_diameters_mm[subject_id]) <= SMALL_DIAMETER_MM
        rows.append({"subject_id": subject_id, "n_ref": len(case.ref_centroids), "n_tp": match.n_tp,
                     "n_fp": match.n_fp, "n_fn": match.n_fn, "n_fp_small": match.n_fp,
                     "n_tp_small": int(small[match.pairs[:, 1]].sum()) if match.n_tp else 0,
                     "n_fn_small": int(small[match.fn].sum()) if match.n_fn else 0})
        detected = np.zeros(len(case.ref_centroids), dtype=bool)
        detected[match.pairs[:, 1]] = True
        lesions.append(pd.DataFrame({"subject_id": subject_id, "diameter_mm": ref_diameters_mm[subject_id],
                                     "detected": detected}))
        scores.append(detection.peak_scores)  # FROC: every candidate, matched once, ranked by its score
        outcomes.append(pred_is_tp(match_paper(detection.centroids, case.ref_centroids, max_distance),
                                   len(detection.peak_scores)))
    n_ref = sum(r["n_ref"] for r in rows)
    froc = compute_froc(scores, outcomes, n_ref, len(rows)) if n_ref else None
    setting = (f"fold {fold}: tuned on {len(tuning)} validation subjects, threshold {params.threshold:g}, "
               f"darkness {params.darkness:g}")
    return rows, froc, pd.concat(lesions, ignore_index=True), setting


def compute_classical_result(cases: Sequence[DetectionCase], ids: Sequence[str],
                             splits: Mapping[int, Mapping[str, Sequence[str]]],
                             test_cases: Sequence[DetectionCase], test_ids: Sequence[str],
                             test_diameters_mm: Mapping[str, np.ndarray], max_distance: float = 4.0
                             ) -> tuple[MethodResult, pd.DataFrame]:
    """Tune the LoG detector on the first fold's validation subjects and score it on the test set.

    The detector reports points, not components, so its false positives are counted
    in the <= 3 mm subset at every size (the subset's precision is a lower bound).
    Its FROC ranks every candidate by its score, below the tuned threshold too.

    Args:
        cases, ids: :func:`cmbstudy.training.classical.load_detection_cases` of the training dataset.
        splits: fold -> {"train": ids, "val": ids} (``RUN/split.json``, :func:`load_fold_splits`);
            the first fold is used, as the networks' comparison fold.
        test_cases, test_ids: the same of the test set.
        test_diameters_mm: test subject id -> (n_ref,) diameter (mm) of each reference component,
            in the order of ``case.ref_centroids`` (:func:`cmbstudy.evaluation.evaluate.load_reference_diameters`).
        max_distance: paper rule match distance (voxels).

    Returns:
        the result on the test set and a per-lesion table (subject_id, diameter_mm, detected).

    Raises:
        InputError: no fold, or no validation or test subject with a detection case.
    """
    if not splits:
        raise InputError("compute_classical_result needs at least one fold split: train a run of the fold first")
    fold, split = next(iter(splits.items()))
    test = list(zip(test_ids, test_cases))
    rows, froc, lesions, setting = _classical_fold(dict(zip(ids, cases)), split["val"], test, test_diameters_mm,
                                                   fold, max_distance)
    note = f"tuned on validation subjects ({setting}); no weights; <= 3 mm FP counted at every size"
    result = MethodResult(CLASSICAL, tuple(rows), froc, None, float("nan"), (fold,), note=note)
    return result, lesions


def load_fold_splits(results_dir: str | Path, variants: Sequence[str], folds: Sequence[int]
                     ) -> dict[int, dict[str, list[str]]]:
    """fold -> {"train", "val"} subject ids, from the ``split.json`` of the first run found per fold.

    Every run of the study draws its folds from the profile's seed, so any run of a fold holds
    that fold's split. Folds with no run are left out.
    """
    out = {}
    for fold in folds:
        paths = [run_path(results_dir, v, fold) / SPLIT for v in variants]
        found = [p for p in paths if p.is_file()]
        if found:
            out[int(fold)] = select_fold(load_splits(found[0])["folds"], int(fold))
    return out
