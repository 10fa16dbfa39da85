"""The GPU check: every number the study needs from an NVIDIA GPU, in one run, written as JSON.

Run it through ``benchmarks/gpu_check.sh`` (which installs the project's dependencies from wheels
where the machine has only torch)::

    OUT=/some/folder bash benchmarks/gpu_check.sh          # on a machine with an NVIDIA GPU
    OUT=/tmp/check bash benchmarks/gpu_check.sh --cpu      # the same steps at tiny sizes, on a CPU

It measures, on the device:

1. inference of one subject at 512 x 512 (``--slices`` slices) with the paper's network (the ``gpu``
   profile's widths, blocks and 13 x 13 kernels): the network on every slice and the post-processing
   (restoring the map to the input grid, the lesion rule), under bf16 autocast and channels-last, with
   ``torch.compile`` off and on; seconds per subject, the median of ``--repeats`` after warm-up;
2. a training step at the profile's crop and batch: its seconds, its rate in TFLOP/s (the forward
   pass's operations counted by ``torch.utils.flop_counter``, a step taken as three forwards' worth)
   and its share of the device's dense bf16 peak;
3. fold 0 of the ``gpu`` profile: its synthetic training and test cohorts, training, calibration
   (operating point and second look on the validation subjects) and the test cohort scored with
   one look and two: F1 with its 95% interval, FP per subject, and the seconds of every phase. It
   needs the package's numerical dependencies only (nibabel, SimpleITK, MONAI, scikit-learn...),
   not the study's notebook and book tools.

Everything goes to ``$OUT/gpu_check.json`` as it is measured (a part that fails records its error and
the others still run), and a summary to standard output. ``--cpu`` runs the same code with the
``smoke`` profile at 64 x 64, without ``torch.compile`` (on a CPU it needs a C++ toolchain), and a fold
of :data:`CPU_FOLD` (a few subjects, one epoch): it checks the script, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from inference_latency import (
    bench_volume,
    device_peak_tflops,
    forward_flops,
    median_seconds,
    time_train_step,
)

from cmbstudy import available_cores, collect_environment
from cmbstudy.config import load_profile
from cmbstudy.evaluation.operating_point import OperatingPoint
from cmbstudy.inference.second_look import find_detections
from cmbstudy.inference.sliding_window import predict_volume
from cmbstudy.models.losses import make_loss
from cmbstudy.models.registry import model_from_config


#: The parts of the check, in the order they run (``--parts`` picks some).
PARTS = ("inference", "training_step", "fold0")

#: The fold of ``--cpu``: the smoke profile on the fewest subjects that train, calibrate and score.
CPU_FOLD = ("synth.n_subjects=4", "synth.n_test_subjects=2", "train.epochs=1", "train.warmup_epochs=0",
            "train.restart_epochs=1")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_inference(profile, side: int, n_slices: int, device: torch.device, repeats: int,
                      compile_modes: tuple[bool, ...]) -> dict[str, Any]:
    """Seconds per subject (network, post-processing) of one (n_slices, side, side) volume, per compile mode."""
    rng = np.random.default_rng(0)
    volume = bench_volume("check", rng.normal(size=(n_slices, side, side)).astype(np.float32),
                          np.ones((n_slices, side, side), dtype=bool))
    rule = OperatingPoint(0.5, 1)
    out: dict[str, Any] = {"side": side, "slices": n_slices, "batch": profile.train.val_batch_size,
                           "bf16": device.type == "cuda", "channels_last": True}
    for compiled in compile_modes:
        torch.manual_seed(0)
        network = model_from_config(profile.model).to(device)
        if compiled:
            network = torch.compile(network)
        model_times, post_times = [], []
        for i in range(repeats + 2):  # two warm-ups: compilation, then the autotuned kernels
            _sync(device)
            tic = time.perf_counter()
            prob = predict_volume(network, volume, profile.train.val_batch_size, device)
            _sync(device)
            mid = time.perf_counter()
            find_detections(volume.restore(prob, order=1), rule, np.ones(volume.geometry.original_shape, bool))
            toc = time.perf_counter()
            if i >= 2:
                model_times.append(mid - tic)
                post_times.append(toc - mid)
        key = "compile" if compiled else "eager"
        out[key] = {"network_seconds": float(np.median(model_times)), "post_seconds": float(np.median(post_times)),
                    "seconds_per_subject": float(np.median(model_times) + np.median(post_times))}
    return out


def measure_training(profile, device: torch.device, repeats: int) -> dict[str, Any]:
    """A training step at the profile's crop and batch: seconds, TFLOP/s and the share of the bf16 peak."""
    torch.manual_seed(0)
    model = model_from_config(profile.model)
    side, batch = profile.train.crop_size or profile.preprocess.size, profile.train.batch_size
    model.to(device)
    flops = forward_flops(model, torch.randn(1, 3, side, side, device=device))
    seconds = time_train_step(model, make_loss(profile.train), batch, side, device, repeats)
    rate = 3 * flops * batch / seconds / 1e12
    peak = device_peak_tflops(device)
    return {"side": side, "batch": batch, "step_seconds": seconds, "slices_per_second": batch / seconds,
            "forward_gflop_per_slice": flops / 1e9, "tflops": rate, "peak_tflops": peak,
            "share_of_peak": rate / peak if peak else None}


def measure_fold(profile_name: str, overrides: list[str], work: Path, device: str) -> dict[str, Any]:
    """Fold 0 of a profile on its synthetic cohorts: F1 on the test cohort, one look and two, and the phases.

    The steps of the study's training run (:func:`cmbstudy.study.training_runs.train_and_evaluate`),
    called one by one so that nothing of the study's notebooks and book (papermill, Jupyter) is needed.
    """
    import pandas as pd

    from cmbstudy.data import load_subjects
    from cmbstudy.evaluation.evaluate import evaluate_predictions
    from cmbstudy.inference.predict import predict_dataset
    from cmbstudy.preprocessing.cache import default_cache_dir, fill_cache
    from cmbstudy.synth import make_cohort, make_test_cohort
    from cmbstudy.training.run import train_fold

    profile = load_profile(profile_name, overrides)
    ev = profile.evaluation
    os.environ.setdefault("CMBSTUDY_CACHE", str(work / "cache"))
    tic = time.perf_counter()
    data, test, run = work / "cohort", work / "cohort-test", work / "run"
    make_cohort(data, profile, progress=False, overwrite=True)
    make_test_cohort(test, profile, progress=False, overwrite=True)
    phases: dict[str, float] = {"cohorts": time.perf_counter() - tic}
    tic = time.perf_counter()  # every subject preprocessed at once over the cores; training and prediction read
    fill_cache(load_subjects(data) + load_subjects(test), profile.preprocess, default_cache_dir(run),
               workers=max(2, available_cores() // 2), progress=False)
    phases["preprocessing"] = time.perf_counter() - tic
    tic = time.perf_counter()
    result = train_fold(profile, data, 0, run, device=device, overwrite=True, progress=False)
    history = pd.read_csv(run / "history.csv")
    phases.update(training_and_calibration=time.perf_counter() - tic, epochs=float(history["seconds"].sum()),
                  mining=float(history["mining_seconds"].fillna(0).sum()),
                  validation=float(history["validation_seconds"].fillna(0).sum()),
                  calibration=result.calibration_seconds)
    tic = time.perf_counter()
    two = (run / "second_look.joblib").is_file()
    predicted = predict_dataset(run, test, work / ("pred-2" if two else "pred-1"), device=device, progress=False,
                                single_stage_out=work / "pred-1" if two else None)
    phases.update(test_prediction=time.perf_counter() - tic,
                  test_inference=predicted.seconds_per_subject * predicted.n_subjects)
    out: dict[str, Any] = {"profile": profile.name, "overrides": overrides, "epochs": result.epochs,
                           "operating_point": result.operating_point}
    tic = time.perf_counter()
    for key, folder in (("one_look", "pred-1"), ("two_looks", "pred-2")):
        if not (work / folder).is_dir():
            continue
        summary = evaluate_predictions(work / folder, test, distance=ev.match_distance_voxels,
                                       connectivity=ev.connectivity, only_predicted=True,
                                       n_bootstrap=ev.n_bootstrap, seed=profile.seed, progress=False).summary
        out[key] = {k: summary.get(k) for k in ("precision", "recall", "f1", "fp_per_subject", "n_subjects")}
        out[key]["f1_ci95"] = (summary.get("ci95") or {}).get("f1")
    phases["scoring"] = time.perf_counter() - tic
    out["phases"] = {k: round(float(v), 2) for k, v in phases.items()}
    return out


def _part(results: dict, name: str, path: Path, measure: Callable[[], dict]) -> None:
    """Run one part, record its numbers or its error and seconds, and rewrite the JSON."""
    tic = time.perf_counter()
    try:
        results[name] = measure()
    except Exception as exc:  # noqa: BLE001  (a part that fails is recorded; the others still run)
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
    results[name]["part_seconds"] = round(time.perf_counter() - tic, 2)
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"[gpu check] {name}: {json.dumps(results[name], default=float)[:600]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on a CPU (the tests run this)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")))
    parser.add_argument("--slices", type=int, default=None, help="slices of the inference volume (default 40)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip-fold", action="store_true", help="leave out fold 0 of the profile")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"the parts to run, comma-separated (default: all of {', '.join(PARTS)})")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="override the fold's profile, e.g. --set train.epochs=10")
    args = parser.parse_args(argv)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts: unknown part(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PARTS)}")
    if args.skip_fold:
        parts = [part for part in parts if part != "fold0"]
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to torch; run with --cpu for the tiny CPU check", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    profile_name = "smoke" if args.cpu else "gpu"
    profile = load_profile(profile_name)
    side = 64 if args.cpu else 512
    slices = args.slices or (6 if args.cpu else 40)
    repeats = args.repeats or (1 if args.cpu else 5)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_check.json"
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": "cpu" if args.cpu else "gpu", "profile": profile_name, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(),
        "environment": collect_environment(),
    }
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    compile_modes = (False,) if args.cpu else (False, True)
    if "inference" in parts:
        _part(results, "inference", path,
              lambda: measure_inference(profile, side, slices, device, repeats, compile_modes))
        if args.cpu:
            results["inference"]["compile_note"] = "torch.compile not measured on a CPU (it needs a C++ toolchain)"
    if "training_step" in parts:
        _part(results, "training_step", path, lambda: measure_training(profile, device, repeats))
    if "fold0" in parts:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
            overrides = [*CPU_FOLD, *args.overrides] if args.cpu else args.overrides
            _part(results, "fold0", path, lambda: measure_fold(profile_name, overrides, Path(work), str(device)))
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    failed = [name for name in PARTS if "error" in results.get(name, {})]
    print(f"[gpu check] {path} in {results['total_seconds']:.0f} s" + (f"; failed: {', '.join(failed)}" if failed
                                                                          else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
