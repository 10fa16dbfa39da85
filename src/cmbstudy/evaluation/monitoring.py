"""Scoring ARIA-H monitoring (``cmbstudy evaluate --rule monitoring``): new CMBs against the reference.

The reference is a dataset root with ``ses-baseline``/``ses-followup`` sessions
whose follow-up lesion table marks each CMB ``new`` (the synthetic follow-up
pairs, :mod:`cmbstudy.synth.follow_up`); the predictions are the folder
``cmbstudy monitor ROOT --out DIR`` wrote. For each pair, the follow-up CMBs
that ``monitor`` found are matched one-to-one to the reference's follow-up CMBs
(the paper's rule: centroids within ``distance`` voxels of the follow-up's
grid). A CMB called **new** is a true positive when it matches a reference CMB
that is new; otherwise it is a **false "new"**, either on a persistent CMB
(the baseline's CMB not recognised) or where the reference has no CMB
(detector noise). A reference new CMB not called new is a false negative. The
naive rule (``new_naive``) is scored the same way. Severity is compared per
pair: agreement, with its Wilson 95% interval (scipy's ``binomtest``: a few
dozen pairs, each of which moves the agreement by several points), and Cohen's
kappa with linear weights (scikit-learn).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from ..errors import InputError
from ..synth.follow_up import SEVERITIES, severity_of
from .matching import match_paper
from .scores import detection_scores
from .stats import bootstrap_ci

__all__ = ["MonitoringScores", "score_pair", "reference_table", "choose_threshold", "evaluate_monitoring",
           "severity_breakdown"]


@dataclass(frozen=True)
class MonitoringScores:
    """New-CMB detection over the pairs, and the severity's agreement."""

    per_pair: pd.DataFrame  # one row per pair (see :func:`evaluate_monitoring`)
    summary: dict  # precision, recall, f1 (with ci_low/ci_high), false_new_per_pair, its split, severity

    def format_table(self) -> str:
        s = self.summary
        lines = [f"ARIA-H monitoring: {s['n_pairs']} pairs, {s['n_reference_new']} new CMBs in the reference",
                 f"  paired rule: P {s['precision']:.3f}  R {s['recall']:.3f}  F1 {s['f1']:.3f} "
                 f"[{s['f1_ci_low']:.3f}, {s['f1_ci_high']:.3f}]  false new per pair {s['false_new_per_pair']:.2f} "
                 f"(on a persistent CMB {s['false_new_persistent_per_pair']:.2f}, "
                 f"no CMB there {s['false_new_no_cmb_per_pair']:.2f})",
                 f"  naive rule:  P {s['naive_precision']:.3f}  R {s['naive_recall']:.3f}  F1 {s['naive_f1']:.3f}  "
                 f"false new per pair {s['naive_false_new_per_pair']:.2f}",
                 f"  severity right for {s['severity_agreement']:.1%} of pairs "
                 f"[{s['severity_agreement_ci_low']:.1%}, {s['severity_agreement_ci_high']:.1%}], weighted kappa "
                 f"{s['severity_weighted_kappa']:.3f}"]
        return "\n".join(lines)


def score_pair(found: pd.DataFrame, reference: pd.DataFrame, distance: float = 4.0) -> dict[str, int]:
    """Counts of one pair: ``found`` is monitor's lesion table, ``reference`` the follow-up's lesion table.

    Returns tp, fp (false "new"), fp_persistent (of them on a persistent CMB), fp_no_cmb, fn, and the same for
    the naive rule (``naive_`` prefix), and the predicted new count.
    """
    follow = found[found["detected_followup"].astype(bool)].reset_index(drop=True)
    pred = follow[["fx_vox", "fy_vox", "fz_vox"]].to_numpy(dtype=float).reshape(-1, 3)
    ref = reference[["x_vox", "y_vox", "z_vox"]].to_numpy(dtype=float).reshape(-1, 3)
    ref_new = reference["new"].to_numpy(dtype=bool) if len(reference) else np.zeros(0, bool)
    match = match_paper(pred, ref, distance)
    partner = {int(p): int(r) for p, r in match.pairs}
    out: dict[str, int] = {}
    for prefix, called in (("", follow["status"].eq("new").to_numpy()),
                           ("naive_", follow["new_naive"].astype(bool).to_numpy())):
        tp = fp_persistent = fp_no_cmb = 0
        hit = np.zeros(len(ref), bool)
        for i in np.flatnonzero(called):
            j = partner.get(int(i))
            if j is not None and ref_new[j]:
                tp += 1
                hit[j] = True
            elif j is not None:
                fp_persistent += 1
            else:
                fp_no_cmb += 1
        out.update({f"{prefix}tp": tp, f"{prefix}fp": fp_persistent + fp_no_cmb,
                    f"{prefix}fp_persistent": fp_persistent, f"{prefix}fp_no_cmb": fp_no_cmb,
                    f"{prefix}fn": int((ref_new & ~hit).sum()), f"{prefix}new_count": int(called.sum())})
    return out


def reference_table(ref_root: str | Path, subject: str) -> pd.DataFrame:
    """The follow-up lesion table of pair ``subject`` (``sub-<id>``) of a reference root, with its ``new`` column.

    Raises:
        InputError: the table is missing, or is not a follow-up's (no ``new`` column).
    """
    reference = Path(ref_root) / subject / "ses-followup" / "anat" / f"{subject}_ses-followup_lesions.tsv"
    if not reference.is_file():
        raise InputError(f"{reference} is missing: the reference must hold each pair's follow-up lesion table")
    table = pd.read_csv(reference, sep="\t")
    if "new" not in table:
        raise InputError(f"{reference} has no 'new' column: it is not a follow-up's lesion table")
    return table


def choose_threshold(found: Mapping[str, Mapping[float, pd.DataFrame]], references: Mapping[str, pd.DataFrame],
                     distance: float = 4.0) -> tuple[float, pd.DataFrame]:
    """The second-look threshold with the best pooled F1 of new CMBs over development pairs.

    ``found[pair][threshold]`` is monitor's lesion table of a pair at that threshold
    (:func:`cmbstudy.inference.monitor.pair_tables_by_threshold`), ``references[pair]`` its follow-up lesion table.
    Ties go to fewer false "new", then to the lower threshold: a detection kept on both scans is persistent, so
    monitoring loses less to a sensitive detector than one scan does. Measured on 48 pairs of their own seed (400)
    for two networks of the quick study (RLK-UNet + CBAM folds 0 and 1), the F1 of new CMBs falls as the threshold
    rises (0.865 at 0.05 to 0.836 at 0.425 and 0.563 at 0.95 for fold 0), so of thresholds that development pairs
    cannot tell apart the lowest is the better bet: chosen on four sets of 12 development pairs, it scored 0.861
    there on average against 0.856 with ties to the higher one (fold 1: 0.889 against 0.884). Returns
    the threshold and one row per threshold: pairs, tp, fp, fn, precision, recall, f1, false_new_per_pair,
    severity_agreement.

    Raises:
        InputError: no pair, or pairs without the same thresholds.
    """
    if not found:
        raise InputError("no development pair to choose monitoring's threshold on")
    grids = {tuple(sorted(tables)) for tables in found.values()}
    if len(grids) != 1:
        raise InputError("the development pairs were not all monitored at the same thresholds")
    rows = []
    for threshold in grids.pop():
        counts = [score_pair(found[pair][threshold], references[pair], distance) for pair in found]
        tp, fp, fn = (sum(c[k] for c in counts) for k in ("tp", "fp", "fn"))
        precision, recall, f1 = detection_scores(tp, fp, fn)
        right = [severity_of(c["new_count"]) == severity_of(int(references[pair]["new"].sum()))
                 for c, pair in zip(counts, found)]
        rows.append({"threshold": threshold, "pairs": len(found), "tp": tp, "fp": fp, "fn": fn,
                     "precision": precision, "recall": recall, "f1": f1, "false_new_per_pair": fp / len(found),
                     "severity_agreement": float(np.mean(right))})
    table = pd.DataFrame(rows).set_index("threshold")
    scored = table[table["f1"].notna()]
    if scored.empty:
        return float(table.index.max()), table
    best = max(scored.index, key=lambda t: (scored.at[t, "f1"], -scored.at[t, "fp"], -t))
    return float(best), table


def evaluate_monitoring(pred_dir: str | Path, ref_root: str | Path, distance: float = 4.0,
                        n_bootstrap: int = 1000, seed: int = 0, json_out: str | Path | None = None
                        ) -> MonitoringScores:
    """Score ``cmbstudy monitor``'s outputs in ``pred_dir`` against the pairs of ``ref_root``.

    Raises:
        InputError: a reference without follow-up lesion tables, or no pair monitored.
    """
    pred_dir, ref_root = Path(pred_dir), Path(ref_root)
    participants = ref_root / "participants.tsv"
    if not participants.is_file():
        raise InputError(f"{ref_root} has no participants.tsv: give the follow-up pairs' dataset root")
    truth = pd.read_csv(participants, sep="\t").set_index("participant_id")
    rows = []
    for subject in sorted(p for p in pred_dir.glob("sub-*") if p.is_dir()):
        table_path, summary_path = subject / "lesions.tsv", subject / "monitor.json"
        if not table_path.is_file() or not summary_path.is_file():
            continue
        ref_table = reference_table(ref_root, subject.name)
        found = pd.read_csv(table_path, sep="\t")
        counts = score_pair(found, ref_table, distance)
        summary = json.loads(summary_path.read_text())
        ref_new = int(ref_table["new"].sum())
        rows.append({"subject_id": subject.name, **counts, "reference_new": ref_new,
                     "severity": summary["aria_h_severity"], "reference_severity": severity_of(ref_new),
                     "rotation_deg": truth.loc[subject.name].get("rotation_deg", np.nan),
                     "translation_mm": truth.loc[subject.name].get("translation_mm", np.nan),
                     "site_change": truth.loc[subject.name].get("site_baseline")
                     != truth.loc[subject.name].get("site_followup"),
                     "brain_dice": summary["registration"]["brain_dice"]})
    if not rows:
        raise InputError(f"{pred_dir} holds no monitored pair (sub-*/monitor.json): run cmbstudy monitor ROOT first")
    per_pair = pd.DataFrame(rows)
    totals = per_pair[["tp", "fp", "fn", "naive_tp", "naive_fp", "naive_fn"]].sum()
    precision, recall, f1 = detection_scores(int(totals["tp"]), int(totals["fp"]), int(totals["fn"]))
    naive = detection_scores(int(totals["naive_tp"]), int(totals["naive_fp"]), int(totals["naive_fn"]))
    counts = per_pair[["tp", "fp", "fn"]].to_numpy(dtype=float)

    def pooled_f1(sample: np.ndarray) -> float:
        return detection_scores(*(int(v) for v in sample.sum(axis=0)))[2]

    _, low, high = bootstrap_ci(counts, pooled_f1, n_resamples=n_bootstrap, seed=seed)
    naive_counts = per_pair[["naive_tp", "naive_fp", "naive_fn"]].to_numpy(dtype=float)
    _, naive_low, naive_high = bootstrap_ci(naive_counts, pooled_f1, n_resamples=n_bootstrap, seed=seed)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    ref_sev, our_sev = per_pair["reference_severity"].map(order), per_pair["severity"].map(order)
    kappa = (float(cohen_kappa_score(ref_sev, our_sev, weights="linear", labels=list(range(len(SEVERITIES)))))
             if len(set(ref_sev) | set(our_sev)) > 1 else float("nan"))
    n = len(per_pair)
    right = int((ref_sev == our_sev).sum())
    agreement = binomtest(right, n).proportion_ci(confidence_level=0.95, method="wilson")
    summary = {
        "n_pairs": n, "n_reference_new": int(per_pair["reference_new"].sum()), "distance_voxels": distance,
        "precision": precision, "recall": recall, "f1": f1, "f1_ci_low": low, "f1_ci_high": high,
        "false_new_per_pair": float(totals["fp"]) / n,
        "false_new_persistent_per_pair": float(per_pair["fp_persistent"].sum()) / n,
        "false_new_no_cmb_per_pair": float(per_pair["fp_no_cmb"].sum()) / n,
        "naive_precision": naive[0], "naive_recall": naive[1], "naive_f1": naive[2],
        "naive_f1_ci_low": naive_low, "naive_f1_ci_high": naive_high,
        "naive_false_new_per_pair": float(totals["naive_fp"]) / n,
        "severity_right": right, "severity_agreement": right / n, "severity_agreement_ci_low": agreement.low,
        "severity_agreement_ci_high": agreement.high, "severity_weighted_kappa": kappa,
    }
    summary = {key: float(v) if isinstance(v, np.floating) else int(v) if isinstance(v, np.integer) else v
               for key, v in summary.items()}  # plain numbers: glued into the book and written as JSON
    scores = MonitoringScores(per_pair, summary)
    if json_out is not None:
        Path(json_out).write_text(json.dumps({"summary": summary, "per_pair": per_pair.to_dict("records")},
                                             indent=2, default=float) + "\n")
    return scores


def severity_breakdown(per_pair: pd.DataFrame) -> pd.DataFrame:
    """Per reference severity (:data:`~cmbstudy.synth.follow_up.SEVERITIES`, rows): the pairs, the share of them
    whose severity is right, their new CMBs and the share of those called new (recall; NaN where none).

    ``per_pair``: :attr:`MonitoringScores.per_pair` (an empty frame gives rows of no pairs). A severe pair (10 or more new CMBs) is right only when
    nearly all of its new CMBs are found, so its row shows what the agreement over all pairs hides.
    """
    rows = []
    if per_pair.empty:
        per_pair = pd.DataFrame(columns=["reference_severity", "severity", "reference_new", "tp"])
    for severity in SEVERITIES:
        pairs = per_pair[per_pair["reference_severity"] == severity]
        new = int(pairs["reference_new"].sum())
        rows.append({"reference severity": severity, "pairs": len(pairs),
                     "severity right": float((pairs["severity"] == severity).mean()) if len(pairs) else math.nan,
                     "new CMBs": new, "recall of new CMBs": float(pairs["tp"].sum() / new) if new else math.nan})
    return pd.DataFrame(rows).set_index("reference severity")
