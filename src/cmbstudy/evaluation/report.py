"""The result of ``cmbstudy evaluate``: pooled and per-subject numbers, as a table and as JSON.

``EvaluationReport.to_json()`` is what ``--json`` and the study's ``eval-*.json``
files hold; :func:`froc_from_json` reads its FROC curve back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..data.io import to_json_safe
from ..formatting import format_value
from .scores import FrocCurve
from .subsets import SMALL_DIAMETER_MM

__all__ = ["EvaluationReport", "froc_from_json"]


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
    froc: FrocCurve | None = None
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
        return to_json_safe({"settings": self.settings, "summary": self.summary,
                       "per_subject": self.per_subject, "froc_curve": froc})

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> "EvaluationReport":
        """The report of a :meth:`to_json` dict (an ``eval-*.json`` file); NaN values come back as None."""
        return cls(summary=dict(payload["summary"]), per_subject=list(payload["per_subject"]),
                   froc=froc_from_json(payload.get("froc_curve")), settings=dict(payload.get("settings") or {}))

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
                f"{name:<10}{format_value(row['precision']):>10}{format_value(row['recall']):>8}{format_value(row['f1']):>8}"
                f"{format_value(row['fp_per_subject'], 2):>9}{row['n_tp']:>6}{row['n_fp']:>6}{row['n_fn']:>6}"
            )
        ci = s["ci95"]
        lines.append(
            "95% CI (bootstrap over subjects): "
            + ", ".join(f"{k} [{format_value(lo)}, {format_value(hi)}]" for k, (lo, hi) in ci.items())
        )
        q1, q3 = s["iqr_f1"]
        lines.append(
            f"per-subject F1: median {format_value(s['median_f1'])} (IQR {format_value(q1)}-{format_value(q3)}, "
            f"{s['n_subjects_with_f1']} subjects); mean |count difference| {format_value(s['mean_abs_count_difference'], 2)}"
        )
        if s["froc"]:
            lines.append(
                "FROC sensitivity at FP/subject "
                + ", ".join(f"{k}: {format_value(v)}" for k, v in s["froc"].items())
            )
        lines += ["", f"{'subject':<12}{'ref':>5}{'pred':>6}{'TP':>5}{'FP':>5}{'FN':>5}{'precision':>11}{'recall':>8}{'F1':>7}"]
        for r in self.per_subject:
            lines.append(
                f"{r['subject_id']:<12}{r['n_ref']:>5}{r['n_pred']:>6}{r['n_tp']:>5}{r['n_fp']:>5}{r['n_fn']:>5}"
                f"{format_value(r['precision']):>11}{format_value(r['recall']):>8}{format_value(r['f1']):>7}"
            )
        return "\n".join(lines)


def froc_from_json(payload: Mapping[str, Any] | None) -> FrocCurve | None:
    """The FROC curve of an ``EvaluationReport.to_json()`` ``"froc_curve"`` entry (null thresholds are +inf)."""
    if not payload:
        return None
    thresholds = np.array([np.inf if v is None else v for v in payload["thresholds"]], dtype=float)
    return FrocCurve(thresholds, np.asarray(payload["fp_per_subject"], float), np.asarray(payload["sensitivity"], float))
