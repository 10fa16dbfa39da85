"""Each part of the fast path of training and inference, measured on and off.

Usage::

    python benchmarks/cuda_path.py --profile gpu --device cuda
    python benchmarks/cuda_path.py --profile smoke --device cpu --steps 4   # what a CPU can show

A training step of the profile's network on ``train.batch_size`` random slices
at the training crop is timed with everything on (bf16 autocast on CUDA,
channels-last memory, ``cudnn.benchmark``, and ``torch.compile`` when
``--compile`` is given), then with each part off alone; the ratio is the time
off over the time on. The data loader is timed on real training samples
(:class:`cmbstudy.training.sampling_2p5d.SliceDataset` on random volumes of the
profile's size) with 0 workers and with ``train.num_workers`` workers and
pinned memory: the share of the loop spent waiting for the next batch is the
device's idle share. Inference of one subject is timed with 1, 8 and all of its
slices per forward pass. Parts that exist only on CUDA print "CUDA only" on a
CPU. Nothing here depends on the study's data.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from inference_latency import bench_volume, median_seconds, time_inference, train_step
from torch.utils.data import DataLoader

from cmbstudy.config import load_profile
from cmbstudy.device import resolve_device
from cmbstudy.models.losses import make_loss
from cmbstudy.models.registry import model_from_config
from cmbstudy.preprocessing.geometry import PreprocessedVolume
from cmbstudy.training.sampling_2p5d import SliceDataset

PARTS = ("bf16 autocast", "channels-last", "cudnn.benchmark", "torch.compile")


def random_volumes(n: int, slices: int, size: int, seed: int = 0) -> list[PreprocessedVolume]:
    """``n`` volumes of noise inside a disc-shaped brain, with a few one-voxel-wide lesions each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    volumes = []
    for i in range(n):
        brain = np.repeat(disc[None], slices, axis=0)
        image = np.where(brain, rng.normal(size=brain.shape), 0).astype(np.float32)
        mask = np.zeros(brain.shape, np.uint8)
        for z, y, x in rng.integers((1, size // 3, size // 3), (slices - 1, 2 * size // 3, 2 * size // 3), (6, 3)):
            mask[z, y - 1:y + 2, x - 1:x + 2] = 1
        volumes.append(bench_volume(f"bench{i}", image, brain, mask))
    return volumes


def time_step(profile, device: torch.device, off: str | None, compile_on: bool, repeats: int) -> float:
    """Median seconds of a training step with every part on but ``off``."""
    cfg = profile.train
    side = cfg.crop_size if 0 < cfg.crop_size < profile.preprocess.size else profile.preprocess.size
    torch.manual_seed(0)
    model = model_from_config(profile.model)
    memory = torch.contiguous_format if off == "channels-last" else torch.channels_last
    model.to(device=device, memory_format=memory).train()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = off != "cudnn.benchmark"
    step_model = torch.compile(model) if compile_on and off != "torch.compile" else model
    loss_fn = make_loss(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    x = torch.randn(cfg.batch_size, 3, side, side, device=device).to(memory_format=memory)
    y = (torch.rand(cfg.batch_size, 1, side, side, device=device) > 0.995).float()
    amp = device.type == "cuda" and off != "bf16 autocast"

    def step() -> None:
        train_step(step_model, loss_fn, optimizer, x, y, amp)

    step()  # a compiled step compiles on its first call: not timed
    return median_seconds(step, device, repeats)


def loader_idle_share(profile, device: torch.device, workers: int, steps: int) -> tuple[float, float]:
    """(share of the loop spent waiting for batches, seconds per step) over ``steps`` training steps."""
    cfg = dataclasses.replace(profile.train, slices_per_epoch=steps * profile.train.batch_size)
    volumes = random_volumes(4, 24, profile.preprocess.size)
    dataset = SliceDataset(volumes, cfg, seed=0, augment=True)
    torch.manual_seed(0)
    model = model_from_config(profile.model).to(device=device, memory_format=torch.channels_last).train()
    loss_fn, optimizer = make_loss(cfg), torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=workers,
                        pin_memory=device.type == "cuda" and workers > 0)
    waiting, start = 0.0, time.perf_counter()
    batches = iter(loader)
    while True:
        tic = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            break
        x = batch["image"].to(device, memory_format=torch.channels_last, non_blocking=True)
        y = batch["mask"].to(device, non_blocking=True)
        waiting += time.perf_counter() - tic
        train_step(model, loss_fn, optimizer, x, y, amp=device.type == "cuda")
        if device.type == "cuda":
            torch.cuda.synchronize()
    total = time.perf_counter() - start
    return waiting / total, total / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps of the data-loader measurement")
    parser.add_argument("--slices", type=int, default=48, help="slices of the inference subject")
    parser.add_argument("--compile", action="store_true", help="include torch.compile (compiles for minutes)")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    device = resolve_device(args.device)
    print(f"profile {profile.name}, device {device}, batch {profile.train.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    on = time_step(profile, device, None, args.compile, args.repeats)
    print(f"training step, every part on: {on:.4f} s ({profile.train.batch_size / on:.1f} slices/s)")
    for part in PARTS:
        if part in ("bf16 autocast", "cudnn.benchmark") and device.type != "cuda":
            print(f"  {part:16s} off: CUDA only")
            continue
        if part == "torch.compile" and not args.compile:
            print(f"  {part:16s} off: not measured (run with --compile)")
            continue
        off = time_step(profile, device, part, args.compile, args.repeats)
        print(f"  {part:16s} off: {off:.4f} s, {off / on:.2f}x the time with it on")
    for workers in sorted({0, profile.train.num_workers}):
        idle, per_step = loader_idle_share(profile, device, workers, args.steps)
        pinned = ", pinned memory" if device.type == "cuda" and workers > 0 else ""
        print(f"data loader, {workers} workers{pinned}: {per_step:.4f} s per step, waiting for data {idle:.1%} "
              "of the time")
    torch.manual_seed(0)
    model = model_from_config(profile.model)
    size = profile.preprocess.size
    for batch in sorted({1, 8, args.slices}):
        seconds_model, seconds_post = time_inference(model, args.slices, size, batch, device, max(1, args.repeats // 2))
        print(f"inference of {args.slices} slices of {size}x{size}, {batch} per forward pass: model "
              f"{seconds_model:.3f} s + post {seconds_post:.3f} s")


if __name__ == "__main__":
    main()
