"""Method comparison: Table 2 (all lesions) and Table 4 (lesions <= 3 mm) of Cho et al. (2025).

One row per method of ``profile.study`` (the paper's network, then the baselines)
at ``study.comparison_folds``, plus the classical LoG detector of
:mod:`cmbstudy.classical` as the floor a learned detector has to clear. Each row
holds pooled precision, recall, F1 and false positives per subject with a
bootstrap 95% CI over subjects, the paper's figure for the same method, the
number of weights and the inference seconds per subject.

Everything is computed from the per-subject lesion counts that
``cmbstudy evaluate`` writes (``RUN/eval-val.json``), so the CIs of one fold
equal those of the evaluation report and several folds pool their subjects.
Recall per lesion size (Table 4's companion figure) lives in :mod:`cmbstudy.lesion_sizes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .classical import DetectionCase, detect_classical, tune_classical
from .config import Profile
from .errors import ConfigError, InputError
from .metrics import FrocCurve, compute_froc, match_paper, pred_is_tp
from .paper import METRICS, PAPER_DATASET_LABEL, VARIANT_TO_TABLE2
from .stats import bootstrap_detection_ci

__all__ = [
    "CLASSICAL",
    "SUBSETS",
    "METHOD_LABELS",
    "MethodResult",
    "comparison_variants",
    "make_method_result",
    "load_method_results",
    "compute_classical_result",
    "load_fold_splits",
    "compute_method_table",
    "format_method_table",
    "find_best_baseline",
    "merge_froc_curves",
    "plot_method_froc",
]

#: Name of the classical LoG detector among the methods (it has no variant and no run).
CLASSICAL = "classical"

#: Lesion subsets of the tables: "all" (Table 2) and "small" (<= 3 mm, Table 4).
SUBSETS: tuple[str, ...] = ("all", "small")

#: Row label of each method; a variant not listed is shown by its name.
METHOD_LABELS: Mapping[str, str] = {
    "rlk_unet_cbam": "RLK-UNet + CBAM (Cho 2025)",
    "dou2016": "Dou 2016 (two-stage 3D CNN)",
    "fan2022": "Fan 2022 (multi-slice U-Net)",
    "wei2022": "Wei 2022 (MMOC-Net)",
    "tsuchida2024": "Tsuchida 2024 (SHIVA-CMB 3D U-Net)",
    "nnunet": "nnU-Net-style DynUNet",
    "cbam_skips_0": "RLK-UNet without CBAM",
    CLASSICAL: "classical LoG detector",
}

_COUNT_KEYS = {"all": ("n_tp", "n_fp", "n_fn"), "small": ("n_tp_small", "n_fp_small", "n_fn_small")}
_DISPLAY = {"precision": "precision", "recall": "recall", "f1": "F1", "fp_per_subject": "FP / subject"}


@dataclass(frozen=True)
class MethodResult:
    """The validation results of one method, pooled over the comparison folds.

    Attributes:
        name: variant name (``Profile.variants``) or :data:`CLASSICAL`.
        per_subject: one dict per validation subject with lesion counts n_tp, n_fp, n_fn and
            n_tp_small, n_fp_small, n_fn_small (``eval-val.json`` ``per_subject`` rows).
        froc: FROC curve over those subjects; None without reference lesions.
        n_params: trainable weights; None for the classical detector.
        seconds_per_subject: inference time per subject (s), post-processing included.
        folds: folds pooled.
        n_bootstrap, seed: bootstrap settings of the CIs (the evaluation's).
        note: caveat printed in the table.
    """

    name: str
    per_subject: tuple[dict[str, Any], ...]
    froc: FrocCurve | None
    n_params: int | None
    seconds_per_subject: float
    folds: tuple[int, ...]
    n_bootstrap: int = 1000
    seed: int = 0
    note: str = ""

    @property
    def label(self) -> str:
        """Row label of the method."""
        return METHOD_LABELS.get(self.name, self.name)

    def counts(self, subset: str = "all") -> np.ndarray:
        """(n_subjects, 3) int lesion counts (tp, fp, fn) of ``subset`` ("all" or "small").

        Raises:
            ConfigError: unknown subset.
        """
        if subset not in _COUNT_KEYS:
            raise ConfigError(f"unknown lesion subset {subset!r}: use one of {', '.join(SUBSETS)}")
        keys = _COUNT_KEYS[subset]
        return np.array([[int(row[k]) for k in keys] for row in self.per_subject], dtype=np.int64).reshape(-1, 3)


def comparison_variants(profile: Profile) -> list[str]:
    """The variants of Table 2 in the study: ``study.main`` then ``study.baselines`` (no duplicates)."""
    return list(dict.fromkeys([profile.study.main, *profile.study.baselines]))


def merge_froc_curves(curves: Sequence[FrocCurve], n_ref: Sequence[int], n_subjects: Sequence[int]) -> FrocCurve:
    """One FROC over disjoint subject sets (e.g. the validation subjects of several folds).

    Each curve is a step function of the score threshold; at every threshold of any
    curve, true positives (sensitivity x reference lesions) and false positives
    (FP/subject x subjects) are summed over curves. Written by hand: no maintained
    library merges FROC curves from their operating points.

    Args:
        curves: FROC curves, each from the strictest threshold (+inf) to the loosest.
        n_ref: reference lesions behind each curve; n_subjects: subjects behind each curve.

    Raises:
        InputError: no curve, or the three sequences differ in length.
    """
    if not curves or not len(curves) == len(n_ref) == len(n_subjects):
        raise InputError(f"merge_froc_curves needs as many curves, n_ref and n_subjects, got "
                         f"{len(curves)}, {len(n_ref)}, {len(n_subjects)}")
    if len(curves) == 1:
        return curves[0]
    grid = np.unique(np.concatenate([np.asarray(c.thresholds, float) for c in curves]))[::-1]
    tp = np.zeros(grid.size)
    fp = np.zeros(grid.size)
    for curve, refs, subjects in zip(curves, n_ref, n_subjects):
        thresholds = np.asarray(curve.thresholds, float)
        # index of the loosest operating point whose threshold is still >= t (thresholds fall along the curve)
        index = np.searchsorted(-thresholds, -grid, side="right") - 1
        tp += np.asarray(curve.sensitivity, float)[index] * refs
        fp += np.asarray(curve.fp_per_subject, float)[index] * subjects
    total_ref, total_subjects = max(int(sum(n_ref)), 1), max(int(sum(n_subjects)), 1)
    return FrocCurve(grid, fp / total_subjects, tp / total_ref)


def _froc_from_json(payload: Mapping[str, Any] | None) -> FrocCurve | None:
    if not payload:
        return None
    thresholds = np.array([np.inf if v is None else v for v in payload["thresholds"]], dtype=float)
    return FrocCurve(thresholds, np.asarray(payload["fp_per_subject"], float), np.asarray(payload["sensitivity"], float))


def make_method_result(name: str, evaluations: Sequence[Mapping[str, Any]], folds: Sequence[int],
                       n_params: int | None, seconds_per_subject: Sequence[float], note: str = "") -> MethodResult:
    """Pool the ``eval-val.json`` payloads of one method's folds.

    Args:
        name: variant name.
        evaluations: one ``EvaluationReport.to_json()`` dict per fold (disjoint subjects).
        folds: the folds, in the same order.
        n_params: trainable weights of the network.
        seconds_per_subject: per fold (``pred-val/prediction.json``); their mean is kept.
        note: caveat for the table.

    Raises:
        InputError: no evaluation, or one lacks ``per_subject`` rows.
    """
    if not evaluations:
        raise InputError(f"method {name!r} has no evaluation: run `cmbstudy evaluate` on its pred-val first")
    rows: list[dict[str, Any]] = []
    curves, refs, subjects = [], [], []
    for evaluation in evaluations:
        if not evaluation.get("per_subject"):
            raise InputError(f"the evaluation of {name!r} has no per_subject rows: rerun `cmbstudy evaluate`")
        rows += [dict(row) for row in evaluation["per_subject"]]
        curve = _froc_from_json(evaluation.get("froc_curve"))
        if curve is not None:
            curves.append(curve)
            refs.append(int(evaluation["summary"]["n_ref"]))
            subjects.append(int(evaluation["summary"]["n_subjects"]))
    settings = evaluations[0].get("settings", {})
    return MethodResult(
        name=name, per_subject=tuple(rows), froc=merge_froc_curves(curves, refs, subjects) if curves else None,
        n_params=n_params, seconds_per_subject=float(np.mean(seconds_per_subject)), folds=tuple(folds),
        n_bootstrap=int(settings.get("n_bootstrap", 1000)), seed=int(settings.get("seed", 0)), note=note,
    )


def load_method_results(results_dir: str | Path, variants: Sequence[str], folds: Sequence[int]
                        ) -> tuple[dict[str, MethodResult], dict[str, list[str]]]:
    """Read every (variant, fold) run of ``RESULTS/runs`` (:func:`cmbstudy.results.load_run`).

    Returns:
        (variant -> pooled result for the variants with every fold present,
         variant -> names of its missing runs for the others).
    """
    from .results import load_run, run_name

    found: dict[str, MethodResult] = {}
    missing: dict[str, list[str]] = {}
    for variant in variants:
        records, absent = [], []
        for fold in folds:
            try:
                records.append(load_run(results_dir, run_name(variant, fold)))
            except InputError:
                absent.append(run_name(variant, fold))
        if absent:
            missing[variant] = absent
            continue
        found[variant] = make_method_result(
            variant, [r.evaluation for r in records], [r.fold for r in records], records[0].n_params,
            [r.seconds_per_subject for r in records],
        )
    return found, missing


def _classical_fold(cases: Mapping[str, DetectionCase], train_ids: Sequence[str], val_ids: Sequence[str],
                    ref_diameters_mm: Mapping[str, np.ndarray], fold: int, max_distance: float
                    ) -> tuple[list[dict[str, Any]], FrocCurve | None, pd.DataFrame, str]:
    train = [cases[i] for i in train_ids if i in cases]
    val = [(i, cases[i]) for i in val_ids if i in cases]
    if not train or not val:
        raise InputError(f"fold {fold}: {len(train)} training and {len(val)} validation subjects have an image, "
                         "brain mask and CMB mask; the classical detector needs both sets")
    params, _ = tune_classical(train, max_distance=max_distance)
    loose = type(params)(params.sigmas_mm, 0.0, params.darkness, params.edge_mm)
    rows, scores, outcomes, lesions = [], [], [], []
    for subject_id, case in val:
        detection = detect_classical(case.image, case.brain, case.voxel_mm, loose)
        match = match_paper(detection.centroids[detection.peak_scores >= params.threshold], case.ref_centroids,
                            max_distance)
        small = np.asarray(ref_diameters_mm[subject_id]) <= 3.0
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
    setting = f"fold {fold}: {len(train)} training subjects, threshold {params.threshold:g}, darkness {params.darkness:g}"
    return rows, froc, pd.concat(lesions, ignore_index=True), setting


def compute_classical_result(cases: Sequence[DetectionCase], ids: Sequence[str],
                             splits: Mapping[int, Mapping[str, Sequence[str]]],
                             ref_diameters_mm: Mapping[str, np.ndarray], max_distance: float = 4.0
                             ) -> tuple[MethodResult, pd.DataFrame]:
    """Tune the LoG detector on each fold's training subjects and score its validation subjects.

    The detector reports points, not components, so its false positives are counted
    in the <= 3 mm subset at every size (the subset's precision is a lower bound).
    Its FROC ranks every candidate by its score, below the tuned threshold too.

    Args:
        cases, ids: :func:`cmbstudy.classical.load_detection_cases` of the dataset.
        splits: fold -> {"train": ids, "val": ids} (``RUN/split.json``, :func:`load_fold_splits`).
        ref_diameters_mm: subject id -> (n_ref,) diameter (mm) of each reference component,
            in the order of ``case.ref_centroids`` (:func:`cmbstudy.lesion_sizes.load_reference_diameters`).
        max_distance: paper rule match distance (voxels).

    Returns:
        the result pooled over folds and a per-lesion table (subject_id, diameter_mm, detected).

    Raises:
        InputError: no fold, or a fold lacks training or validation subjects with a detection case.
    """
    if not splits:
        raise InputError("compute_classical_result needs at least one fold split: train a run of the fold first")
    by_id = dict(zip(ids, cases))
    rows, curves, refs, lesions, settings = [], [], [], [], []
    for fold, split in splits.items():
        fold_rows, froc, fold_lesions, setting = _classical_fold(
            by_id, split["train"], split["val"], ref_diameters_mm, fold, max_distance)
        rows += fold_rows
        lesions.append(fold_lesions)
        settings.append(setting)
        if froc is not None:
            curves.append(froc)
            refs.append(sum(r["n_ref"] for r in fold_rows))
    subjects = [len(split["val"]) for split in splits.values()][: len(curves)]
    froc = merge_froc_curves(curves, refs, subjects) if curves else None
    note = "tuned per fold (" + "; ".join(settings) + "); no weights; <= 3 mm FP counted at every size"
    result = MethodResult(CLASSICAL, tuple(rows), froc, None, float("nan"), tuple(splits), note=note)
    return result, pd.concat(lesions, ignore_index=True)


def load_fold_splits(results_dir: str | Path, variants: Sequence[str], folds: Sequence[int]
                     ) -> dict[int, dict[str, list[str]]]:
    """fold -> {"train", "val"} subject ids, from the ``split.json`` of the first run found per fold.

    Every run of the study draws its folds from the profile's seed, so any run of a fold holds
    that fold's split. Folds with no run are left out.
    """
    from .results import run_path
    from .splits import load_splits, select_fold

    out = {}
    for fold in folds:
        paths = [run_path(results_dir, v, fold) / "split.json" for v in variants]
        found = [p for p in paths if p.is_file()]
        if found:
            out[int(fold)] = select_fold(load_splits(found[0])["folds"], int(fold))
    return out


def compute_method_table(results: Mapping[str, MethodResult], paper_table: Mapping[str, Mapping[str, float]],
                         subset: str = "all", missing: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """One row per method: pooled metrics with bootstrap 95% CIs, the paper's figures, size and speed.

    Args:
        results: method name -> result, in row order.
        paper_table: :data:`cmbstudy.paper.TABLE2` or ``TABLE4`` (keyed by the paper's method names).
        subset: "all" (Table 2) or "small" (Table 4, lesions <= 3 mm).
        missing: variant -> its missing runs: a row of NaN saying so.

    Returns:
        index: method label; columns for each metric m of ``paper.METRICS``: m, m_ci_low, m_ci_high,
        m_paper; then n_subjects, n_tp, n_fp, n_fn, n_params, seconds_per_subject, note.

    Raises:
        ConfigError: unknown subset.
    """
    records = []
    for name, result in results.items():
        counts = result.counts(subset)
        record: dict[str, Any] = {"method": result.label}
        if counts.shape[0]:
            ci = bootstrap_detection_ci(counts, n_resamples=result.n_bootstrap, seed=result.seed)
        else:
            ci = {m: (np.nan, np.nan, np.nan) for m in METRICS}
        paper = paper_table.get(VARIANT_TO_TABLE2.get(name, ""), {})
        for metric in METRICS:
            estimate, lo, hi = ci[metric]
            record.update({metric: estimate, f"{metric}_ci_low": lo, f"{metric}_ci_high": hi,
                           f"{metric}_paper": float(paper.get(metric, np.nan))})
        tp, fp, fn = counts.sum(axis=0) if counts.size else (0, 0, 0)
        notes = [result.note] if result.note else []
        if not paper:
            notes.insert(0, "not in the paper's table")
        record.update({"n_subjects": counts.shape[0], "n_tp": int(tp), "n_fp": int(fp), "n_fn": int(fn),
                       "n_params": np.nan if result.n_params is None else result.n_params,
                       "seconds_per_subject": result.seconds_per_subject, "note": "; ".join(notes)})
        records.append(record)
    for name, runs in (missing or {}).items():
        record = {"method": METHOD_LABELS.get(name, name), "note": f"runs missing: {', '.join(runs)}"}
        paper = paper_table.get(VARIANT_TO_TABLE2.get(name, ""), {})
        record.update({f"{m}_paper": float(paper.get(m, np.nan)) for m in METRICS})
        records.append(record)
    if subset not in _COUNT_KEYS:
        raise ConfigError(f"unknown lesion subset {subset!r}: use one of {', '.join(SUBSETS)}")
    columns = [c for m in METRICS for c in (m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_paper")]
    columns += ["n_subjects", "n_tp", "n_fp", "n_fn", "n_params", "seconds_per_subject", "note"]
    return pd.DataFrame.from_records(records, index="method", columns=["method", *columns]) if records else \
        pd.DataFrame(columns=columns, index=pd.Index([], name="method"))


def _fmt(value: Any, digits: int) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def format_method_table(table: pd.DataFrame, dataset_label: str, paper_label: str = PAPER_DATASET_LABEL
                        ) -> pd.DataFrame:
    """Readable Table 2 / 4: per metric the paper's figure, ours and our 95% CI, each labelled by its data.

    Raises:
        ConfigError: ``dataset_label`` is empty.
    """
    if not str(dataset_label).strip():
        raise ConfigError("dataset_label must name the data our numbers come from, e.g. 'synthetic cohort'")
    ours = f"ours ({dataset_label})"
    out: dict[tuple[str, str], list[str]] = {}
    for metric in METRICS:
        digits = 2 if metric == "fp_per_subject" else 3
        head = _DISPLAY[metric]
        out[(head, paper_label)] = [_fmt(v, digits) for v in table[f"{metric}_paper"]]
        out[(head, ours)] = [_fmt(v, digits) for v in table[metric]]
        out[(head, "95% CI")] = [f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]" if np.isfinite(lo) else "n/a"
                                 for lo, hi in zip(table[f"{metric}_ci_low"], table[f"{metric}_ci_high"])]
    out[("", "subjects")] = [_fmt(v, 0) for v in table["n_subjects"].astype(float)]
    out[("", "parameters")] = [f"{int(v):,}" if np.isfinite(v) else "n/a" for v in table["n_params"].astype(float)]
    out[("", "s / subject")] = [_fmt(v, 2) for v in table["seconds_per_subject"].astype(float)]
    out[("", "note")] = list(table["note"].fillna(""))
    frame = pd.DataFrame(out, index=table.index)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def find_best_baseline(table: pd.DataFrame, main_label: str, metric: str = "f1") -> str | None:
    """Label of the row other than ``main_label`` and the classical detector with the highest ``metric``.

    Returns:
        None when no such row has a finite value.
    """
    others = table.drop(index=[main_label, METHOD_LABELS[CLASSICAL]], errors="ignore")[metric].astype(float)
    others = others[np.isfinite(others)]
    return None if others.empty else str(others.idxmax())


def plot_method_froc(results: Mapping[str, MethodResult], title: str | None = None) -> Figure:
    """FROC of every method with a curve on one Axes (:func:`cmbstudy.viz.plot_froc`).

    Raises:
        InputError: no method has a FROC curve (no reference lesion in its subjects).
    """
    from .viz import plot_froc

    curves = {r.label: r.froc for r in results.values() if r.froc is not None}
    if not curves:
        raise InputError("no method has a FROC curve: the validation subjects hold no reference lesion")
    return plot_froc(curves, title=title)
