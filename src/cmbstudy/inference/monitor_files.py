"""``cmbstudy monitor``'s inputs and outputs: the pairs of a dataset root, and the files of each pair.

A pair's folder holds ``monitor.json`` (the new count, the ARIA-H severity, the
registration's quality, the rule), ``lesions.tsv`` (:func:`~cmbstudy.inference.monitor.pair_lesions`),
the status map and the registered follow-up in the baseline's space, and the
PDF report. A dataset root gives one folder per subject; one pair writes at the
top. The whole output is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from .. import __version__
from ..data.io import atomic_output_dir, check_output_dir, save_nifti, write_json
from ..device import resolve_device
from ..errors import ConfigError, InputError, OutputError
from ..evaluation.monitoring import choose_threshold, reference_table
from ..evaluation.operating_point import OperatingPoint
from ..synth.follow_up import SEVERITY_RULE
from .detect import subject_label
from .model_store import DetectionModel, load_detection_model
from .monitor import (BACKGROUND_PERCENTILE, DARKNESS_RATIO, PAIR_DISTANCE_MM, PairResult, check_pair_inputs,
                      monitor_pair, pair_tables_by_threshold)
from .pipeline import describe_rule
from .second_look import THRESHOLDS
from .rigid import MIN_BRAIN_DICE, resample_onto, to_sitk

__all__ = ["STATUS_LABELS", "PAIR_SUMMARY", "PAIR_LESIONS", "PAIR_STATUS_MAP", "PAIR_REGISTERED", "PAIR_REPORT",
           "PairInput", "MonitorSummary", "find_pairs", "write_pair", "monitoring_point",
           "choose_monitoring_threshold", "check_monitoring_record", "record_monitoring_threshold", "monitor_path"]

#: Labels of the status map written in the baseline's space.
STATUS_LABELS = {"persistent": 1, "new": 2, "not seen": 3}
PAIR_SUMMARY = "monitor.json"
PAIR_LESIONS = "lesions.tsv"
PAIR_STATUS_MAP = "space-baseline_desc-cmbstatus_dseg.nii.gz"
PAIR_REGISTERED = "ses-followup_space-baseline_desc-registered.nii.gz"
PAIR_REPORT = "monitor_report.pdf"


@dataclass(frozen=True)
class PairInput:
    """One baseline/follow-up pair to monitor, with the brain masks that go with it (if any)."""

    subject_id: str
    baseline: Path
    followup: Path
    baseline_mask: Path | None = None
    followup_mask: Path | None = None


def _magnitude(anat: Path) -> Path | None:
    found = sorted(p for p in anat.glob("*.nii*") if p.name.split(".")[0].endswith(("_T2starw", "_swi"))
                   and "part-phase" not in p.name)
    return found[0] if found else None


def find_pairs(root: Path) -> list[PairInput]:
    """The pairs of a dataset root with BIDS sessions ``ses-baseline`` and ``ses-followup`` (magnitude images,
    and the ``_label-brain_mask`` beside each where there is one).

    Raises:
        InputError: no subject has both sessions.
    """
    pairs = []
    for subject in sorted(p for p in Path(root).glob("sub-*") if p.is_dir()):
        scans = [_magnitude(subject / f"ses-{s}" / "anat") for s in ("baseline", "followup")]
        if None in scans:
            continue
        masks = []
        for scan in scans:
            mask = scan.with_name(scan.name.split(".")[0].rsplit("_", 1)[0] + "_label-brain_mask.nii.gz")
            masks.append(mask if mask.is_file() else None)
        pairs.append(PairInput(subject.name.removeprefix("sub-"), scans[0], scans[1], masks[0], masks[1]))
    if not pairs:
        raise InputError(f"{root} holds no subject with both sub-<id>/ses-baseline/anat and ses-followup/anat "
                         "scans: give BASELINE and FOLLOWUP files, or a dataset root with both sessions")
    return pairs


def write_pair(result: PairResult, pair: PairInput, folder: Path, model: DetectionModel, modality: str,
               report: Callable[[PairResult, Path, Mapping[str, Any]], Path] | None = None,
               point: OperatingPoint | None = None) -> dict[str, Path]:
    """Write one pair's outputs into ``folder``: the summary, the lesion table, the status map and the
    registered follow-up in the baseline's space, and the report. ``point``: the lesion rule both scans were
    detected with (default the model's)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = result.baseline
    affine = np.asarray(base.image.affine, dtype=float)
    status = np.zeros(base.lesions.labels.shape, dtype=np.int16)
    table = result.lesions
    # each CMB's status painted on its own component: the baseline's, or the follow-up's brought over
    follow_labels = resample_onto(
        to_sitk(result.followup.image, result.followup.lesions.labels.astype(np.float32)), to_sitk(base.image),
        result.registration.transform, sitk.sitkNearestNeighbor).astype(np.int32)
    for row in table.itertuples():  # the follow-up's components first: they carry every new CMB
        if row.followup_lesion:
            status[(follow_labels == row.followup_lesion) & (status == 0)] = STATUS_LABELS[row.status]
    for row in table.itertuples():
        if not row.followup_lesion:
            status[(base.lesions.labels == row.baseline_lesion) & (status == 0)] = STATUS_LABELS[row.status]
    files = {"lesions": folder / PAIR_LESIONS,
             "status_map": save_nifti(status, affine, folder / PAIR_STATUS_MAP, np.int16),
             "registered_followup": save_nifti(result.followup_in_baseline, affine, folder / PAIR_REGISTERED,
                                               np.float32)}
    table.to_csv(files["lesions"], sep="\t", index=False, float_format="%.4f")
    summary = {
        "subject_id": pair.subject_id, "baseline": pair.baseline.name, "followup": pair.followup.name,
        "modality": modality, "new_count": result.new_count, "aria_h_severity": result.severity,
        "persistent_count": int((table["status"] == "persistent").sum()) if len(table) else 0,
        "not_seen_count": int((table["status"] == "not seen").sum()) if len(table) else 0,
        "new_count_naive": result.new_count_naive,
        "baseline_cmb_count": int(base.lesions.n), "followup_cmb_count": int(result.followup.lesions.n),
        "registration": {"method": "rigid (Euler 3D), SimpleITK: the brains' outlines, then Mattes mutual "
                                   "information inside the baseline's brain",
                         "brain_dice": round(result.registration.brain_dice, 4),
                         "min_brain_dice": MIN_BRAIN_DICE,
                         "intensity_refinement_kept": result.registration.refined,
                         "correlation": round(result.registration.correlation, 4),
                         "rotation_deg": round(result.registration.rotation_deg, 3),
                         "translation_mm": round(result.registration.translation_mm, 3)},
        "pairing": {"distance_mm": PAIR_DISTANCE_MM, "darkness_ratio": DARKNESS_RATIO,
                    "background_percentile": BACKGROUND_PERCENTILE,
                    "background_darkness": {"baseline": round(result.backgrounds[0], 4),
                                            "followup": round(result.backgrounds[1], 4)},
                    "rule": "new: found on the follow-up, not on the baseline, and no dark focus at the "
                            f"registered place on the baseline scan at least {DARKNESS_RATIO:g} times as dark and "
                            f"darker than the {BACKGROUND_PERCENTILE:g}th percentile of the baseline's background"},
        "severity_rule": f"{SEVERITY_RULE} (Cummings et al. 2023)",
        "method": describe_rule(point or model.point_for(None), model.second_look),
        "model": {"name": model.name, "source": model.source},
        "brain_extraction": {"baseline": base.brain_source, "followup": result.followup.brain_source},
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "cmbstudy_version": __version__, "intended_use": model.intended_use,
    }
    if report is not None:
        files["report"] = report(result, folder / PAIR_REPORT, summary)
    files["summary"] = folder / PAIR_SUMMARY
    summary["outputs"] = {kind: path.name for kind, path in files.items()}
    write_json(files["summary"], summary)
    return files


@dataclass(frozen=True)
class MonitorSummary:
    """What :func:`monitor_path` wrote (printed by ``cmbstudy monitor``)."""

    out: Path
    pairs: tuple[tuple[PairInput, PairResult], ...]

    def __str__(self) -> str:
        lines = [f"monitored {len(self.pairs)} pair(s) -> {self.out}"]
        for pair, result in self.pairs:
            lines.append(f"  {pair.subject_id}: {result.new_count} new CMB(s), ARIA-H severity {result.severity} "
                         f"({int((result.lesions['status'] == 'persistent').sum()) if len(result.lesions) else 0} "
                         f"persistent; brains overlap {result.registration.brain_dice:.3f} after registration, "
                         f"{result.seconds['total']:.1f} s)")
        return "\n".join(lines)


def _date(text: str | date | None, what: str) -> date | None:
    if text is None or isinstance(text, date):
        return text
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise InputError(f"{what} {text!r} is not a date: give it as YYYY-MM-DD") from None


def monitoring_point(model: DetectionModel, single_stage: bool = False, second_look: float | None = None
                     ) -> OperatingPoint:
    """The lesion rule ``monitor`` detects both scans with: the model's (or its single stage), with the second
    look at ``second_look`` where given (``--second-look``), else at the model's monitoring threshold where one
    was chosen on development pairs (:func:`choose_monitoring_threshold`), else at its own.

    Raises:
        ConfigError: ``second_look`` outside (0, 1), or given with a single stage or a model without a second look.
    """
    point = model.point_for(None, single_stage)
    if second_look is None:
        chosen = None if point.second_look is None else model.second_look.monitoring_threshold
        return point if chosen is None else dataclasses.replace(point, second_look=chosen)
    if point.second_look is None:
        raise ConfigError("--second-look needs the model's second look: drop it, or drop --single-stage")
    if not 0.0 < float(second_look) < 1.0:
        raise ConfigError(f"--second-look {second_look}: give a score threshold between 0 and 1")
    return dataclasses.replace(point, second_look=float(second_look))


def choose_monitoring_threshold(model: DetectionModel, root: Path, device: str = "auto", distance: float = 4.0,
                                progress: bool = True) -> tuple[float, pd.DataFrame]:
    """Monitoring's second-look threshold for ``model``, chosen on the pairs of ``root`` (development pairs with
    their follow-up lesion tables, never the pairs it will be scored on): the threshold of the second look's grid
    (:data:`~cmbstudy.inference.second_look.THRESHOLDS`) with the best pooled F1 of new CMBs
    (:func:`cmbstudy.evaluation.monitoring.choose_threshold`), and the scores at each.

    A vein or a calcification that the detector keeps on both scans is persistent, not new, so the threshold
    that is best for counting one scan need not be best for counting what changed.

    Raises:
        ConfigError: the model has no second look. InputError: pairs without lesion tables, or refused.
    """
    if model.second_look is None:
        raise ConfigError(f"{model.source} has no second look: there is no threshold of it to choose")
    dev = resolve_device(device)
    found, references = {}, {}
    for pair in tqdm(find_pairs(Path(root)), desc="development pairs", unit="pair", disable=not progress):
        subject = f"sub-{pair.subject_id}"
        references[subject] = reference_table(root, subject)
        try:
            found[subject] = pair_tables_by_threshold(pair.baseline, pair.followup, model, dev, THRESHOLDS,
                                                      pair.baseline_mask, pair.followup_mask)
        except InputError as exc:
            raise InputError(f"{subject}: {exc}") from None
    return choose_threshold(found, references, distance)


def check_monitoring_record(path: Path, overwrite: bool = False) -> tuple[Path, dict[str, Any]]:
    """The sidecar of the second look at ``path`` and what it holds, when a monitoring threshold may be recorded
    there: call it before choosing one, so that a refusal costs nothing.

    Raises:
        InputError: no second look at ``path``. OutputError: it has a monitoring threshold and ``overwrite`` is
            false.
    """
    sidecar = Path(path).with_suffix(".json")  # as save_second_look writes it
    if not Path(path).is_file() or not sidecar.is_file():
        raise InputError(f"second look {path} (and its {sidecar.name}) not found")
    info = json.loads(sidecar.read_text())
    if "monitoring" in info and not overwrite:
        raise OutputError(f"{sidecar} already holds a monitoring threshold ({info['monitoring'].get('threshold')}): "
                          "pass --overwrite to replace it")
    return sidecar, info


def record_monitoring_threshold(path: Path, threshold: float, record: Mapping[str, Any], overwrite: bool = False
                                ) -> Path:
    """Write monitoring's threshold (and how it was chosen, ``record``) into the sidecar of the second look at
    ``path``; the second look itself is unchanged. Retraining it
    (:func:`~cmbstudy.inference.second_look.save_second_look`) drops the record.

    Raises:
        InputError: no second look at ``path``. OutputError: it has a monitoring threshold and ``overwrite`` is
            false.
    """
    sidecar, info = check_monitoring_record(path, overwrite)
    info["monitoring"] = {"threshold": float(threshold), **dict(record)}
    write_json(sidecar, info)
    return sidecar


def monitor_path(
    baseline: str | Path, followup: str | Path | None, out: str | Path,
    model: str | Path | DetectionModel | None = None, device: str = "auto", overwrite: bool = False,
    progress: bool = True, report: Callable[[PairResult, Path, Mapping[str, Any]], Path] | None = None,
    single_stage: bool = False, brain_extraction: str = "auto", modality: str | None = None,
    baseline_date: str | date | None = None, followup_date: str | date | None = None,
    baseline_mask: str | Path | None = None, followup_mask: str | Path | None = None,
    second_look: float | None = None,
) -> MonitorSummary:
    """Monitor one pair (two files) or every pair of a dataset root (``followup`` None), into ``out``.

    One pair writes ``OUT/monitor.json`` and the rest at the top; a dataset root writes ``OUT/sub-<id>/``. The
    whole ``out`` is written atomically: an error (a pair refused, a bad file) leaves nothing behind. Both scans
    are detected under :func:`monitoring_point` (``second_look``: its threshold, default the model's).

    Raises:
        InputError: a missing or bad scan, two modalities, a follow-up dated before its baseline, a pair
            that is not one head; OutputError: ``out`` holds results and ``overwrite`` is false;
        ConfigError: a bad ``second_look``.
    """
    baseline, out = Path(baseline).expanduser(), Path(out).expanduser()
    if followup is None:
        if not baseline.is_dir():
            raise InputError(f"{baseline} is not a folder: give BASELINE and FOLLOWUP scans, or a dataset root "
                             "with ses-baseline and ses-followup sessions")
        pairs, single = find_pairs(baseline), False
    else:
        followup = Path(followup).expanduser()
        for path, what in ((baseline, "baseline"), (followup, "follow-up")):
            if not path.is_file():
                raise InputError(f"the {what} scan {path} does not exist")
        pairs = [PairInput(subject_label(baseline).split("_ses-")[0], baseline, followup,
                           Path(baseline_mask) if baseline_mask else None,
                           Path(followup_mask) if followup_mask else None)]
        single = True
    dates = _date(baseline_date, "--baseline-date"), _date(followup_date, "--followup-date")
    kinds = [check_pair_inputs(p.baseline, p.followup, *dates, modality=modality) for p in pairs]
    loaded = model if isinstance(model, DetectionModel) else load_detection_model(model)
    point = monitoring_point(loaded, single_stage, second_look)
    dev = resolve_device(device)
    check_output_dir(out, overwrite)
    done = []
    with atomic_output_dir(out, overwrite) as tmp:
        for pair, kind in tqdm(list(zip(pairs, kinds)), desc="monitor", unit="pair", disable=not progress):
            try:
                result = monitor_pair(pair.baseline, pair.followup, loaded, dev, single_stage, pair.baseline_mask,
                                      pair.followup_mask, brain_extraction, point)
            except InputError as exc:
                raise InputError(f"sub-{pair.subject_id}: {exc}") from None
            write_pair(result, pair, tmp if single else tmp / f"sub-{pair.subject_id}", loaded, kind, report, point)
            done.append((pair, result))
        write_json(tmp / "dataset_description.json", {
            "Name": "cmbstudy monitor", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "cmbstudy monitor", "Version": __version__}]})
    return MonitorSummary(out, tuple(done))
