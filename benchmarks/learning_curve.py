"""What a CPU budget buys: test-set F1 of the main network against its training seconds, for two seeds.

For each training seed (``train.seed``: initialisation and sampling; the cohort
and the folds stay those of the profile's seed) and each budget of epochs, the
main network of the profile is trained on fold 0 of the synthetic training
cohort with the profile's recipe (its cosine schedule stretched to the budget),
calibrated on the fold's validation subjects, and scored on the separate test
cohort, as the study does (:func:`cmbstudy.study.training_runs.train_and_evaluate`).
The budget of the profile itself is one of the points and is ringed in the
figure. The spread between the two seeds at one budget is the seed noise a
difference between two methods must exceed.

Writes ``OUT/learning_curve.tsv`` (one row per run) and ``OUT/learning_curve.png``
and prints the table. A run already in ``OUT`` is read back, not trained again.

Usage::

    python benchmarks/learning_curve.py --out benchmarks/results/learning_curve
    python benchmarks/learning_curve.py --epochs 5 10 20 40 --seeds 0 1
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from cmbstudy.config import Profile, load_profile
from cmbstudy.data.io import write_text_atomically
from cmbstudy.errors import InputError
from cmbstudy.figures.curves import plot_learning_curve
from cmbstudy.preprocessing.cache import CACHE_ENV_VAR
from cmbstudy.study.runs import load_run, run_name
from cmbstudy.study.tables.format import summary_scores
from cmbstudy.study.training_runs import train_and_evaluate
from cmbstudy.synth import make_cohort, make_test_cohort

__all__ = ["budget_profile", "run_point", "main"]

COLUMNS = ["seed", "epochs", "train_seconds", "f1", "f1_ci_low", "f1_ci_high", "precision", "recall",
           "fp_per_subject", "threshold", "min_voxels", "val_f1"]


def budget_profile(profile_name: str, epochs: int, seed: int) -> Profile:
    """The profile with ``epochs`` epochs (one cosine period over them) and training seed ``seed``."""
    base = load_profile(profile_name)
    warmup = min(base.train.warmup_epochs, max(epochs - 1, 0))
    mine_after = min(base.train.mine_after, max(epochs // 3, 1)) if base.train.mine_after else 0
    return load_profile(profile_name, [f"train.epochs={epochs}", f"train.restart_epochs={epochs}",
                                       f"train.warmup_epochs={warmup}", f"train.mine_after={mine_after}",
                                       f"train.seed={seed}"])


def run_point(profile: Profile, data_root: Path, test_root: Path, out: Path) -> dict:
    """Train (unless done), calibrate and score one point; returns its row of :data:`COLUMNS`."""
    main = profile.study.main
    name = run_name(main, 0)
    try:
        record = load_run(out, name)
    except InputError:
        record = train_and_evaluate(profile, main, 0, data_root, out, progress=True, test_root=test_root,
                                    valdo=False)
    scores = summary_scores(record.evaluation["summary"])
    return {"seed": profile.train.seed, "epochs": profile.train.epochs, "train_seconds": record.train_seconds,
            **{k: scores[k] for k in ("f1", "f1_ci_low", "f1_ci_high", "precision", "recall", "fp_per_subject")},
            "threshold": record.operating_point.get("threshold"),
            "min_voxels": record.operating_point.get("min_voxels"), "val_f1": record.validation.get("f1")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning_curve"))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    os.environ.setdefault(CACHE_ENV_VAR, str(out / "cache"))  # every point reads one preprocessing cache
    base = load_profile(args.profile)
    data_root, test_root = out / "data" / "train", out / "data" / "test"
    if not (data_root / "participants.tsv").is_file():
        print(make_cohort(data_root, base, progress=True))
    if not (test_root / "participants.tsv").is_file():
        print(make_test_cohort(test_root, base, progress=True))
    rows = []
    for seed in args.seeds:
        for epochs in sorted(set(args.epochs) | {base.train.epochs}):
            profile = budget_profile(args.profile, epochs, seed)
            rows.append(run_point(profile, data_root, test_root, out / f"seed{seed}-epochs{epochs}"))
            table = pd.DataFrame(rows, columns=COLUMNS)
            write_text_atomically(out / "learning_curve.tsv", table.to_csv(sep="\t", index=False))
            print(table.round(3).to_string(index=False), flush=True)
    figure = plot_learning_curve(table, marked_epochs=base.train.epochs,
                                 title=f"{base.study.main} ({args.profile} recipe), fold 0, test cohort")
    figure.savefig(out / "learning_curve.png", dpi=120)
    print(f"wrote {out / 'learning_curve.tsv'} and {out / 'learning_curve.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
