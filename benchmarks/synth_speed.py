"""Synthetic-cohort generation speed: subjects per second at each profile (one process).

Usage: python benchmarks/synth_speed.py [--subjects N] [--profiles smoke quick paper]
The template is loaded once before timing; files are written to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cmbstudy.config import load_profile
from cmbstudy.synth import make_cohort
from cmbstudy.synth.anatomy import load_template_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4, help="subjects per profile (default 4)")
    parser.add_argument("--profiles", nargs="+", default=["smoke", "quick", "paper"])
    args = parser.parse_args()
    print(f"{'profile':<8} {'matrix':>10} {'subjects':>8} {'seconds':>8} {'subjects/s':>10} {'s/subject':>9}")
    for name in args.profiles:
        profile = load_profile(name)
        load_template_space(profile.synth.template_resolution)
        with tempfile.TemporaryDirectory() as tmp:
            make_cohort(Path(tmp) / "warm", profile=profile, n_subjects=1, seed=99, progress=False)
            start = time.perf_counter()
            make_cohort(Path(tmp) / "c", profile=profile, n_subjects=args.subjects, progress=False)
            seconds = time.perf_counter() - start
        matrix = "x".join(str(v) for v in profile.synth.matrix)
        print(f"{name:<8} {matrix:>10} {args.subjects:>8} {seconds:>8.1f} {args.subjects / seconds:>10.2f} "
              f"{seconds / args.subjects:>9.2f}")


if __name__ == "__main__":
    main()
