"""The claims of Cho et al. (2026), one function per table or figure, each judged by the rules of :mod:`.verdicts`.

Each function takes what a notebook computed (a table module's result) and
returns its :class:`~cmbstudy.study.verdicts.Claim` s: Table 2 and Table 4 (ours
above the best baseline), Table 3 (the cross-validated F1), Table 5 (SWI -> GRE
above GRE -> SWI), Table 6 and Fig. 4 (ARIA-H agreement, count correlation),
Tables 7-8 (CBAM), Figs. 5-6 (Grad-CAM mass on lesions), and, beyond the paper,
one look or two (whether CBAM leaves a second stage nothing to add). An
ordering against a method that detected nothing is "cannot tell", and so is
"ours above the best baseline" when the best baseline trained is not the
paper's comparator and ours is above it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..evaluation.stats import bootstrap_ci
from ..evaluation.subsets import SMALL_DIAMETER_MM
from ..formatting import as_float, format_value
from .paper import FIG4_SPEARMAN, TABLE2, TABLE3_MEAN_SD, TABLE4, TABLE5, TABLE7, TABLE8
from .tables.comparison import row_scores
from .tables.format import ONE_STAGE, TWO_STAGES, method_label, row_label
from .verdicts import (
    CANNOT_TELL,
    DOES_NOT_REPLICATE,
    ORDERING,
    REPLICATES,
    VALUE,
    Claim,
    order_verdict,
    value_verdict,
)

__all__ = [
    "MIN_GRADCAM_PAIRS",
    "paired_focus_difference",
    "detected_nothing",
    "comparison_claims",
    "cross_validation_claims",
    "cross_modality_claims",
    "burden_claims",
    "ablation_claims",
    "explanation_claims",
    "looks_claims",
]


def _fmt(value: float, digits: int = 3) -> str:
    return format_value(as_float(value), digits)


def _with_ci(estimate: float, low: float, high: float, digits: int = 3) -> str:
    if not math.isfinite(as_float(estimate)):
        return "n/a"
    if not (math.isfinite(as_float(low)) and math.isfinite(as_float(high))):
        return f"{_fmt(estimate, digits)} (no interval)"
    return f"{_fmt(estimate, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def _estimate_and_bounds(scores: Mapping[str, float], metric: str) -> list[float]:
    return [as_float(scores.get(k, math.nan)) for k in (metric, f"{metric}_ci_low", f"{metric}_ci_high")]


def detected_nothing(scores: Mapping[str, float] | None) -> bool:
    """Whether a method's test scores say it reported no lesion at all: precision undefined, recall known."""
    scores = scores or {}
    return not math.isfinite(as_float(scores.get("precision", math.nan))) and \
        math.isfinite(as_float(scores.get("recall", math.nan)))


def _ordering_claim(source: str, claim: str, metric: str, paper: str, first: Mapping[str, float] | None,
                    second: Mapping[str, float] | None, first_label: str, second_label: str,
                    higher_is_better: bool = True, note: str = "") -> Claim:
    first, second = first or {}, second or {}
    bounds = _estimate_and_bounds(first, metric)
    digits = 2 if metric == "fp_per_subject" else 3
    ours = (f"{first_label} {_with_ci(*bounds, digits=digits)} vs {second_label} "
            f"{_with_ci(*_estimate_and_bounds(second, metric), digits=digits)}")
    verdict = order_verdict(first, second, metric, higher_is_better)
    if not first or not second:
        note = note or "a run of the comparison is missing"
    empty = [label for scores, label in ((first, first_label), (second, second_label)) if detected_nothing(scores)]
    if empty:  # an ordering against a method that found nothing says nothing about the claim
        verdict, note = CANNOT_TELL, f"{' and '.join(empty)} detected nothing on the test subjects"
    return Claim(source, claim, ORDERING, metric, paper, ours, *bounds, verdict, note)


def comparison_claims(comparison: Any) -> list[Claim]:
    """Table 2 or Table 4 (:class:`~cmbstudy.study.tables.comparison.MethodComparison`): ours above the best baseline."""
    small = comparison.subset == "small"
    source, paper_table = ("Table 4", TABLE4) if small else ("Table 2", TABLE2)
    main = "rlk_unet_cbam"  # the paper's network, as its tables name it
    paper_best = max((m for m in paper_table if m != main), key=lambda m: paper_table[m]["f1"])
    table, main_label = comparison.table, method_label(main)
    best = comparison.best_baseline if comparison.best_baseline in table.index else None
    what = f"lesions of at most {SMALL_DIAMETER_MM:g} mm" if small else "all lesions"
    note = "" if best else "no baseline was trained by this profile"
    found = _ordering_claim(
        source, f"RLK-UNet + CBAM has a higher F1 than the best baseline ({what})", "f1",
        f"{_fmt(paper_table[main]['f1'])} vs {_fmt(paper_table[paper_best]['f1'])} ({method_label(paper_best)})",
        row_scores(table, main_label), row_scores(table, best), "ours", best or "no baseline", note=note)
    if best and best != method_label(paper_best) and found.verdict == REPLICATES:
        # above a weaker baseline is not above the paper's best; below it would still say "does not replicate"
        found = dataclasses.replace(found, verdict=CANNOT_TELL, note=f"the paper's best baseline, "
                                    f"{method_label(paper_best)}, was not trained; {best} is not its comparator")
    return [found]


def _mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean of fold F1s and its 95% Student-t interval (scipy) cut to [0, 1], NaN bounds with fewer than two."""
    finite = np.asarray([v for v in values if math.isfinite(as_float(v))], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(finite.mean())
    if finite.size < 2:
        return mean, math.nan, math.nan
    low, high = scipy_stats.t.interval(0.95, finite.size - 1, loc=mean, scale=scipy_stats.sem(finite))
    if not math.isfinite(low):  # every fold equal: a zero-width interval
        low = high = mean
    return mean, max(float(low), 0.0), min(float(high), 1.0)  # an F1 lies in [0, 1]


def cross_validation_claims(cv: Any) -> list[Claim]:
    """Table 3 (:class:`~cmbstudy.study.tables.folds.CrossValidation`): the cross-validated F1 itself.

    Our interval is the Student-t interval of the mean over folds; with one fold,
    that fold's bootstrap interval over test subjects.
    """
    paper_mean, paper_sd = TABLE3_MEAN_SD["f1"]
    folds = cv.scores.drop(index=["mean", "sd"]) if cv.scores is not None else pd.DataFrame()
    if len(folds) == 1:
        row = folds.iloc[0]
        estimate, low, high = (as_float(row[k]) for k in ("f1", "f1_ci_low", "f1_ci_high"))
        note = "one fold: its bootstrap interval over test subjects"
    else:
        estimate, low, high = _mean_interval(list(folds["f1"]) if len(folds) else [])
        note = f"mean of {len(folds)} folds, Student-t interval" if len(folds) else "no fold was trained"
    return [Claim("Table 3", "cross-validated F1 of RLK-UNet + CBAM", VALUE, "f1",
                  f"{_fmt(paper_mean)} ± {_fmt(paper_sd)}", _with_ci(estimate, low, high), estimate, low, high,
                  value_verdict(paper_mean, low, high), note)]


def cross_modality_claims(modality: Any) -> list[Claim]:
    """Table 5 (:class:`~cmbstudy.study.tables.modality.CrossModality`): SWI -> GRE transfers better than GRE -> SWI."""
    swi, gre = modality.scores.get("swi"), modality.scores.get("gre")
    paper = f"{_fmt(TABLE5['SWI -> GRE']['f1'])} vs {_fmt(TABLE5['GRE -> SWI']['f1'])}"
    note = modality.note.replace("**", "") if modality.note else ""
    return [_ordering_claim("Table 5", "training on SWI transfers to GRE better than training on GRE to SWI",
                            "f1", paper, swi, gre, "SWI -> GRE", "GRE -> SWI", note=note)]


def burden_claims(burden: Any) -> list[Claim]:
    """Table 6 and Fig. 4 (:class:`~cmbstudy.study.tables.burden.Burden`): ARIA-H agreement and count correlation.

    The agreement's interval is Wilson's for a proportion (scipy's ``binomtest``);
    the correlation's is the Fisher-z interval of Spearman's rho.
    """
    confusion = np.asarray(burden.confusion)
    hits, n = int(np.trace(confusion)), int(confusion.sum())
    paper_share = burden.paper["agreement"]
    if n:
        interval = scipy_stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
        share, low, high = hits / n, float(interval.low), float(interval.high)
    else:
        share = low = high = math.nan
    counts = burden.counts
    rho, rho_low, rho_high = (as_float(v) for v in (counts.rho, counts.ci_low, counts.ci_high))
    return [
        Claim("Table 6", "share of subjects in the right ARIA-H category", VALUE, "agreement",
              _fmt(paper_share), _with_ci(share, low, high), share, low, high,
              value_verdict(paper_share, low, high), "" if n else "no run to score"),
        Claim("Fig. 4", "Spearman correlation of predicted and reference counts per subject", VALUE, "rho",
              _fmt(FIG4_SPEARMAN["rho"], 2), _with_ci(rho, rho_low, rho_high), rho, rho_low, rho_high,
              value_verdict(FIG4_SPEARMAN["rho"], rho_low, rho_high)),
    ]


def ablation_claims(ablation: Any, arms: Sequence[str] = tuple(TABLE8)) -> list[Claim]:
    """Tables 7 and 8 (:class:`~cmbstudy.study.tables.ablation.Ablation`).

    Table 7: CBAM raises F1 and lowers false positives per subject. Table 8: F1
    rises with every skip given CBAM (``arms``, from none to all): it replicates
    when every step up is above the one before, does not when any is below, and
    we cannot tell otherwise or when an arm was not trained.
    """
    scores = ablation.scores
    without, every = arms[0], arms[-1]
    paper7 = TABLE7["With CBAM"], TABLE7["Without CBAM"]
    claims = [
        _ordering_claim("Table 7", "CBAM raises F1", "f1", f"{_fmt(paper7[0]['f1'])} vs {_fmt(paper7[1]['f1'])}",
                        scores.get(every), scores.get(without), "with", "without"),
        _ordering_claim("Table 7", "CBAM lowers false positives per subject", "fp_per_subject",
                        f"{_fmt(paper7[0]['fp_per_subject'], 2)} vs {_fmt(paper7[1]['fp_per_subject'], 2)}",
                        scores.get(every), scores.get(without), "with", "without", higher_is_better=False),
    ]
    trained = [arm for arm in arms if arm in scores]
    steps = [order_verdict(scores[upper], scores[lower]) for lower, upper in zip(trained, trained[1:])]
    missing = [arm for arm in arms if arm not in scores]
    if DOES_NOT_REPLICATE in steps:
        verdict = DOES_NOT_REPLICATE
    elif missing or len(trained) < 2 or any(step != REPLICATES for step in steps):
        verdict = CANNOT_TELL
    else:
        verdict = REPLICATES
    ours = " < ".join(f"{_fmt(as_float(scores[arm].get('f1', math.nan)))}" for arm in trained) or "n/a"
    note = f"arms not trained by this profile: {', '.join(missing)}" if missing else ""
    claims.append(Claim("Table 8", "F1 rises with every skip given CBAM", ORDERING, "f1",
                        " < ".join(_fmt(TABLE8[arm]["f1"]) for arm in arms), f"{ours} ({', '.join(trained)})",
                        math.nan, math.nan, math.nan, verdict, note))
    return claims


#: Folds with both arms trained before the Grad-CAM claim is judged: the claim is about the architecture, and a
#: second training of the same network moves the Grad-CAM share by as much as CBAM does (notebook 10).
MIN_GRADCAM_PAIRS = 3


def paired_focus_difference(focus: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Per test slice, the Grad-CAM share with minus without CBAM where both maps exist (``focus`` as
    :attr:`cmbstudy.study.explanations.Explanations.focus`), and how many slices were left out (a map there is all zero)."""
    with_cbam = focus.xs("with CBAM", level="model")["cam_mass_fraction"].to_numpy(dtype=float)
    without = focus.xs("without CBAM", level="model")["cam_mass_fraction"].to_numpy(dtype=float)
    difference = with_cbam - without  # the arms explain the same slices, in the same order
    paired = np.isfinite(difference)
    return difference[paired], int((~paired).sum())


def explanation_claims(explained: Any, n_resamples: int = 1000, seed: int = 0) -> list[Claim]:
    """Figs. 5-6 (:class:`~cmbstudy.study.explanations.Explanations`): Grad-CAM sits more on the lesions with CBAM.

    The quantity is the difference in the share of Grad-CAM mass near the lesions (with
    minus without CBAM), paired by test slice. The paper's claim is about the architecture,
    so the unit of replication is a pair of trained networks, not a slice: with
    :data:`MIN_GRADCAM_PAIRS` or more folds where both arms were trained
    (``explained.fold_differences``, one mean difference per fold), the estimate is their
    mean with a t interval over folds, and the claim replicates when it lies above zero,
    does not when below. With fewer, the comparison fold's mean and its bootstrap interval
    over slices are shown, and the verdict is "cannot tell": that interval covers the
    slices, not the training, and a network trained again (another thread count, another
    machine's last bits) gives another pair of maps, which turned this estimate's sign
    between two builds. A slice where either arm's map is all zero (its share is
    undefined) leaves the pairs; the note says how many.
    """
    focus = explained.focus
    arms = set(focus.index.get_level_values("model")) if len(focus) else set()
    estimate = low = high = math.nan
    verdict, note = CANNOT_TELL, "an arm was not trained"
    if {"with CBAM", "without CBAM"} <= arms:
        difference, dropped = paired_focus_difference(focus)
        left_out = f"; {dropped} of {len(difference) + dropped} slices left out: a Grad-CAM map there is all zero" \
            if dropped else ""
        if len(difference):
            estimate, low, high = bootstrap_ci(difference, np.mean, n_resamples=n_resamples, seed=seed)
        folds = getattr(explained, "fold_differences", None)
        values = (folds["with minus without"].dropna().to_numpy(dtype=float)
                  if folds is not None and len(folds) else np.zeros(0))
        if len(values) >= MIN_GRADCAM_PAIRS:
            estimate = float(values.mean())
            half = float(scipy_stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
            low, high = estimate - half, estimate + half
            verdict = REPLICATES if low > 0 else DOES_NOT_REPLICATE if high < 0 else CANNOT_TELL
            note = f"mean over {len(values)} folds with both arms, t interval over folds" + left_out
        elif len(difference):
            note = (f"one pair of trained networks: the interval is over {len(difference)} test slices, not over "
                    f"trainings; it is judged once {MIN_GRADCAM_PAIRS} folds have both arms" + left_out)
        else:
            note = "no slice where both arms have a Grad-CAM map"
    return [Claim("Figs. 5-6", "with CBAM, more of the Grad-CAM map lies on the lesions", ORDERING, "cam_focus",
                  "shown, not measured", f"with minus without {_with_ci(estimate, low, high)}", estimate, low, high,
                  verdict, note)]


def looks_claims(looks: Any, main: str = "rlk_unet_cbam") -> list[Claim]:
    """One look or two (:class:`~cmbstudy.study.tables.looks.Looks`): the paper's argument that CBAM on the skips
    makes a second stage unnecessary, as an ordering: the single stage not below the same network with the second
    look."""
    one, two = looks.scores.get(row_label(main, ONE_STAGE)), looks.scores.get(row_label(main, TWO_STAGES))
    return [_ordering_claim("One look or two", "with CBAM on the skips, a second stage adds nothing", "f1",
                            "argued, not measured", one, two, ONE_STAGE, TWO_STAGES,
                            note="" if two or not one else "the run has no second look")]
