"""Lesion-wise evaluation of a prediction folder against a reference dataset (`cmbstudy evaluate`).

Reads the probability maps written by ``cmbstudy predict``
(``PRED/sub-<id>/sub-<id>_desc-cmb_probseg.nii.gz``), thresholds them, takes 3D
connected components and matches them to the reference CMB masks with the
paper's or the VALDO rule (:mod:`cmbstudy.metrics`). Reports pooled and
per-subject precision, recall, F1 and FP per subject, the same restricted to
reference lesions <= 3 mm (paper Table 4), FROC sensitivities, ARIA-H
confusion (Table 6) and subject-bootstrap confidence intervals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import metrics as M
from .config import EvalConfig
from .datasets import Subject, load_subjects
from .errors import ConfigError, InputError, OutputError
from .io import check_same_grid, load_image, load_mask, write_text_atomically
from .stats import bootstrap_detection_ci

__all__ = [
    "RULES",
    "SMALL_DIAMETER_MM",
    "FROC_FP_RATES",
    "compute_reference_diameters",
    "load_lesion_table",
    "VolumeEvaluation",
    "EvaluationReport",
    "prediction_path",
    "evaluate_volume",
    "evaluate_predictions",
]

RULES: tuple[str, ...] = ("paper", "valdo")
SMALL_DIAMETER_MM = 3.0  # paper Table 4: lesions <= 3 mm
FROC_FP_RATES: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
_DEFAULTS = EvalConfig()


def prediction_path(pred_dir: Path, subject_id: str) -> Path:
    """``PRED/sub-<id>/sub-<id>_desc-cmb_probseg.nii.gz`` (the layout written by ``cmbstudy predict``)."""
    return Path(pred_dir) / f"sub-{subject_id}" / f"sub-{subject_id}_desc-cmb_probseg.nii.gz"


@dataclass(frozen=True)
class VolumeEvaluation:
    """Matching outcome of one subject.

    Attributes:
        pred, ref: components of the thresholded prediction and of the reference mask.
        match: true-positive pairs and unmatched indices (:class:`cmbstudy.metrics.Match`).
        ref_small, pred_small: (n_ref,), (n_pred,) bool, lesion diameter <= 3 mm.
        row: the per-subject numbers reported (counts, precision, recall, F1, small-lesion counts).
    """

    pred: M.Lesions
    ref: M.Lesions
    match: M.Match
    ref_small: np.ndarray
    pred_small: np.ndarray
    row: dict[str, Any]


def compute_reference_diameters(ref: M.Lesions, voxel_mm3: float, lesion_table: pd.DataFrame | None) -> np.ndarray:
    """Diameter (mm) per reference component.

    With a synthetic ``lesions.tsv``: the largest ``diameter_mm`` among the table's
    lesions whose centre voxel lies in the component (a centre outside every
    component goes to the nearest component centroid); components no row reaches,
    and every component without a table, get the equivalent-sphere diameter of
    their mask volume.
    """
    diameters = M.equivalent_diameter_mm(ref.n_voxels, voxel_mm3)
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


def evaluate_volume(
    probability: np.ndarray,
    reference: np.ndarray,
    affine: np.ndarray,
    rule: str = "paper",
    distance: float | None = None,
    threshold: float = 0.5,
    connectivity: int = 26,
    lesion_table: pd.DataFrame | None = None,
) -> VolumeEvaluation:
    """Match the components of one probability map to one reference mask (no file I/O).

    Args:
        probability: (X, Y, Z) predicted probability (or binary mask) on the reference grid.
        reference: (X, Y, Z) binary reference CMB mask.
        affine: 4x4 voxel-to-mm affine of the grid (VALDO distances and voxel volume).
        rule: "paper" (centroids within ``distance`` voxels, default 4, one-to-one optimal
            assignment) or "valdo" (centres of mass within ``distance`` mm, default 5,
            nearest reference, closest claimant wins).
        distance: match distance; None takes the rule's default from :class:`EvalConfig`.
        threshold: probability threshold (inclusive) before components.
        connectivity: 6, 18 or 26 for both prediction and reference.
        lesion_table: optional synthetic ``lesions.tsv`` (x_vox, y_vox, z_vox, diameter_mm).

    Raises:
        ConfigError: unknown rule, bad connectivity or distance.
        InputError: shapes differ.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown matching rule {rule!r}: use one of {', '.join(RULES)}")
    if probability.shape != reference.shape:
        raise InputError(f"prediction shape {probability.shape} differs from reference shape {reference.shape}")
    if distance is None:
        distance = _DEFAULTS.match_distance_voxels if rule == "paper" else _DEFAULTS.valdo_distance_mm
    pred = M.find_lesions(probability, threshold=threshold, connectivity=connectivity)
    ref = M.find_lesions(reference, threshold=0.5, connectivity=connectivity)
    if rule == "paper":
        match = M.match_paper(pred.centroids, ref.centroids, distance)
    else:
        match = M.match_valdo(
            M.centroids_to_mm(pred.centroids, affine), M.centroids_to_mm(ref.centroids, affine), distance
        )
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3])))
    ref_small = compute_reference_diameters(ref, voxel_mm3, lesion_table) <= SMALL_DIAMETER_MM
    pred_small = M.equivalent_diameter_mm(pred.n_voxels, voxel_mm3) <= SMALL_DIAMETER_MM
    precision, recall, f1 = M.detection_scores(
        match.n_tp, match.n_fp, match.n_fn, nan_f1_without_reference=(rule == "valdo")
    )
    tp_s, fp_s, fn_s = M.subset_counts(match, ref_small, pred_small)
    row: dict[str, Any] = {
        "n_ref": ref.n, "n_pred": pred.n, "n_tp": match.n_tp, "n_fp": match.n_fp, "n_fn": match.n_fn,
        "precision": precision, "recall": recall, "f1": f1,
        "abs_count_difference": abs(pred.n - ref.n),
        "aria_h_ref": M.aria_h_category(ref.n), "aria_h_pred": M.aria_h_category(pred.n),
        "n_ref_small": int(ref_small.sum()), "n_tp_small": tp_s, "n_fp_small": fp_s, "n_fn_small": fn_s,
    }
    return VolumeEvaluation(pred, ref, match, ref_small, pred_small, row)


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


@dataclass
class EvaluationReport:
    """Result of :func:`evaluate_predictions`.

    Attributes:
        summary: pooled numbers: precision, recall, f1, fp_per_subject, n_tp, n_fp, n_fn,
            n_subjects, n_ref, n_pred, mean_abs_count_difference, median_f1, iqr_f1 (q1, q3),
            n_subjects_with_f1 (per-subject F1 with the VALDO convention, undefined without
            reference lesions, whichever rule matched), ci95 (metric -> (lo, hi)), small_lesions (the same counts and
            scores for reference lesions <= 3 mm), froc (sensitivity at FP/subject 0.5..8),
            aria_h_confusion (4x4, rows reference), and the settings used.
        per_subject: one dict per subject (subject_id, n_ref, n_pred, n_tp, n_fp, n_fn,
            precision, recall, f1, abs_count_difference, ARIA-H categories, small-lesion counts).
        froc: the full FROC curve (None when the reference holds no lesion).
    """

    summary: dict[str, Any]
    per_subject: list[dict[str, Any]]
    froc: M.FrocCurve | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (NaN -> null)."""
        froc = None
        if self.froc is not None:
            froc = {
                "thresholds": self.froc.thresholds,
                "fp_per_subject": self.froc.fp_per_subject,
                "sensitivity": self.froc.sensitivity,
            }
        return _clean({"settings": self.settings, "summary": self.summary,
                       "per_subject": self.per_subject, "froc_curve": froc})

    def format_table(self) -> str:
        """Readable summary: settings, pooled and <= 3 mm scores, VALDO aggregates, FROC, per subject."""
        s, small = self.summary, self.summary["small_lesions"]
        unit = "voxels" if s["rule"] == "paper" else "mm"
        lines = [
            f"rule {s['rule']}: match distance {s['distance']:g} {unit}, probability threshold "
            f"{s['threshold']:g}, {s['connectivity']}-connectivity",
            f"subjects {s['n_subjects']}, reference lesions {s['n_ref']}, predicted lesions {s['n_pred']}",
            "",
            f"{'lesions':<10}{'precision':>10}{'recall':>8}{'F1':>8}{'FP/subj':>9}{'TP':>6}{'FP':>6}{'FN':>6}",
        ]
        for name, row in (("all", s), (f"<={SMALL_DIAMETER_MM:g} mm", small)):
            lines.append(
                f"{name:<10}{_fmt(row['precision']):>10}{_fmt(row['recall']):>8}{_fmt(row['f1']):>8}"
                f"{_fmt(row['fp_per_subject'], 2):>9}{row['n_tp']:>6}{row['n_fp']:>6}{row['n_fn']:>6}"
            )
        ci = s["ci95"]
        lines.append(
            "95% CI (bootstrap over subjects): "
            + ", ".join(f"{k} [{_fmt(lo)}, {_fmt(hi)}]" for k, (lo, hi) in ci.items())
        )
        q1, q3 = s["iqr_f1"]
        lines.append(
            f"per-subject F1: median {_fmt(s['median_f1'])} (IQR {_fmt(q1)}-{_fmt(q3)}, "
            f"{s['n_subjects_with_f1']} subjects); mean |count difference| {_fmt(s['mean_abs_count_difference'], 2)}"
        )
        if s["froc"]:
            lines.append(
                "FROC sensitivity at FP/subject "
                + ", ".join(f"{k}: {_fmt(v)}" for k, v in s["froc"].items())
            )
        lines += ["", f"{'subject':<12}{'ref':>5}{'pred':>6}{'TP':>5}{'FP':>5}{'FN':>5}{'precision':>11}{'recall':>8}{'F1':>7}"]
        for r in self.per_subject:
            lines.append(
                f"{r['subject_id']:<12}{r['n_ref']:>5}{r['n_pred']:>6}{r['n_tp']:>5}{r['n_fp']:>5}{r['n_fn']:>5}"
                f"{_fmt(r['precision']):>11}{_fmt(r['recall']):>8}{_fmt(r['f1']):>7}"
            )
        return "\n".join(lines)


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


def _select_subjects(subjects: Sequence[Subject], pred_dir: Path, only_predicted: bool) -> list[Subject]:
    no_mask = [s.subject_id for s in subjects if s.mask_path is None]
    if no_mask:
        raise InputError(
            f"reference subjects without a CMB mask: {', '.join(no_mask[:10])}: "
            "evaluate against a dataset with CMB masks"
        )
    missing = [s.subject_id for s in subjects if not prediction_path(pred_dir, s.subject_id).is_file()]
    if missing and not only_predicted:
        raise InputError(
            f"{len(missing)} reference subject(s) have no prediction in {pred_dir}: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; run `cmbstudy predict` "
            "on them, or evaluate only the predicted subjects (--only-predicted)"
        )
    chosen = [s for s in subjects if s.subject_id not in set(missing)]
    if not chosen:
        raise InputError(f"no prediction in {pred_dir} matches a reference subject: run `cmbstudy predict`")
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


def _write_json_atomic(data: dict[str, Any], path: Path) -> None:
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"JSON output {path} is a folder: give a file name such as metrics.json")
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    try:
        write_text_atomically(path, text)
    except OSError as exc:
        raise OutputError(f"JSON output {path} cannot be written ({exc}): choose another location") from exc


def _default_threshold(pred_dir: Path, rule: str) -> float:
    """0.5 for the VALDO rule; the paper rule follows the threshold ``predict`` used."""
    info = pred_dir / "prediction.json"
    if rule == "paper" and info.is_file():
        try:
            return float(json.loads(info.read_text()).get("threshold", 0.5))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise InputError(f"{info} is not valid prediction metadata ({exc}): rerun `cmbstudy predict`") from exc
    return 0.5


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
) -> EvaluationReport:
    """Evaluate every reference subject's prediction lesion-wise.

    Args:
        pred_dir: prediction folder written by ``cmbstudy predict``.
        ref_root: reference dataset root (synthetic, BIDS-like or VALDO layout).
        rule: "paper" or "valdo" (see :func:`evaluate_volume`).
        distance: match distance (paper: voxels, default 4; valdo: mm, default 5).
        json_out: if given, the report is written there as JSON (atomically, NaN as null).
        threshold: probability threshold before connected components (inclusive);
            None: 0.5 for the VALDO rule, and for the paper rule the threshold that
            ``cmbstudy predict`` used (``PRED/prediction.json``), else 0.5.
        connectivity: 6, 18 or 26.
        only_predicted: evaluate only reference subjects that have a prediction
            (default: every reference subject must have one). Prediction folders with
            no reference subject are ignored.
        dataset: layout name for :func:`cmbstudy.datasets.load_subjects` (None: detect).
        n_bootstrap: subject resamples for the 95% CIs; seed: their seed.
        progress: show a progress bar.

    Raises:
        InputError: missing prediction folder or predictions, a reference without mask,
            a prediction on another grid than its reference, unreadable files.
        ConfigError: unknown rule, bad connectivity or distance.
        OutputError: json_out cannot be written.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown matching rule {rule!r}: use one of {', '.join(RULES)}")
    if isinstance(connectivity, bool) or connectivity not in M.CONNECTIVITIES:
        raise ConfigError(f"connectivity {connectivity!r} is not supported: use 6, 18 or 26")
    threshold = _default_threshold(Path(pred_dir), rule) if threshold is None else threshold
    if not 0 < threshold <= 1:
        raise ConfigError(f"probability threshold {threshold!r} must be in (0, 1], e.g. 0.5")
    if distance is None:
        distance = _DEFAULTS.match_distance_voxels if rule == "paper" else _DEFAULTS.valdo_distance_mm
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"prediction folder {pred_dir} does not exist: run `cmbstudy predict --out {pred_dir}` first")
    subjects = _select_subjects(load_subjects(Path(ref_root), dataset), pred_dir, only_predicted)

    rows: list[dict[str, Any]] = []
    scores: list[np.ndarray] = []
    outcomes: list[np.ndarray] = []
    for subject in tqdm(subjects, desc="evaluate", unit="subject", disable=not progress):
        path = prediction_path(pred_dir, subject.subject_id)
        pred_img = _load_probability(path)
        ref_img = load_mask(subject.mask_path, what="reference CMB mask")
        check_same_grid(ref_img, pred_img, what_a=f"reference mask {subject.mask_path}",
                        what_b=f"prediction {path} (rerun `cmbstudy predict` on this dataset)")
        table = load_lesion_table(subject.extra_paths["lesions"]) if "lesions" in subject.extra_paths else None
        result = evaluate_volume(
            np.asarray(pred_img.dataobj, dtype=np.float32), np.asarray(ref_img.dataobj), ref_img.affine,
            rule=rule, distance=distance, threshold=threshold, connectivity=connectivity, lesion_table=table,
        )
        rows.append({"subject_id": subject.subject_id, **result.row})
        scores.append(result.pred.max_prob)
        outcomes.append(M.pred_is_tp(result.match, result.pred.n))

    counts = [(r["n_tp"], r["n_fp"], r["n_fn"]) for r in rows]
    summary: dict[str, Any] = {"rule": rule, "distance": float(distance), "threshold": float(threshold),
                               "connectivity": int(connectivity)}
    summary.update(M.summarize_detection(counts))
    summary["n_ref"] = int(sum(r["n_ref"] for r in rows))
    summary["n_pred"] = int(sum(r["n_pred"] for r in rows))
    valdo_f1 = [M.detection_scores(*c, nan_f1_without_reference=True)[2] for c in counts]
    summary.update(M.summarize_valdo(valdo_f1, [r["n_pred"] for r in rows], [r["n_ref"] for r in rows]))
    ci = bootstrap_detection_ci(np.asarray(counts).reshape(-1, 3), n_resamples=n_bootstrap, seed=seed)
    summary["ci95"] = {name: (lo, hi) for name, (_, lo, hi) in ci.items()}
    small = M.summarize_detection([(r["n_tp_small"], r["n_fp_small"], r["n_fn_small"]) for r in rows])
    small["n_ref"] = int(sum(r["n_ref_small"] for r in rows))
    summary["small_lesions"] = small
    froc = None
    summary["froc"] = {}
    if summary["n_ref"] > 0:
        froc = M.compute_froc(scores, outcomes, summary["n_ref"], len(rows))
        summary["froc"] = {f"{rate:g}": float(v) for rate, v in
                           zip(FROC_FP_RATES, M.sensitivity_at_fp_rates(froc, FROC_FP_RATES))}
    summary["aria_h_confusion"] = M.compute_aria_h_confusion(
        [r["n_ref"] for r in rows], [r["n_pred"] for r in rows]
    )
    settings = {"pred_dir": str(pred_dir), "ref_root": str(ref_root), "rule": rule,
                "distance": float(distance), "distance_unit": "voxels" if rule == "paper" else "mm",
                "threshold": float(threshold), "connectivity": int(connectivity),
                "small_diameter_mm": SMALL_DIAMETER_MM, "n_bootstrap": int(n_bootstrap), "seed": int(seed),
                "only_predicted": bool(only_predicted)}
    report = EvaluationReport(summary=summary, per_subject=rows, froc=froc, settings=settings)
    if json_out is not None:
        _write_json_atomic(report.to_json(), Path(json_out))
    return report
