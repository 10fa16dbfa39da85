"""Every network of a profile's study: parameters, one training step and inference per volume.

For each variant the study trains (``study.main``, ``study.ablation``,
``study.baselines``), builds the network as ``cmbstudy train --variant`` would,
times one training step on the profile's training input (2.5D networks: a batch
of ``train.batch_size`` crops of ``train.crop_size``, or whole slices of
``preprocess.size``; volumetric networks: ``train.patch_size`` patches), with the
network's own loss when it has one, and times the prediction of one random
``(slices, size, size)`` volume through :func:`cmbstudy.inference.sliding_window.predict_logits`
(sliding windows and isotropic resampling included). Each time is the minimum
of ``--repeats`` runs after one warm-up. A run of this script at ``--profile
paper`` also checks that every network builds and trains at the paper's sizes.

Usage::

    python benchmarks/variant_speed.py --profile quick
    python benchmarks/variant_speed.py --profile paper --size 256 --slices 24
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

from cmbstudy.config import Profile, load_profile, resolve_variant
from cmbstudy.device import resolve_device
from cmbstudy.inference.sliding_window import predict_logits
from cmbstudy.models.layers import is_volumetric
from cmbstudy.models.losses import make_loss
from cmbstudy.models.registry import model_from_config

__all__ = ["time_variant", "main"]


def _best_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_variant(
    profile: Profile, variant: str, size: int, slices: int, voxel_mm: tuple[float, float, float],
    repeats: int, device: torch.device,
) -> dict[str, float]:
    """Parameters, seconds per training step and seconds per predicted volume of one variant."""
    resolved = resolve_variant(profile, variant)
    cfg = resolved.train
    torch.manual_seed(0)
    model = model_from_config(resolved.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loss_fn = make_loss(cfg)
    if is_volumetric(model):
        shape = (cfg.batch_size, 1, *cfg.patch_size)
    else:
        side = cfg.crop_size if 0 < cfg.crop_size < resolved.preprocess.size else resolved.preprocess.size
        shape = (cfg.batch_size, 3, side, side)
    x = torch.randn(shape, device=device)
    target = torch.zeros((shape[0], 1, *shape[2:]), device=device)
    centre = tuple(s // 2 for s in shape[2:])
    target[(slice(None), slice(None), *(slice(c - 1, c + 2) for c in centre))] = 1.0

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        if callable(getattr(model, "training_loss", None)):
            loss = model.training_loss(x, target)
        else:
            outputs = model(x)
            loss = loss_fn(list(outputs) if isinstance(outputs, (list, tuple)) else [outputs], target)
        loss.backward()
        optimizer.step()

    volume = np.random.default_rng(0).standard_normal((slices, size, size)).astype(np.float32)

    def predict() -> None:
        predict_logits(model, volume, cfg.val_batch_size, device, voxel_mm, cfg.patch_size)

    return {
        "params": float(sum(p.numel() for p in model.parameters())),
        "train_step_s": _best_seconds(train_step, repeats),
        "volume_s": _best_seconds(predict, repeats),
    }


def main(argv: list[str] | None = None) -> None:
    """Print one line per variant of the profile's study."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--size", type=int, default=0, help="in-plane size of the test volume (0: preprocess.size)")
    parser.add_argument("--slices", type=int, default=40, help="slices of the test volume")
    parser.add_argument("--voxel-mm", nargs=3, type=float, default=(3.0, 1.3, 1.3),
                        help="voxel size of the test volume (slice, row, column)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    size = args.size or profile.preprocess.size
    device = resolve_device(args.device)
    study = profile.study
    variants = [study.main, *study.ablation, *study.baselines]
    print(f"profile {profile.name}, torch {torch.__version__}, {device}, {args.threads} threads, "
          f"volume {args.slices}x{size}x{size}, best of {args.repeats} after warm-up")
    print(f"{'variant':16} {'network':20} {'params':>11} {'train step s':>13} {'volume s':>9}")
    for variant in variants:
        r = time_variant(profile, variant, size, args.slices, tuple(args.voxel_mm), args.repeats, device)
        name = resolve_variant(profile, variant).model.name
        print(f"{variant:16} {name:20} {int(r['params']):>11,} {r['train_step_s']:>13.3f} {r['volume_s']:>9.2f}",
              flush=True)


if __name__ == "__main__":
    main()
