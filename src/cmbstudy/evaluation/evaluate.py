"""Lesion-wise evaluation of a prediction folder against a reference dataset (`cmbstudy evaluate`).

Reads the probability maps written by ``cmbstudy predict``
(:mod:`cmbstudy.data.prediction_folder`), thresholds them, takes 3D connected
components (:mod:`~cmbstudy.evaluation.lesions`) and matches them to the
reference CMB masks with the paper's or the VALDO rule
(:mod:`~cmbstudy.evaluation.matching`). Reports pooled and per-subject
precision, recall, F1 and FP per subject, the same restricted to reference
lesions <= 3 mm (paper Table 4, :mod:`~cmbstudy.evaluation.subsets`), FROC
sensitivities, ARIA-H confusion (Table 6) and subject-bootstrap confidence intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from ..config import EvalConfig
from ..data.aria_h import aria_h_category
from ..data.datasets import Subject, load_subjects
from ..data.io import check_same_grid, load_image, load_mask, write_json
from ..data.prediction_folder import (
    find_predictions,
    read_prediction_connectivity,
    read_prediction_match_distance,
    read_prediction_min_voxels,
    read_prediction_threshold,
)
from ..errors import ConfigError, InputError
from .lesions import (
    CONNECTIVITIES,
    Lesions,
    centroids_to_mm,
    equivalent_diameter_mm,
    find_lesions,
    voxel_volume_mm3,
)
from .matching import Match, match_paper, match_valdo, pred_is_tp
from .operating_point import OperatingPoint, apply_operating_point
from .report import EvaluationReport
from .scores import (
    FROC_FP_RATES,
    FrocCurve,
    compute_aria_h_confusion,
    compute_froc,
    detection_scores,
    sensitivity_at_fp_rates,
    summarize_detection,
    summarize_valdo,
)
from .stats import bootstrap_detection_ci
from .subsets import (
    SMALL_DIAMETER_MM,
    compute_lesion_outcomes,
    compute_reference_diameters,
    reference_diameters_mm,
    subset_counts,
)

__all__ = [
    "RULES",
    "DISTANCE_UNITS",
    "VolumeEvaluation",
    "evaluate_volume",
    "load_lesion_table",
    "evaluate_predictions",
    "load_reference_diameters",
    "load_lesion_outcomes",
]

RULES: tuple[str, ...] = ("paper", "valdo")
DISTANCE_UNITS: tuple[str, ...] = ("mm", "voxels")
_DEFAULTS = EvalConfig()


@dataclass(frozen=True)
class VolumeEvaluation:
    """Matching outcome of one subject.

    Attributes:
        pred, ref: components of the thresholded prediction and of the reference mask.
        match: true-positive pairs and unmatched indices (:class:`cmbstudy.evaluation.matching.Match`).
        ref_small, pred_small: (n_ref,), (n_pred,) bool, lesion diameter <= 3 mm.
        row: the per-subject numbers reported (counts, precision, recall, F1, small-lesion counts).
    """

    pred: Lesions
    ref: Lesions
    match: Match
    ref_small: np.ndarray
    pred_small: np.ndarray
    row: dict[str, Any]


def evaluate_volume(
    probability: np.ndarray,
    reference: np.ndarray,
    affine: np.ndarray,
    rule: str = "paper",
    distance: float | None = None,
    threshold: float = 0.5,
    connectivity: int = 26,
    lesion_table: pd.DataFrame | None = None,
    min_voxels: int = 1,
    distance_unit: str = "mm",
) -> VolumeEvaluation:
    """Match the components of one probability map to one reference mask (no file I/O).

    Args:
        probability: (X, Y, Z) predicted probability (or binary mask) on the reference grid.
        reference: (X, Y, Z) binary reference CMB mask.
        affine: 4x4 voxel-to-mm affine of the grid (VALDO distances and voxel volume).
        rule: "paper" (centroids within ``distance`` voxels, default 4, inclusive, one-to-one
            optimal assignment) or "valdo" (centres of mass closer than ``distance``, default
            5 mm, nearest reference, every closest claimant wins: the challenge code's semantics,
            :func:`cmbstudy.evaluation.matching.match_valdo`; F1 NaN without reference).
        distance: match distance; None takes the rule's default from :class:`EvalConfig`.
        threshold: probability threshold (inclusive) before components.
        connectivity: 6, 18 or 26 for both prediction and reference.
        lesion_table: optional synthetic ``lesions.tsv`` (x_vox, y_vox, z_vox, diameter_mm).
        min_voxels: predicted components with fewer voxels are dropped (the operating point's size rule).
        distance_unit: VALDO rule only: ``"mm"`` (scanner mm, the study's) or ``"voxels"`` (voxel
            indices, as the challenge's code measures).

    Raises:
        ConfigError: unknown rule or distance unit, bad connectivity or distance.
        InputError: shapes differ.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown matching rule {rule!r}: use one of {', '.join(RULES)}")
    if probability.shape != reference.shape:
        raise InputError(f"prediction shape {probability.shape} differs from reference shape {reference.shape}")
    if distance is None:
        distance = _DEFAULTS.match_distance_voxels if rule == "paper" else _DEFAULTS.valdo_distance_mm
    pred = apply_operating_point(probability, OperatingPoint(threshold, min_voxels, connectivity=connectivity))
    ref = find_lesions(reference, threshold=0.5, connectivity=connectivity)
    if distance_unit not in DISTANCE_UNITS:
        raise ConfigError(f"distance unit {distance_unit!r}: use one of {', '.join(DISTANCE_UNITS)}")
    if rule == "paper":
        match = match_paper(pred.centroids, ref.centroids, distance)
    elif distance_unit == "voxels":
        match = match_valdo(pred.centroids, ref.centroids, distance)
    else:
        match = match_valdo(
            centroids_to_mm(pred.centroids, affine), centroids_to_mm(ref.centroids, affine), distance
        )
    voxel_mm3 = voxel_volume_mm3(affine)
    ref_small = compute_reference_diameters(ref, voxel_mm3, lesion_table) <= SMALL_DIAMETER_MM
    pred_small = equivalent_diameter_mm(pred.n_voxels, voxel_mm3) <= SMALL_DIAMETER_MM
    precision, recall, f1 = detection_scores(
        match.n_tp, match.n_fp, match.n_fn, nan_f1_without_reference=(rule == "valdo")
    )
    tp_s, fp_s, fn_s = subset_counts(match, ref_small, pred_small)
    row: dict[str, Any] = {
        "n_ref": ref.n, "n_pred": pred.n, "n_tp": match.n_tp, "n_fp": match.n_fp, "n_fn": match.n_fn,
        "precision": precision, "recall": recall, "f1": f1,
        "abs_count_difference": abs(pred.n - ref.n),
        "aria_h_ref": aria_h_category(ref.n), "aria_h_pred": aria_h_category(pred.n),
        "n_ref_small": int(ref_small.sum()), "n_tp_small": tp_s, "n_fp_small": fp_s, "n_fn_small": fn_s,
    }
    return VolumeEvaluation(pred, ref, match, ref_small, pred_small, row)


def _load_probability(path: Path) -> nib.Nifti1Image:
    """Read a probability map (all zero is valid: no detection); values must lie in [0, 1]."""
    img = load_image(path, what="prediction", allow_zero=True)
    data = np.asanyarray(img.dataobj)
    if data.size and (data.min() < 0 or data.max() > 1):
        raise InputError(
            f"prediction {path} has values in [{data.min():g}, {data.max():g}]; "
            "a probability map in [0, 1] is expected"
        )
    return img


def _select_subjects(subjects: Sequence[Subject], pred_dir: Path, predictions: dict[str, Path],
                     only_predicted: bool) -> list[Subject]:
    no_mask = [s.subject_id for s in subjects if s.mask_path is None]
    if no_mask:
        raise InputError(
            f"reference subjects without a CMB mask: {', '.join(no_mask[:10])}: "
            "evaluate against a dataset with CMB masks"
        )
    missing = [s.subject_id for s in subjects if not predictions.get(s.subject_id, Path("")).is_file()]
    if missing and not only_predicted:
        raise InputError(
            f"{len(missing)} reference subject(s) have no prediction in {pred_dir}: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; run `cmbstudy predict` "
            "or `cmbstudy detect` on them, or evaluate only the predicted subjects (--only-predicted)"
        )
    chosen = [s for s in subjects if s.subject_id not in set(missing)]
    if not chosen:
        found = ", ".join(sorted(predictions)[:5]) or "none"
        raise InputError(f"no prediction in {pred_dir} matches a reference subject (predicted subjects: {found}; "
                         f"reference subjects: {', '.join(s.subject_id for s in subjects[:5])}): "
                         "run `cmbstudy predict` or `cmbstudy detect` on the reference dataset")
    return chosen


def load_lesion_table(path: Path) -> pd.DataFrame:
    """A synthetic ``lesions.tsv`` with at least x_vox, y_vox, z_vox, diameter_mm."""
    try:
        table = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"lesion table {path} cannot be read ({exc}): regenerate the cohort") from exc
    missing = sorted({"x_vox", "y_vox", "z_vox", "diameter_mm"} - set(table.columns))
    if missing:
        raise InputError(f"lesion table {path} lacks column(s) {missing}: regenerate the cohort")
    return table


def evaluate_predictions(
    pred_dir: Path,
    ref_root: Path,
    rule: str = "paper",
    distance: float | None = None,
    json_out: Path | None = None,
    threshold: float | None = None,
    connectivity: int = 26,
    only_predicted: bool = False,
    dataset: str | None = None,
    n_bootstrap: int = _DEFAULTS.n_bootstrap,
    seed: int = 0,
    progress: bool = True,
    min_voxels: int | None = None,
    distance_unit: str = "mm",
    eval_config: EvalConfig | None = None,
) -> EvaluationReport:
    """Evaluate every reference subject's prediction lesion-wise.

    Args:
        pred_dir: prediction folder written by ``cmbstudy predict``.
        ref_root: reference dataset root (synthetic, BIDS-like or VALDO layout).
        rule: "paper" or "valdo" (see :func:`evaluate_volume`).
        distance: match distance (paper: voxels, default 4; valdo: mm, default 5).
        json_out: if given, the report is written there as JSON (atomically, NaN as null).
        threshold: probability threshold before connected components (inclusive); None:
            the threshold that ``cmbstudy predict`` used (``PRED/prediction.json``: the run's
            operating point), else 0.5, under either rule (the VALDO rule scores the binary map
            a method reports, and that map is the one at its operating point).
        connectivity: 6, 18 or 26.
        only_predicted: evaluate only reference subjects that have a prediction
            (default: every reference subject must have one). Prediction folders with
            no reference subject are ignored.
        dataset: layout name for :func:`cmbstudy.data.datasets.load_subjects` (None: detect).
        n_bootstrap: subject resamples for the 95% CIs; seed: their seed.
        progress: show a progress bar.
        min_voxels: smallest predicted component kept; None: the size ``cmbstudy predict`` used
            (``PRED/prediction.json``), else 1.
        distance_unit: VALDO rule: ``"mm"`` or ``"voxels"`` (see :func:`evaluate_volume`).
        eval_config: the default distances (``match_distance_voxels``, ``valdo_distance_mm``) when
            ``distance`` is None, e.g. a model's profile with ``--set`` overrides; None: the defaults.

    Raises:
        InputError: missing prediction folder or predictions, a reference without mask,
            a prediction on another grid than its reference, unreadable files.
        ConfigError: unknown rule, bad connectivity or distance.
        OutputError: json_out cannot be written.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown matching rule {rule!r}: use one of {', '.join(RULES)}")
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity {connectivity!r} is not supported: use 6, 18 or 26")
    if threshold is None:  # both rules score the lesions `predict` reported, at its operating point
        threshold = read_prediction_threshold(Path(pred_dir))
    if min_voxels is None:
        min_voxels = read_prediction_min_voxels(Path(pred_dir))
    if not 0 < threshold <= 1:
        raise ConfigError(f"probability threshold {threshold!r} must be in (0, 1], e.g. 0.5")
    cfg = eval_config or _DEFAULTS
    if distance is None:
        distance = cfg.match_distance_voxels if rule == "paper" else cfg.valdo_distance_mm
        if rule == "valdo" and distance_unit == "voxels":
            raise ConfigError("--distance-unit voxels needs --distance (in voxels): the default is in mm")
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"prediction folder {pred_dir} does not exist: run `cmbstudy predict --out {pred_dir}` first")
    predictions = find_predictions(pred_dir)
    subjects = _select_subjects(load_subjects(Path(ref_root), dataset), pred_dir, predictions, only_predicted)
    settings = {"pred_dir": str(pred_dir), "ref_root": str(ref_root), "rule": rule,
                "distance": float(distance), "distance_unit": "voxels" if rule == "paper" else distance_unit,
                "threshold": float(threshold), "min_voxels": int(min_voxels), "connectivity": int(connectivity),
                "small_diameter_mm": SMALL_DIAMETER_MM, "n_bootstrap": int(n_bootstrap), "seed": int(seed),
                "only_predicted": bool(only_predicted)}
    results = [_evaluate_subject(subject, predictions[subject.subject_id], rule, float(distance), float(threshold),
                                 connectivity, int(min_voxels), distance_unit)
               for subject in tqdm(subjects, desc="evaluate", unit="subject", disable=not progress)]
    rows = [{"subject_id": subject.subject_id, **result.row} for subject, result in zip(subjects, results)]
    summary, froc = _summarize(rows, results, settings)
    report = EvaluationReport(summary=summary, per_subject=rows, froc=froc, settings=settings)
    if json_out is not None:
        write_json(Path(json_out), report.to_json())
    return report


def _evaluate_subject(subject: Subject, path: Path, rule: str, distance: float, threshold: float,
                      connectivity: int, min_voxels: int, distance_unit: str) -> VolumeEvaluation:
    """One reference subject's prediction (probability map ``path``) matched (:func:`evaluate_volume`)."""
    pred_img = _load_probability(path)
    ref_img = load_mask(subject.mask_path, what="reference CMB mask")
    check_same_grid(ref_img, pred_img, what_a=f"reference mask {subject.mask_path}",
                    what_b=f"prediction {path} (rerun `cmbstudy predict` on this dataset)")
    table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
    return evaluate_volume(
        np.asarray(pred_img.dataobj, dtype=np.float32), np.asarray(ref_img.dataobj), ref_img.affine,
        rule=rule, distance=distance, threshold=threshold, connectivity=connectivity, lesion_table=table,
        min_voxels=min_voxels, distance_unit=distance_unit,
    )


def _summarize(rows: Sequence[dict[str, Any]], results: Sequence[VolumeEvaluation], settings: dict[str, Any]
               ) -> tuple[dict[str, Any], FrocCurve | None]:
    """The pooled summary of :class:`EvaluationReport` and the FROC curve, from the per-subject rows."""
    counts = [(r["n_tp"], r["n_fp"], r["n_fn"]) for r in rows]
    summary: dict[str, Any] = {key: settings[key] for key in ("rule", "distance", "threshold", "min_voxels",
                                                              "connectivity")}
    summary.update(summarize_detection(counts))
    summary["n_ref"] = int(sum(r["n_ref"] for r in rows))
    summary["n_pred"] = int(sum(r["n_pred"] for r in rows))
    subject_f1 = [detection_scores(*c, nan_f1_without_reference=True)[2] for c in counts]
    summary.update(summarize_valdo(subject_f1, [r["n_pred"] for r in rows], [r["n_ref"] for r in rows]))
    ci = bootstrap_detection_ci(np.asarray(counts).reshape(-1, 3), n_resamples=settings["n_bootstrap"],
                                seed=settings["seed"])
    summary["ci95"] = {name: (lo, hi) for name, (_, lo, hi) in ci.items()}
    small = summarize_detection([(r["n_tp_small"], r["n_fp_small"], r["n_fn_small"]) for r in rows])
    small["n_ref"] = int(sum(r["n_ref_small"] for r in rows))
    summary["small_lesions"] = small
    froc = None
    summary["froc"] = {}
    if summary["n_ref"] > 0:
        scores = [result.pred.max_prob for result in results]
        outcomes = [pred_is_tp(result.match, result.pred.n) for result in results]
        froc = compute_froc(scores, outcomes, summary["n_ref"], len(rows))
        summary["froc"] = {f"{rate:g}": float(v) for rate, v in
                           zip(FROC_FP_RATES, sensitivity_at_fp_rates(froc, FROC_FP_RATES))}
    summary["aria_h_confusion"] = compute_aria_h_confusion([r["n_ref"] for r in rows], [r["n_pred"] for r in rows])
    return summary, froc


def load_reference_diameters(data_root: str | Path, connectivity: int = 26) -> dict[str, np.ndarray]:
    """Subject id -> (n_ref,) reference lesion diameters (mm) of every subject with a CMB mask.

    Components are in :func:`cmbstudy.evaluation.lesions.find_lesions` order, as the centroids of
    :func:`cmbstudy.training.classical.load_detection_cases`.
    """
    out = {}
    for subject in load_subjects(Path(data_root)):
        if subject.mask_path is None:
            continue
        mask = load_mask(subject.mask_path, what="reference CMB mask")
        table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
        voxel_mm3 = voxel_volume_mm3(mask.affine)
        out[subject.subject_id] = reference_diameters_mm(np.asarray(mask.dataobj), voxel_mm3, table, connectivity)
    return out


def load_lesion_outcomes(pred_dir: str | Path, data_root: str | Path, threshold: float | None = None,
                         max_distance: float | None = None) -> pd.DataFrame:
    """Per reference lesion of every predicted subject: (subject_id, diameter_mm, detected), paper rule.

    Recomputed from ``PRED/sub-<id>/*_probseg.nii.gz`` and the reference masks with
    :func:`evaluate_volume` (``eval-*.json`` keeps counts, not lesions), with the lesion rule
    ``cmbstudy predict`` used (its operating point, connectivity and match distance, as its profile
    and ``--set evaluation.*`` made them), or at ``threshold`` / within ``max_distance`` voxels.

    Raises:
        InputError: ``pred_dir`` does not exist.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"prediction folder {pred_dir} does not exist: run `cmbstudy predict --out {pred_dir}` first")
    threshold = read_prediction_threshold(pred_dir) if threshold is None else threshold
    min_voxels = read_prediction_min_voxels(pred_dir)
    connectivity = read_prediction_connectivity(pred_dir)
    max_distance = read_prediction_match_distance(pred_dir) if max_distance is None else max_distance
    evaluations = {}
    predictions = find_predictions(pred_dir)
    for subject in load_subjects(Path(data_root)):
        path = predictions.get(subject.subject_id, Path(""))
        if subject.mask_path is None or not path.is_file():
            continue
        mask = load_mask(subject.mask_path, what="reference CMB mask")
        probability = np.asarray(load_image(path, what="prediction", allow_zero=True).dataobj, dtype=np.float32)
        table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
        evaluation = evaluate_volume(probability, np.asarray(mask.dataobj), mask.affine, rule="paper",
                                     distance=max_distance, threshold=threshold, lesion_table=table,
                                     min_voxels=min_voxels, connectivity=connectivity)
        voxel_mm3 = voxel_volume_mm3(mask.affine)
        evaluations[subject.subject_id] = (evaluation, reference_diameters_mm(np.asarray(mask.dataobj), voxel_mm3,
                                                                              table, connectivity))
    return compute_lesion_outcomes(evaluations)
