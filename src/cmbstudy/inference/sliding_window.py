"""Whole-volume network inference: 2.5D slices or 3D sliding windows -> logits on the preprocessed grid.

2.5D networks (the paper's): every axial slice is predicted with its two
neighbours as input (:func:`cmbstudy.preprocessing.stacks.volume_stacks`),
a batch of slices per forward pass. Volumetric networks (``input_kind = "3d"``):
MONAI's sliding-window inference over the volume, resampled to the network's
isotropic spacing and back. Validation during training and every prediction
command use these functions, so the two see the same probabilities.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy.special import expit

from ..config import TrainConfig
from ..device import autocast, resolve_device
from ..errors import ConfigError
from ..models.layers import check_patch_size, is_volumetric
from ..models.rlk import RLKBlock, has_rlk_blocks, inference_copy
from ..preprocessing.geometry import (
    PreprocessedVolume,
    resample_to_shape,
    resample_to_spacing,
    volume_voxel_mm,
)
from ..preprocessing.stacks import volume_stacks

__all__ = ["CPU_BATCH", "CPU_FEED_FORWARD_BAND", "SLIDING_WINDOW_OVERLAP", "predict_logits", "predict_volume",
           "predict_volume_3d"]

#: Fraction of a patch shared by neighbouring windows of the sliding-window inference.
SLIDING_WINDOW_OVERLAP = 0.25

#: Most 2.5D slices per forward pass on a CPU. Measured for the quick profile's RLK-UNet at 128 x 128, small kernels
#: folded (median ms per slice over 4 passes of 40 slices): on one thread 35 in 2-slice batches in the default
#: (NCHW) layout, 41 channels-last, 55 channels-last in 8-slice batches; on two threads 30 channels-last in 2-slice
#: batches, 37 in 8-slice ones, 40 NCHW. The full-resolution GroupNorm, GELU and 1 x 1 convolutions dominate; small
#: batches keep them in cache, and one thread runs them fastest in NCHW (see :func:`predict_logits`).
CPU_BATCH = 2

#: On a CPU, the most hidden activations an RLK block's feed-forward holds at once (``RLKBlock.band_elements``):
#: 2^18 floats, 1 MiB, within a core's cache. Measured for the same network on 64 slices of two test subjects,
#: 2 at a time, NCHW, one thread (median of 4 passes): 35.9 ms per slice whole, 30.9 in bands of 2^17 or 2^18
#: floats, 31.4 of 2^19; the same logits to the bit.
CPU_FEED_FORWARD_BAND = 1 << 18


@contextlib.contextmanager
def _flush_denormals() -> Iterator[None]:
    """CPU arithmetic that rounds denormal floats (below 1.2e-38) to zero, for the time of the block.

    Near-empty background gives the network denormal activations, which a CPU computes many times slower:
    measured on a test subject at 128 x 128, one thread, 43 ms per slice without, 34 ms with. Nothing the
    study reads is that small. Afterwards denormals are kept again, torch's default.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def predict_logits(
    model: torch.nn.Module,
    image: np.ndarray,
    batch_size: int,
    device: str | torch.device,
    voxel_mm: Sequence[float] | None = None,
    patch_size: Sequence[int] | None = None,
) -> np.ndarray:
    """Logits of every voxel of a ``(Z, S, S)`` volume, as ``(Z, S, S)`` float32.

    2.5D networks: slices are stacked with their neighbours
    (:func:`cmbstudy.preprocessing.stacks.volume_stacks`) and run ``batch_size`` at a time
    in eval mode on ``device``; the model must return ``(B, 1, H, W)`` logits in eval mode and is
    left in the mode it was in. A network of RLK blocks runs as a copy whose small kernels are folded
    into their large ones (:func:`cmbstudy.models.rlk.inference_copy`), at most :data:`CPU_BATCH`
    slices at a time on a CPU, its feed-forward in bands of rows (:data:`CPU_FEED_FORWARD_BAND`); any other
    network is moved to ``device`` itself.
    Volumetric networks (``input_kind = "3d"``): :func:`predict_volume_3d` with ``patch_size`` windows
    (default ``TrainConfig().patch_size``), ``batch_size`` windows at a time,
    at the model's ``spacing_mm`` (which needs ``voxel_mm``, the volume's voxel
    size in mm along Z, Y, X, when > 0).

    Raises:
        ConfigError: ``batch_size`` < 1, or a volumetric model with ``spacing_mm > 0`` and no ``voxel_mm``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    device = resolve_device(device)
    if is_volumetric(model):
        patch = TrainConfig().patch_size if patch_size is None else patch_size
        spacing = float(getattr(model, "spacing_mm", 0.0))
        return predict_volume_3d(model, image, voxel_mm, spacing, patch, batch_size, device)
    memory = torch.channels_last  # as the 2.5D networks train; bf16 tensor cores on a GPU
    if has_rlk_blocks(model):  # a folded copy, in the layout, batch and bands that suit the device
        network = inference_copy(model)
        band = None
        if device.type == "cpu":
            batch_size, band = min(batch_size, CPU_BATCH), CPU_FEED_FORWARD_BAND
            if torch.get_num_threads() == 1:
                memory = torch.contiguous_format
        for block in network.modules():
            if isinstance(block, RLKBlock):
                block.band_elements = band
    else:
        network = model
    network.to(device=device, memory_format=memory)
    stacks = volume_stacks(np.asarray(image, dtype=np.float32))
    out = np.empty((stacks.shape[0],) + stacks.shape[2:], dtype=np.float32)
    with _eval_mode(network), torch.inference_mode(), autocast(device), _flush_denormals():
        for start in range(0, stacks.shape[0], batch_size):
            batch = torch.from_numpy(stacks[start : start + batch_size]).to(device, memory_format=memory)
            logits = network(batch)
            out[start : start + batch.shape[0]] = logits[:, 0].float().cpu().numpy()
    return out


def predict_volume(
    model: torch.nn.Module,
    volume: PreprocessedVolume,
    batch_size: int,
    device: str | torch.device,
    patch_size: Sequence[int] | None = None,
) -> np.ndarray:
    """CMB probability of every voxel of ``volume.image``: ``(Z, S, S)`` float32 in [0, 1].

    Sigmoid of :func:`predict_logits` (the voxel size comes from
    ``volume.geometry``; ``patch_size`` is the sliding window of volumetric
    models), on the preprocessed grid; map it to the input grid with
    ``volume.restore(prob, order=1)``.
    """
    logits = predict_logits(model, volume.image, batch_size, device, volume_voxel_mm(volume), patch_size)
    return expit(logits.astype(np.float64)).astype(np.float32)


def predict_volume_3d(
    model: torch.nn.Module,
    image: np.ndarray,
    voxel_mm: Sequence[float] | None,
    spacing_mm: float,
    patch_size: Sequence[int],
    batch_size: int,
    device: str | torch.device,
    overlap: float = SLIDING_WINDOW_OVERLAP,
) -> np.ndarray:
    """Logits of a volumetric network on a whole ``(Z, Y, X)`` volume, as ``(Z, Y, X)`` float32.

    The volume is resampled to ``spacing_mm`` isotropic when that is > 0,
    predicted by MONAI ``sliding_window_inference`` with ``patch_size``
    windows (``batch_size`` windows per forward pass, ``overlap`` shared,
    uniform blending of overlapping logits; a volume smaller than a window is
    zero-padded and the output cropped back), and resampled back onto the
    input shape (linear). The model runs in eval mode on ``device`` (bf16
    autocast on CUDA) and is left in the mode it was in.

    Raises:
        ConfigError: ``batch_size`` < 1, a bad ``patch_size``, or ``spacing_mm > 0`` without ``voxel_mm``.
        ValueError: ``image`` is not 3D.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) volume, got shape {image.shape}")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    patch = check_patch_size(patch_size)
    if spacing_mm > 0:
        if voxel_mm is None:
            raise ConfigError(f"spacing_mm={spacing_mm} needs the volume's voxel size (mm); pass voxel_mm")
        work = resample_to_spacing(image, voxel_mm, spacing_mm, 1)
    else:
        work = image
    device = torch.device(device)
    model.to(device=device, memory_format=torch.contiguous_format)
    with _eval_mode(model), torch.inference_mode(), autocast(device):
        inputs = torch.from_numpy(np.ascontiguousarray(work))[None, None].to(device)
        logits = sliding_window_inference(
            inputs, patch, batch_size, lambda x: model(x).float(), overlap=overlap, mode="constant",
        )
    out = torch.as_tensor(logits)[0, 0].float().cpu().numpy()
    return resample_to_shape(out, image.shape, 1) if spacing_mm > 0 else out.astype(np.float32)
