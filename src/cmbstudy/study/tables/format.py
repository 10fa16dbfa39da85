"""The one layout of every "paper beside ours" table, and the names the tables give methods and data.

Every table of the study shows, per row and metric, the paper's figure, ours
and our 95% bootstrap interval, each column labelled by the data it comes from
(:data:`cmbstudy.study.paper.PAPER_DATASET_LABEL` and ``"ours (<dataset>)"``).
:func:`compare_with_paper` builds that table from :class:`ComparedRow` rows;
:func:`summary_scores` reads our scores from an evaluation summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import pandas as pd

from ...errors import InputError
from ...evaluation.scores import DETECTION_METRICS
from ...formatting import as_float, format_value
from ..paper import PAPER_DATASET_LABEL

__all__ = [
    "ONE_STAGE",
    "TWO_STAGES",
    "LOG_FLOOR",
    "row_label",
    "CLASSICAL",
    "METHOD_LABELS",
    "DISPLAY_NAMES",
    "CI_COLUMN",
    "ComparedRow",
    "method_label",
    "summary_scores",
    "compare_with_paper",
    "ABOVE",
    "BELOW",
    "CANNOT_TELL",
    "ordering_verdict",
]

#: The rules of the "one look or two" chapter (:mod:`cmbstudy.study.tables.looks`): the paper's single stage and
#: the network with the second look; and its row of the LoG floor with the main network's second look
#: (:mod:`cmbstudy.study.tables.log_floor`).
ONE_STAGE, TWO_STAGES = "one stage", "with the second look"
LOG_FLOOR = "LoG floor, with the second look"

#: Name of the classical LoG detector among the methods (it has no variant and no run).
CLASSICAL = "classical"

#: Row label of each method, by variant name (``Profile.variants``); a variant not listed is shown by its name.
METHOD_LABELS: Mapping[str, str] = MappingProxyType({
    "rlk_unet_cbam": "RLK-UNet + CBAM (Cho 2026)",
    "dou2016": "Dou 2016 (two-stage 3D CNN)",
    "fan2022": "Fan 2022 (multi-slice U-Net)",
    "wei2022": "Wei 2022 (MMOC-Net)",
    "tsuchida2024": "Tsuchida 2024 (SHIVA-CMB 3D U-Net)",
    "nnunet": "nnU-Net-style DynUNet",
    "without_cbam": "RLK-UNet without CBAM",
    "cbam_skip1": "RLK-UNet, CBAM on the deepest skip",
    "cbam_skip2": "RLK-UNet, CBAM on the two deepest skips",
    CLASSICAL: "classical LoG detector",
})

#: Column heading of each metric; other metrics are shown by their name.
DISPLAY_NAMES: Mapping[str, str] = MappingProxyType({
    "precision": "precision", "recall": "recall", "f1": "F1", "fp_per_subject": "FP / subject",
})
#: Sub-column of our 95% bootstrap interval.
CI_COLUMN = "95% CI"
# metrics printed with two decimals (counts per subject); every other metric gets three
_TWO_DECIMALS = ("fp_per_subject", "mean_abs_count_difference", "median_abs_count_difference")


@dataclass(frozen=True)
class ComparedRow:
    """One row of a comparison table.

    Attributes:
        label: the row label.
        ours: metric -> our value, with ``<metric>_ci_low`` / ``<metric>_ci_high`` when known
            (:func:`summary_scores`); None when the run is missing ("not run").
        paper: metric -> the paper's figure; metrics it lacks show "n/a".
    """

    label: str
    ours: Mapping[str, float] | None
    paper: Mapping[str, float] = field(default_factory=dict)


def method_label(name: str) -> str:
    """Row label of a method (:data:`METHOD_LABELS`), its variant name when it has none."""
    return METHOD_LABELS.get(name, name)


def summary_scores(summary: Mapping[str, Any] | None, metrics: Sequence[str] = DETECTION_METRICS
                   ) -> dict[str, float]:
    """``metrics`` and their ``_ci_low`` / ``_ci_high`` from an evaluation summary (null -> NaN).

    ``summary`` is ``EvaluationReport.summary`` or the ``"summary"`` of an ``eval-*.json``;
    None gives NaN everywhere.
    """
    summary = summary or {}
    scores = {m: as_float(summary.get(m)) for m in metrics}
    for metric in metrics:
        low, high = (summary.get("ci95", {}) or {}).get(metric) or (None, None)
        scores[f"{metric}_ci_low"], scores[f"{metric}_ci_high"] = as_float(low), as_float(high)
    return scores


def _digits(metric: str) -> int:
    return 2 if metric in _TWO_DECIMALS else 3


def _interval(ours: Mapping[str, float], metric: str) -> str:
    low, high = ours.get(f"{metric}_ci_low", math.nan), ours.get(f"{metric}_ci_high", math.nan)
    if not (math.isfinite(as_float(low)) and math.isfinite(as_float(high))):
        return "n/a"
    return f"[{format_value(as_float(low), _digits(metric))}, {format_value(as_float(high), _digits(metric))}]"


def compare_with_paper(
    rows: Sequence[ComparedRow],
    dataset: str,
    metrics: Sequence[str] = DETECTION_METRICS,
    paper_label: str = PAPER_DATASET_LABEL,
    extra: Mapping[str, Sequence[str]] | None = None,
    index_name: str = "",
) -> pd.DataFrame:
    """The table: per metric the paper's figure, ours and our 95% CI, each labelled by its data.

    Args:
        rows: the rows, in order.
        dataset: the data our numbers come from, e.g. "synthetic cohort" (:func:`cmbstudy.study.runs.dataset_label`).
        metrics: the metric columns, in order (headings :data:`DISPLAY_NAMES`).
        paper_label: the paper's column label.
        extra: more columns (heading -> one text per row), after the metrics.
        index_name: name of the row index.

    Returns:
        Text cells (three decimals, two for counts per subject; "n/a" when undefined); columns
        ``(metric heading, paper_label | "ours (<dataset>)" | "95% CI")`` then ``("", heading)``.
        A row whose ``ours`` is None reads "not run" in its CI cells.

    Raises:
        InputError: ``dataset`` is empty, or an ``extra`` column has not one text per row.
    """
    if not str(dataset).strip():
        raise InputError("the dataset label must name the data our numbers come from, e.g. 'synthetic cohort'")
    ours_label = f"ours ({dataset})"
    columns: dict[tuple[str, str], list[str]] = {}
    for metric in metrics:
        head, digits = DISPLAY_NAMES.get(metric, metric), _digits(metric)
        columns[(head, paper_label)] = [format_value(as_float(r.paper.get(metric)), digits) for r in rows]
        columns[(head, ours_label)] = [format_value(as_float((r.ours or {}).get(metric)), digits) for r in rows]
        columns[(head, CI_COLUMN)] = ["not run" if r.ours is None else _interval(r.ours, metric) for r in rows]
    for heading, values in (extra or {}).items():
        if len(values) != len(rows):
            raise InputError(f"extra column {heading!r} has {len(values)} values for {len(rows)} rows")
        columns[("", heading)] = [str(v) for v in values]
    frame = pd.DataFrame(columns, index=pd.Index([r.label for r in rows], name=index_name))
    frame.columns = pd.MultiIndex.from_tuples(list(columns), names=["", "data"])
    return frame


#: The three verdicts of :func:`ordering_verdict`.
ABOVE, BELOW, CANNOT_TELL = "above", "below", "cannot tell"


def _bounds(scores: Mapping[str, float] | None, metric: str) -> tuple[float, float]:
    scores = scores or {}
    return as_float(scores.get(f"{metric}_ci_low")), as_float(scores.get(f"{metric}_ci_high"))


def ordering_verdict(first: Mapping[str, float] | None, second: Mapping[str, float] | None,
                     metric: str = "f1") -> str:
    """Whether ``first`` scores above or below ``second`` on ``metric``, judged by their 95% intervals.

    :data:`ABOVE` when the whole interval of ``first`` lies above the whole interval of
    ``second``, :data:`BELOW` when below, :data:`CANNOT_TELL` when the intervals overlap or
    either is unknown: an ordering inside the intervals can flip with the training seed.

    Args:
        first, second: :func:`summary_scores`-like mappings with ``<metric>_ci_low`` / ``_ci_high``.
    """
    (low_a, high_a), (low_b, high_b) = _bounds(first, metric), _bounds(second, metric)
    if not all(math.isfinite(v) for v in (low_a, high_a, low_b, high_b)):
        return CANNOT_TELL
    if low_a > high_b:
        return ABOVE
    if high_a < low_b:
        return BELOW
    return CANNOT_TELL


def row_label(variant: str, rule: str) -> str:
    """``"<network>, one stage"`` or ``"<network>, with the second look"``."""
    return f"{method_label(variant)}, {rule}"
