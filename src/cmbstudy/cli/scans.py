"""The commands on a user's own scans, ``detect`` and ``monitor``, and the monitoring parts of ``synth`` and
``evaluate``: argument parsing only; the work is done by :mod:`cmbstudy.inference` and :mod:`cmbstudy.evaluation`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..config import Profile
from ..errors import ConfigError

__all__ = ["add_scan_commands", "synth_follow_up", "evaluate_monitoring_command"]


def _cmd_detect(args: argparse.Namespace) -> int:
    from ..data.viewer_assets import find_niivue
    from ..errors import InputError
    from ..figures.detect_viewer import write_detection_index, write_detection_viewer_data
    from ..figures.report import write_detection_reports
    from ..inference.detect import detect_path
    from ..inference.location import assign_locations

    try:
        find_niivue()
        no_viewer = ""
    except InputError as error:  # the detections do not need it: only index.html does
        no_viewer = str(error)

    def reports(*scan: Any) -> dict[str, Path]:  # the PNG and PDF reports, and the scan's file for index.html
        return {**write_detection_reports(*scan), **({} if no_viewer else write_detection_viewer_data(*scan))}

    summary = detect_path(
        args.scan, args.out, model=args.model, modality=args.modality, threshold=args.threshold,
        brain_mask=args.brain_mask, device=args.device, overwrite=args.overwrite, progress=not args.quiet,
        report=reports, brain_extraction=args.brain_extraction,
        brain_mask_pattern=args.brain_mask_pattern, overrides=args.set,
        locate=None if args.no_location else assign_locations, single_stage=args.single_stage,
    )
    print(summary)
    if no_viewer:
        print(f"  no viewer page: {no_viewer}")
    else:
        print(f"  viewer (opens offline): {write_detection_index(summary.out, summary.scans, summary.intended_use)}")
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    from ..figures.monitor import write_monitoring_report
    from ..inference.monitor_files import monitor_path

    summary = monitor_path(
        args.baseline, args.followup, args.out, model=args.model, device=args.device, overwrite=args.overwrite,
        progress=not args.quiet, report=write_monitoring_report, single_stage=args.single_stage,
        brain_extraction=args.brain_extraction, modality=args.modality, baseline_date=args.baseline_date,
        followup_date=args.followup_date, baseline_mask=args.baseline_mask, followup_mask=args.followup_mask,
        second_look=args.second_look,
    )
    print(summary)
    return 0


def synth_follow_up(args: argparse.Namespace, profile: Profile) -> int:
    """``cmbstudy synth --follow-up``: the baseline/follow-up pairs (:mod:`cmbstudy.synth.follow_up`)."""
    from ..synth.follow_up import SEVERITIES, make_follow_up_cohort

    if args.test:
        raise ConfigError("--follow-up and --test are two cohorts: give one of them")
    table = make_follow_up_cohort(args.out, profile, n_subjects=args.n_subjects, seed=args.seed,
                                  overwrite=args.overwrite, progress=not args.quiet, workers=args.workers)
    severities = table["severity"].value_counts()
    print(f"synthetic follow-up pairs {args.out}\n  pairs: {len(table)} ({int(table['new_count'].sum())} new CMBs)\n"
          "  severity: " + ", ".join(f"{k}: {int(severities.get(k, 0))}" for k in SEVERITIES))
    return 0


def evaluate_monitoring_command(args: argparse.Namespace, profile: Profile) -> int:
    """``cmbstudy evaluate --rule monitoring``: new CMBs against a follow-up dataset's lesion tables."""
    from . import resolve_data_root
    from ..evaluation.monitoring import evaluate_monitoring

    scores = evaluate_monitoring(Path(args.pred), resolve_data_root(args.ref),
                                 distance=args.distance or profile.evaluation.match_distance_voxels,
                                 n_bootstrap=profile.evaluation.n_bootstrap,
                                 json_out=Path(args.json) if args.json else None)
    print(scores.format_table())
    return 0


def _cmd_monitor_threshold(args: argparse.Namespace) -> int:
    from . import resolve_data_root
    from ..data.datasets import describe_dataset
    from ..inference.model_store import load_detection_model, packaged_model_path, second_look_path
    from ..inference.monitor_files import (check_monitoring_record, choose_monitoring_threshold,
                                           record_monitoring_threshold)

    model = load_detection_model(args.model, args.set)
    source = packaged_model_path() if args.model in (None, "packaged") else Path(model.source)
    root = resolve_data_root(args.pairs)
    if model.second_look is not None:  # a threshold already recorded is refused before the pairs are detected
        check_monitoring_record(second_look_path(source), args.overwrite)
    threshold, table = choose_monitoring_threshold(model, root, args.device, progress=not args.quiet)
    chosen = table.loc[threshold]
    described = describe_dataset(root)
    described.pop("data_root")  # the record travels with the model: no path of this machine
    record = {"chosen_on": {**described, "n_pairs": int(chosen["pairs"])},
              "rule": "the best pooled F1 of new CMBs on development pairs (ties: fewer false new, then higher)",
              "single_scan_threshold": model.second_look.threshold,
              **{k: float(chosen[k]) for k in ("precision", "recall", "f1", "false_new_per_pair",
                                                "severity_agreement")},
              "new_cmbs": int(chosen["tp"] + chosen["fn"])}
    sidecar = record_monitoring_threshold(second_look_path(source), threshold, record, args.overwrite)
    print(f"monitoring's second-look threshold for {model.source}: {threshold:g} (one scan: "
          f"{model.second_look.threshold:g}); on {root}: new-CMB precision {chosen['precision']:.3f}, recall "
          f"{chosen['recall']:.3f}, F1 {chosen['f1']:.3f}, false new per pair {chosen['false_new_per_pair']:.2f}\n"
          f"  recorded in {sidecar}")
    return 0


def add_scan_commands(sub: Any, add_model: Callable[..., None],
                      add_common: Callable[..., None]) -> None:
    """Add ``detect`` and ``monitor`` to the subparsers ``sub`` (``add_model``, ``add_common``: the shared options
    of :mod:`cmbstudy.cli`)."""
    p = sub.add_parser("detect", help="detect CMBs and assess burden on your own scan(s)")
    p.add_argument("scan", help="T2*-GRE/SWI .nii[.gz], a folder of them, or a BIDS-like or VALDO dataset root")
    add_model(p)
    p.add_argument("--out", required=True, help="derivatives folder to create")
    p.add_argument("--modality", choices=("gre", "swi"), default=None,
                   help="default: from the BIDS suffix (_swi), else gre")
    p.add_argument("--threshold", type=float, default=None,
                   help="default: the model's lesion rule; a threshold gives the single stage at it")
    p.add_argument("--brain-mask", default=None, help="binary brain mask on the scan's grid (a single scan)")
    p.add_argument("--brain-mask-pattern", default=None,
                   help="a folder's brain masks beside its scans: {stem} is the scan's name without .nii[.gz], "
                        "{subject} its label, e.g. '{stem}_brainmask.nii.gz'")
    p.add_argument("--no-location", action="store_true",
                   help="skip the registration to the ICBM152 template that gives each CMB its location")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(p, out=True)
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser("monitor", help="new CMBs between a baseline and a follow-up scan (ARIA-H severity)")
    p.add_argument("baseline", help="the baseline T2*-GRE/SWI .nii[.gz], or a dataset root with "
                                    "sub-<id>/ses-baseline and ses-followup sessions")
    p.add_argument("followup", nargs="?", default=None, help="the follow-up scan (omit with a dataset root)")
    add_model(p)
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--modality", choices=("gre", "swi"), default=None,
                   help="default: from the BIDS suffix of both scans (they must agree)")
    p.add_argument("--baseline-mask", default=None, help="brain mask on the baseline's grid")
    p.add_argument("--followup-mask", default=None, help="brain mask on the follow-up's grid")
    p.add_argument("--baseline-date", default=None, help="YYYY-MM-DD: refused when the follow-up is older")
    p.add_argument("--followup-date", default=None, help="YYYY-MM-DD")
    p.add_argument("--second-look", type=float, default=None, metavar="SCORE",
                   help="the second look's threshold for both scans (default: the model's threshold for monitoring "
                        "where monitor-threshold recorded one, as for the packaged model, else its threshold for "
                        "one scan; book: Monitoring ARIA-H)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(p, out=True)
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("monitor-threshold", help="choose a model's second-look threshold for monitor on "
                                                  "development pairs, and record it beside its second look")
    p.add_argument("pairs", help="a dataset root of development pairs (ses-baseline/ses-followup) whose follow-up "
                                 "lesion tables mark the new CMBs, e.g. cmbstudy synth --follow-up; never the "
                                 "pairs you will score monitor on")
    add_model(p, brain=False)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(p, out=True)
    p.set_defaults(func=_cmd_monitor_threshold)
