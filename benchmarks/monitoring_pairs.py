"""Monitoring on follow-up pairs of a seed of their own: how far the test pairs' numbers are chance.

    python benchmarks/monitoring_pairs.py --run results/runs/rlk_unet_cbam-fold0 \
        --development results/data/synthetic-quick-followup-development \
        --out benchmarks/results/monitoring_pairs [--n-pairs 48] [--seed 400] [--threshold T]

The monitoring chapter scores the study's 24 test pairs; severity right or wrong
is decided per pair, so one pair moves it by 4 points, and a severe pair (10 or
more new CMBs) is right only when nearly every new CMB is found. This script
writes ``--n-pairs`` follow-up pairs from a seed that the study never uses
(``cmbstudy synth --follow-up``), chooses monitoring's threshold on the
``--development`` pairs exactly as the chapter does
(:func:`cmbstudy.inference.monitor_files.choose_monitoring_threshold`; or takes
``--threshold``), monitors every pair with the run's model, and prints the
chapter's scores on them: new-CMB precision, recall, F1 and false "new" per pair,
the naive rule's, severity agreement with its Wilson 95% interval, and per
reference severity the pairs, the share whose severity is right and the recall of
their new CMBs (:func:`cmbstudy.evaluation.monitoring.severity_breakdown`). ``--json`` writes it all. A pair folder that exists is reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cmbstudy.evaluation.monitoring import evaluate_monitoring, severity_breakdown
from cmbstudy.inference.model_store import load_detection_model
from cmbstudy.inference.monitor_files import choose_monitoring_threshold, monitor_path
from cmbstudy.synth.follow_up import make_follow_up_cohort


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a training run with a second look")
    parser.add_argument("--development", type=Path, help="pairs to choose the threshold on (not scored)")
    parser.add_argument("--threshold", type=float, help="monitoring's second-look threshold, instead of choosing it")
    parser.add_argument("--out", required=True, type=Path, help="a work folder: the pairs and their monitoring")
    parser.add_argument("--n-pairs", type=int, default=48)
    parser.add_argument("--seed", type=int, default=400)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if (args.threshold is None) == (args.development is None):
        parser.error("give --development (the threshold is chosen there) or --threshold, not both")
    model = load_detection_model(args.run)
    profile = model.profile
    threshold = args.threshold
    if threshold is None:
        threshold, _ = choose_monitoring_threshold(model, args.development, args.device,
                                                   profile.evaluation.match_distance_voxels, progress=False)
    pairs, monitored = args.out / "pairs", args.out / "monitoring"
    started = time.perf_counter()
    if not (pairs / "participants.tsv").is_file():
        make_follow_up_cohort(pairs, profile, n_subjects=args.n_pairs, seed=args.seed, progress=False)
    made = time.perf_counter()
    monitor_path(pairs, None, monitored, model=model, device=args.device, overwrite=True, progress=True,
                 second_look=threshold)
    scored = evaluate_monitoring(monitored, pairs, distance=profile.evaluation.match_distance_voxels,
                                 n_bootstrap=profile.evaluation.n_bootstrap, seed=profile.seed)
    per_pair, summary = scored.per_pair, scored.summary
    right = summary["severity_right"]
    severities = severity_breakdown(per_pair)
    print(f"{args.run.name}, monitoring threshold {threshold:g}, {len(per_pair)} pairs of seed {args.seed}")
    print(scored.format_table())
    low, high = summary["severity_agreement_ci_low"], summary["severity_agreement_ci_high"]
    print(f"  severity right: {right} of {len(per_pair)} pairs, 95% interval [{low:.3f}, {high:.3f}]")
    print(severities.round(3).to_string())
    print(f"  pairs written in {made - started:.0f} s, monitored and scored in {time.perf_counter() - made:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "run": str(args.run), "threshold": threshold, "seed": args.seed, "summary": summary,
            "severity_right": right,
            "by_severity": severities.reset_index().to_dict(orient="records"),
        }, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
