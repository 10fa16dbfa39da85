"""Training throughput (slices/s) and inference seconds per subject of a profile's network.

Usage::

    python benchmarks/inference_latency.py --profile quick --sizes 128 512 --slices 40

For each in-plane size S: a training step (forward, Dice+Focal with deep
supervision, backward, AdamW step) on ``train.batch_size`` random 2.5D slices
of S x S (and of the profile's crop when it is smaller than S), and inference
of one ``(slices, S, S)`` volume timed as in :mod:`cmbstudy.inference`: the
network on every slice, then restoration to the input grid, threshold,
connected components and the lesion table (preprocessing excluded).
Median of ``--repeats`` runs after one warm-up, on ``--device`` (auto: CUDA
when available).

It also prints the network's floating-point operations per slice (one forward
pass, counted by ``torch.utils.flop_counter``; a training step counts three
forwards' worth, forward and backward), the rate a training step reaches, and
its fraction of the device's peak (``--peak-tflops``; on an H100 or H200 the
dense bf16 peak of its datasheet by default). The large depthwise kernel is
timed on its own, channels-last and not, since PyTorch's depthwise kernels are
slow for large kernels.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from cmbstudy.config import load_profile
from cmbstudy.device import autocast, resolve_device
from cmbstudy.evaluation.lesions import find_lesions
from cmbstudy.inference.predict import lesion_table
from cmbstudy.inference.sliding_window import predict_volume
from cmbstudy.models.losses import make_loss
from cmbstudy.models.registry import model_from_config
from cmbstudy.preprocessing.geometry import Geometry, PreprocessedVolume


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(step, device: torch.device, repeats: int) -> float:
    """Median seconds of ``step()`` over ``repeats`` runs after one warm-up, the device synchronised around each."""
    times = []
    for i in range(repeats + 1):
        _sync(device)
        tic = time.perf_counter()
        step()
        _sync(device)
        if i:
            times.append(time.perf_counter() - tic)
    return statistics.median(times)


def train_step(model, loss_fn, optimizer, x: torch.Tensor, y: torch.Tensor, amp: bool) -> None:
    """One optimisation step of ``model`` on ``(x, y)``, the forward pass under bf16 autocast when ``amp``."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = model(x)
    loss = loss_fn([o.float() for o in outputs], y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def time_train_step(model, loss_fn, batch: int, side: int, device: torch.device, repeats: int) -> float:
    """Median seconds of one optimisation step on ``(batch, 3, side, side)`` random input (bf16 on CUDA)."""
    memory = torch.channels_last  # NHWC: 4x faster depthwise 13x13 on CPU too
    model.to(device=device, memory_format=memory).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, side, side, device=device).to(memory_format=memory)
    y = (torch.rand(batch, 1, side, side, device=device) > 0.995).float()
    return median_seconds(lambda: train_step(model, loss_fn, optimizer, x, y, device.type == "cuda"), device, repeats)


def bench_volume(subject_id: str, image: np.ndarray, brain: np.ndarray, mask: np.ndarray | None = None
                 ) -> PreprocessedVolume:
    """A preprocessed ``(Z, S, S)`` volume whose input grid is its own (no crop, no reorientation)."""
    n_slices, side = image.shape[0], image.shape[1]
    geometry = Geometry(
        original_shape=(side, side, n_slices), original_affine=tuple(map(tuple, np.eye(4))),
        canonical_shape=(side, side, n_slices), canonical_voxel_mm=(0.5, 0.5, 3.0),
        box_start=(0, 0), box_size=side, size=side,
    )
    return PreprocessedVolume(subject_id, image, brain, mask, geometry)


def time_inference(model, n_slices: int, side: int, batch: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median (model seconds, post-processing seconds) for one ``(n_slices, side, side)`` volume."""
    rng = np.random.default_rng(0)
    volume = bench_volume("bench", rng.normal(size=(n_slices, side, side)).astype(np.float32),
                          np.ones((n_slices, side, side), dtype=bool))
    model_times, post_times = [], []
    for i in range(repeats + 1):
        tic = time.perf_counter()
        prob = predict_volume(model, volume, batch, device)
        mid = time.perf_counter()
        restored = volume.restore(prob, order=1)
        lesion_table(find_lesions(restored, 0.5, 26), np.eye(4))
        toc = time.perf_counter()
        if i:
            model_times.append(mid - tic)
            post_times.append(toc - mid)
    return statistics.median(model_times), statistics.median(post_times)


#: Dense bf16 tensor-core peak (TFLOP/s) of the datasheets, by a name the device reports.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}


def forward_flops(model, x: torch.Tensor) -> int:
    """Floating-point operations of one eval-mode forward pass of ``model`` on ``x``."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def count_forward_flops(model, side: int, device: torch.device) -> int:
    """Floating-point operations of one forward pass on one ``(1, 3, side, side)`` slice."""
    model.to(device)
    return forward_flops(model, torch.randn(1, 3, side, side, device=device))


def device_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known CUDA device (:data:`BF16_PEAK_TFLOPS`), else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def time_depthwise(channels: int, kernel: int, batch: int, side: int, device: torch.device, repeats: int
                   ) -> dict[str, float]:
    """Median seconds of forward + backward of one depthwise ``kernel`` x ``kernel`` convolution, by memory format."""
    seconds = {}
    for name, memory in (("channels-last", torch.channels_last), ("contiguous", torch.contiguous_format)):
        conv = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels).to(
            device=device, memory_format=memory)
        x = torch.randn(batch, channels, side, side, device=device, requires_grad=True).to(memory_format=memory)

        def step() -> None:
            with autocast(device):
                out = conv(x)
            out.float().sum().backward()

        seconds[name] = median_seconds(step, device, repeats)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default: the profile's size and 512")
    parser.add_argument("--slices", type=int, default=40, help="slices of the inference volume")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak for the fraction (default: the bf16 datasheet peak of an H100/H200)")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    device = resolve_device(args.device)
    sizes = args.sizes or sorted({profile.preprocess.size, 512})
    torch.manual_seed(0)
    model = model_from_config(profile.model)
    loss_fn = make_loss(profile.train)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"profile {profile.name}: {profile.model.name}, {n_params:,} parameters, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    batch = profile.train.batch_size
    peak = args.peak_tflops or device_peak_tflops(device)
    for side in sizes:
        sides = [side] + ([profile.train.crop_size] if 0 < profile.train.crop_size < side else [])
        for train_side in sides:
            flops = count_forward_flops(model, train_side, device)
            step = time_train_step(model, loss_fn, batch, train_side, device, args.repeats)
            rate = 3 * flops * batch / step / 1e12
            share = f", {rate / peak:.1%} of a {peak:g} TFLOP/s peak" if peak else ""
            print(f"S={side:4d} train {train_side}x{train_side}, batch {batch}: "
                  f"{step:.3f} s/step, {batch / step:.2f} slices/s; {flops / 1e9:.2f} GFLOP per slice forward, "
                  f"{rate:.3f} TFLOP/s{share}")
        depthwise = time_depthwise(profile.model.widths[0], profile.model.kernel_size, batch, side, device,
                                   args.repeats)
        print(f"S={side:4d} depthwise {profile.model.kernel_size}x{profile.model.kernel_size} on "
              f"{profile.model.widths[0]} channels, batch {batch}, forward + backward: "
              + ", ".join(f"{name} {seconds:.4f} s" for name, seconds in depthwise.items()))
        seconds_model, seconds_post = time_inference(
            model, args.slices, side, profile.train.val_batch_size, device, args.repeats
        )
        print(f"S={side:4d} inference {args.slices} slices: model {seconds_model:.3f} s + post "
              f"{seconds_post:.3f} s = {seconds_model + seconds_post:.3f} s per subject")


if __name__ == "__main__":
    main()
