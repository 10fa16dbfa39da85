"""CPU speed of RLK-UNet with CBAM: parameters, train step and inference time.

For the ``quick`` and ``paper`` profiles' model sections, prints the number of
parameters, the seconds per training step (batch 2, forward + Dice-Focal deep
supervision loss + backward + AdamW step) and per inference slice (batch 1,
eval mode, no gradient), each the median of ``--repeats`` runs after one
warm-up, with ``torch.set_num_threads(--threads)``.

Usage::

    python benchmarks/model_speed.py --sizes 128 512
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cmbstudy.config import load_profile
from cmbstudy.models.losses import make_loss
from cmbstudy.models.registry import model_from_config

__all__ = ["time_model", "main"]


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_model(profile_name: str, size: int, repeats: int = 3) -> dict[str, float]:
    """Parameters and median seconds per train step (batch 2) and inference slice at ``size``."""
    profile = load_profile(profile_name)
    torch.manual_seed(0)
    model = model_from_config(profile.model)
    loss_fn = make_loss(profile.train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x_train = torch.randn(2, 3, size, size)
    target = torch.zeros(2, 1, size, size)
    target[:, :, size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2] = 1.0
    x_infer = torch.randn(1, 3, size, size)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train), target)
        loss.backward()
        optimizer.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(x_infer)

    return {
        "params": float(sum(p.numel() for p in model.parameters())),
        "train_step_s": _median_seconds(train_step, repeats),
        "inference_s": _median_seconds(infer, repeats),
    }


def main(argv: list[str] | None = None) -> None:
    """Print one line per (profile, size)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["quick", "paper"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} after warm-up")
    header = ("profile", "widths", "blocks", "params", "size", "train bs2 s", "infer bs1 s")
    print("{:8} {:20} {:>6} {:>10} {:>5} {:>12} {:>12}".format(*header))
    for name in args.profiles:
        cfg = load_profile(name).model
        for size in args.sizes:
            r = time_model(name, size, args.repeats)
            print(
                f"{name:8} {str(cfg.widths):20} {cfg.blocks_per_stage:>6} {int(r['params']):>10,} "
                f"{size:>5} {r['train_step_s']:>12.2f} {r['inference_s']:>12.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
