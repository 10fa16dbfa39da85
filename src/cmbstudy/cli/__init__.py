"""The ``cmbstudy`` command: argument parsing only; the work is done by the subpackages.

Each command imports its subpackage when it runs (torch and the Jupyter stack load
slowly), so ``cmbstudy --help`` and ``cmbstudy data check`` start at once.

Errors a user can cause are printed as one line ``cmbstudy <command>: error: ...``
with exit status 2; nothing is left half-written (see :mod:`cmbstudy.data.io`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..errors import CmbStudyError, ConfigError

__all__ = ["main", "build_parser", "resolve_data_root", "DATA_ENV_VAR"]

DATA_ENV_VAR = "CMBSTUDY_DATA"


def resolve_data_root(value: str | os.PathLike | None) -> Path:
    """The dataset root from ``--data`` or ``$CMBSTUDY_DATA``; an error says what to set."""
    root = value or os.environ.get(DATA_ENV_VAR)
    if not root:
        raise ConfigError(
            f"no dataset root given: pass --data ROOT or set {DATA_ENV_VAR}=ROOT "
            "(make a synthetic one with `cmbstudy synth --out ROOT`)"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"dataset root {path} is not a folder: check --data or ${DATA_ENV_VAR}")
    return path


def _cmd_env(args: argparse.Namespace) -> int:
    from .. import print_environment

    print_environment()
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from ..config import load_profile
    from ..synth import make_cohort, make_test_cohort

    profile = load_profile(args.profile, args.set)
    if args.follow_up:
        from .scans import synth_follow_up

        return synth_follow_up(args, profile)
    if args.test:
        if args.n_subjects is not None or args.seed is not None:
            raise ConfigError("--test takes its size and seed from the profile: use "
                              "--set synth.n_test_subjects=N --set synth.test_seed=S instead of --n-subjects/--seed")
        print(make_test_cohort(args.out, profile, overwrite=args.overwrite, progress=not args.quiet,
                               workers=args.workers))
        return 0
    print(make_cohort(args.out, profile=profile, n_subjects=args.n_subjects, seed=args.seed,
                      overwrite=args.overwrite, progress=not args.quiet, workers=args.workers))
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from ..data.manifest import check_dataset

    report = check_dataset(Path(args.root), dataset=args.dataset)
    print(report.format_table())
    return 0 if report.ok else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_profile, resolve_variant
    from ..data.splits import load_test_split
    from ..training.run import train_fold

    profile = load_profile(args.profile, args.set)
    if args.variant is not None:
        profile = resolve_variant(profile, args.variant)
    result = train_fold(
        profile,
        data_root=resolve_data_root(args.data),
        fold=args.fold,
        out=Path(args.out),
        model_name=args.model,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        modality=args.modality,
        exclude=load_test_split(Path(args.test_split)) if args.test_split else (),
    )
    import torch.distributed as dist

    distributed = dist.is_initialized()
    if not distributed or dist.get_rank() == 0:  # under torchrun: one report, from the rank that wrote the run
        print(result)
    if distributed:
        dist.destroy_process_group()
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..inference.predict import predict_dataset

    print(predict_dataset(args.model, data_root=resolve_data_root(args.data), out=Path(args.out),
                          threshold=args.threshold, device=args.device, overwrite=args.overwrite,
                          progress=not args.quiet, split=args.split, overrides=args.set,
                          brain_extraction=args.brain_extraction, single_stage=args.single_stage))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..config import Profile, apply_overrides
    from ..evaluation.evaluate import evaluate_predictions

    if args.rule == "monitoring":
        from .scans import evaluate_monitoring_command

        return evaluate_monitoring_command(args, apply_overrides(Profile("defaults"), args.set))
    if args.model is not None:
        from ..data.prediction_folder import (
            read_prediction_min_voxels,
            read_prediction_threshold,
        )
        from ..inference.model_store import load_detection_model

        model = load_detection_model(args.model, args.set)
        profile, point = model.profile, model.operating_point
        threshold = read_prediction_threshold(Path(args.pred), point.threshold) if args.threshold is None \
            else args.threshold
        min_voxels = read_prediction_min_voxels(Path(args.pred), point.min_voxels)
    else:
        profile, threshold, min_voxels = apply_overrides(Profile("defaults"), args.set), args.threshold, None
    report = evaluate_predictions(
        pred_dir=Path(args.pred),
        ref_root=resolve_data_root(args.ref),
        rule=args.rule,
        distance=args.distance,
        threshold=threshold,
        min_voxels=min_voxels,
        connectivity=profile.evaluation.connectivity,
        n_bootstrap=profile.evaluation.n_bootstrap,
        eval_config=profile.evaluation,
        distance_unit=args.distance_unit,
        only_predicted=args.only_predicted,
        json_out=Path(args.json) if args.json else None,
        progress=not args.quiet,
    )
    print(report.format_table())
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from ..study.jobs import resolve_jobs
    from ..study.runner import run_study

    if args.list_runs:
        from ..config import load_profile
        from ..study.runs import training_instances

        print("run\tvariant\tfold\tmodality")
        for run in training_instances(load_profile(args.profile, args.set)):
            print(f"{run['name']}\t{run['variant']}\t{run['fold']}\t{run['modality'] or 'all'}")
        return 0
    run_study(
        profile_name=args.profile,
        data_root=Path(args.data) if args.data else None,
        out=Path(args.out),
        overrides=args.set,
        force=args.force,
        build_book=not args.no_book,
        steps=args.steps.split(",") if args.steps else None,
        runs=args.run.split(",") if args.run else None,
        jobs=resolve_jobs(args.jobs),
        threads=args.threads,
    )
    return 0


def _cmd_second_look(args: argparse.Namespace) -> int:
    from ..inference.model_store import load_detection_model
    from ..training.second_look import train_model_second_look

    model = load_detection_model(args.model, args.set, with_second_look=False)  # the one it replaces
    print(train_model_second_look(model, resolve_data_root(args.data), Path(args.out), args.validation_fraction,
                                  args.seed, args.overwrite, not args.quiet))
    return 0


_MODEL_HELP = ("the packaged model (default; also 'packaged'), a training run folder, "
               "or a .pt checkpoint")
_BRAIN_HELP = ("auto (default): a given or dataset brain mask, else the image as it is when skull-stripped, "
               "else brain extraction; none: the image as it is; mask; threshold (Otsu); deepbet")


def _add_set(p: argparse.ArgumentParser, example: str = "train.epochs=3") -> None:
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help=f"override one profile field, e.g. --set {example} (repeatable)",
    )


def _add_model(p: argparse.ArgumentParser, brain: bool = True) -> None:
    from ..preprocessing.brain import BRAIN_EXTRACTION_CHOICES

    p.add_argument("--model", default=None, help=_MODEL_HELP)
    _add_set(p, "evaluation.connectivity=6")
    if brain:
        p.add_argument("--brain-extraction", choices=BRAIN_EXTRACTION_CHOICES, default="auto", help=_BRAIN_HELP)
        p.add_argument("--single-stage", action="store_true",
                       help="the network alone, as the paper detects (default: with the model's second look at "
                            "each candidate, where it has one)")


def _add_common(p: argparse.ArgumentParser, *, profile: bool = False, out: bool = False) -> None:
    if profile:
        p.add_argument("--profile", default="quick", help="smoke, quick, paper or a .yaml path")
        _add_set(p)
    if out:
        p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="cmbstudy",
        description="Cerebral microbleed detection study: RLK-UNet + CBAM, synthetic cohort, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"cmbstudy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("env", help="print library and accelerator versions")
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser("synth", help="generate the synthetic CMB cohort")
    p.add_argument("--out", required=True, type=Path, help="folder to create")
    p.add_argument("--n-subjects", type=int, default=None, help="default: the profile's")
    p.add_argument("--seed", type=int, default=None, help="default: the profile's")
    p.add_argument("--workers", type=int, default=None, help="subjects simulated at once (default: the cores)")
    p.add_argument("--test", action="store_true",
                   help="the profile's separate test cohort (synth.n_test_subjects from synth.test_seed)")
    p.add_argument("--follow-up", action="store_true",
                   help="baseline and follow-up sessions of each subject, with new CMBs at follow-up (ARIA-H "
                        "monitoring; default synth.n_follow_up_pairs pairs from synth.test_seed + 1)")
    _add_common(p, profile=True, out=True)
    p.set_defaults(func=_cmd_synth)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("check", help="validate a dataset against data_manifest.yaml")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--dataset", default=None, help="manifest entry (default: detect from layout)")
    p.set_defaults(func=_cmd_data_check)

    p = sub.add_parser("train", help="train one fold (in N processes: torchrun --nproc_per_node=N -m cmbstudy train ...)")
    p.add_argument("--data", default=None, help=f"dataset root (default: ${DATA_ENV_VAR})")
    p.add_argument("--fold", type=int, required=True, help="fold index, 0-based")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--model", default=None, help="registry name (default: the profile's)")
    p.add_argument("--variant", default=None,
                   help="a named network of the profile's variants: its overrides apply after --set "
                        "(e.g. without_cbam, cbam_skip1, fan2022, dou2016)")
    p.add_argument("--modality", choices=("gre", "swi"), default=None,
                   help="train and validate on subjects of this modality only")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--test-split", default=None,
                   help="a test_split.json: its subjects are held out of training and validation")
    _add_common(p, profile=True, out=True)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict CMBs on every subject of a dataset")
    p.add_argument("--run", dest="model", default=None, help="training run folder (the same as --model RUN)")
    _add_model(p)
    p.add_argument("--data", default=None, help=f"dataset root (default: ${DATA_ENV_VAR})")
    p.add_argument("--out", required=True, help="prediction folder to create")
    p.add_argument("--threshold", type=float, default=None,
                   help="default: the run's lesion rule; a threshold gives the single stage at it")
    p.add_argument("--split", choices=("all", "val", "train", "test"), default="all",
                   help="subjects to predict: all, the run fold's val or train subjects, or those it held out (test)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _add_common(p, out=True)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="lesion-wise evaluation of predictions")
    p.add_argument("--pred", required=True, help="prediction folder (from predict or detect; from monitor with "
                                                 "--rule monitoring)")
    _add_model(p, brain=False)
    p.add_argument("--ref", default=None, help=f"reference dataset root (default: ${DATA_ENV_VAR})")
    p.add_argument("--rule", choices=("paper", "valdo", "monitoring"), default="paper",
                   help="paper, valdo, or monitoring: new CMBs between two sessions against a follow-up "
                        "dataset's lesion tables (the pairs of synth --follow-up)")
    p.add_argument("--distance", type=float, default=None,
                   help="match distance (paper: voxels, default evaluation.match_distance_voxels; "
                        "valdo: mm, default evaluation.valdo_distance_mm)")
    p.add_argument("--distance-unit", choices=("mm", "voxels"), default="mm",
                   help="valdo rule: mm (default) or voxel indices, as the challenge's own code measures")
    p.add_argument("--threshold", type=float, default=None,
                   help="probability threshold (default: the one the predictions were made at, "
                        "else the --model's, else 0.5)")
    p.add_argument("--only-predicted", action="store_true",
                   help="evaluate only the reference subjects that have a prediction (e.g. one fold)")
    p.add_argument("--json", default=None, help="write metrics as JSON here")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("study", help="run every notebook with papermill and build the book")
    p.add_argument("--data", default=None, help="real dataset root (default: the synthetic cohort)")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--force", action="store_true", help="rerun steps whose inputs did not change")
    p.add_argument("--no-book", action="store_true", help="skip the Jupyter Book build")
    p.add_argument("--steps", default=None,
                   help="comma-separated notebook names to run, e.g. 01_synthetic_cohort,02_preprocessing "
                        "(default: all, in order)")
    p.add_argument("--jobs", default="auto",
                   help="training runs at once on this machine: a number, or auto (default: one per core on "
                        "fewer than 4 cores, else one per two cores; 1 with a GPU); each gets the cores divided by N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of each training run (default: the cores divided by --jobs); "
                        "the same value repeats a run to the bit")
    p.add_argument("--list-runs", action="store_true",
                   help="print the training runs of the profile (one per line) and exit")
    p.add_argument("--run", default=None,
                   help="train only these runs (comma-separated names from --list-runs), with the steps they "
                        "need; no analysis, no book: e.g. one run per job of a cluster array")
    _add_common(p, profile=True)
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("second-look", help="train a model's second look on a labelled dataset")
    p.add_argument("--model", default=None, help=_MODEL_HELP)
    _add_set(p, "second_look.log_candidates=600")
    p.add_argument("--data", default=None, help=f"labelled dataset root, none of whose subjects the model trained on "
                                                f"(default: ${DATA_ENV_VAR})")
    p.add_argument("--out", required=True, help="folder of the model file: the second look is written beside it")
    p.add_argument("--validation-fraction", type=float, default=0.5, help="share the model predicts (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the classifiers")
    _add_common(p, out=True)
    p.set_defaults(func=_cmd_second_look)

    from .scans import add_scan_commands

    add_scan_commands(sub, _add_model, _add_common)
    return parser


class _BetweenBars(logging.StreamHandler):
    """A stream handler that writes each record between tqdm's progress bars (``tqdm.write``: the bars are cleared,
    the line written, the bars drawn again), so that a note on one scan does not break the bar over all of them.
    (tqdm's own logging handler is private, and its ``logging_redirect_tqdm`` drops the handler's level.)"""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own rule: a handler never raises
            self.handleError(record)


def _log_to_stderr(name: str, quiet: bool) -> None:
    """Warnings of the ``cmbstudy`` logger (and, unless ``--quiet``, its notes) go to stderr, once."""
    logger = logging.getLogger("cmbstudy")
    for handler in [h for h in logger.handlers if getattr(h, "_cmbstudy_cli", False)]:
        logger.removeHandler(handler)
    handler = _BetweenBars(sys.stderr)
    handler.setFormatter(logging.Formatter(f"cmbstudy {name}: %(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler._cmbstudy_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cmbstudy`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.command + (f" {args.data_command}" if getattr(args, "data_command", None) else "")
    _log_to_stderr(name, quiet=getattr(args, "quiet", False))
    try:
        return int(args.func(args))
    except CmbStudyError as exc:
        print(f"cmbstudy {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cmbstudy {name}: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
