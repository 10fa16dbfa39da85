"""The floating-point work of every training run of a profile's study, and its seconds at a given rate.

Usage::

    python benchmarks/study_budget.py --profile gpu --tflops 60

Per run (:func:`cmbstudy.study.runs.training_instances`): the training steps
(``epochs x slices_per_epoch`` samples at the training crop, a step costing
three forward passes' worth, forward and backward), the validations, the
hard-negative minings, the calibration and the prediction of the test cohort
(forward passes of whole slices, or of 3D windows tiling the volume, for every
slice of every subject). FLOPs are counted by ``torch.utils.flop_counter`` on
one sample of each network, on the CPU. Slices per subject: the synthetic
cohort's slab over each acquisition site's slice thickness, averaged over the
sites. Rounded as such counts are, the seconds printed are a budget at the
rate ``--tflops``: measure that rate for the profile's network on the device
with ``benchmarks/inference_latency.py``, which prints the TFLOP/s a training
step reaches. Data loading, post-processing and Python overhead come on top.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from inference_latency import forward_flops

from cmbstudy.config import load_profile, resolve_variant
from cmbstudy.models.layers import is_volumetric
from cmbstudy.models.registry import model_from_config
from cmbstudy.study.runs import training_instances
from cmbstudy.synth.acquisition import SITES


def run_flops(profile, variant: str) -> dict[str, float]:
    """Training and evaluation FLOPs of one run of ``variant``."""
    resolved = resolve_variant(profile, variant)
    cfg, size = resolved.train, resolved.preprocess.size
    torch.manual_seed(0)
    model = model_from_config(resolved.model)
    slices = float(np.mean([math.ceil(resolved.synth.slab_mm / site.slice_mm) for site in SITES]))
    crop = cfg.crop_size if 0 < cfg.crop_size < size else size
    if is_volumetric(model):
        patch = tuple(cfg.patch_size)
        per_sample = forward_flops(model, torch.zeros(1, 1, *patch))
        per_subject = per_sample * math.ceil(slices / patch[0]) * math.ceil(size / patch[1]) * math.ceil(size / patch[2])
    else:
        per_sample = forward_flops(model, torch.zeros(1, 3, crop, crop))
        per_subject = forward_flops(model, torch.zeros(1, 3, size, size)) * slices
    n_val = resolved.synth.n_subjects / cfg.n_folds
    validations = 0 if cfg.val_every <= 0 else math.ceil(cfg.epochs / cfg.val_every)
    minings = 0 if cfg.mine_after <= 0 or cfg.hard_negative_fraction <= 0 else max(0, (cfg.epochs - 1) // cfg.mine_after)
    mined = cfg.mine_subjects or resolved.synth.n_subjects - n_val
    return {
        "train": 3.0 * per_sample * cfg.epochs * cfg.slices_per_epoch,
        "validate": per_subject * n_val * (validations + 1),  # + calibration
        "mine": per_subject * mined * minings,
        "test": per_subject * resolved.synth.n_test_subjects,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--tflops", type=float, required=True,
                        help="sustained TFLOP/s of the network on the device (inference_latency.py prints it)")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    total = 0.0
    print(f"profile {profile.name}, at {args.tflops:g} TFLOP/s")
    print(f"{'run':28s} {'train PFLOP':>12s} {'eval PFLOP':>11s} {'seconds':>8s}")
    for instance in training_instances(profile):
        flops = run_flops(profile, str(instance["variant"]))
        evaluation = flops["validate"] + flops["mine"] + flops["test"]
        seconds = (flops["train"] + evaluation) / (args.tflops * 1e12)
        total += seconds
        print(f"{instance['name']:28s} {flops['train'] / 1e15:12.2f} {evaluation / 1e15:11.2f} {seconds:8.1f}")
    print(f"every training run of the study: {total:.0f} s ({total / 60:.1f} min) of network work at "
          f"{args.tflops:g} TFLOP/s")


if __name__ == "__main__":
    main()
