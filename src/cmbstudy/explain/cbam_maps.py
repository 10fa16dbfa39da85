"""CBAM spatial attention of each skip connection (Woo et al. 2018), read with forward hooks.

The networks keep no state of their own: :func:`compute_cbam_maps` hooks the
spatial-attention module of every CBAM a model lists in ``cbam_modules()``
(skip name -> (module, scale factor)), runs one eval forward pass and removes
the hooks. The maps are drawn by :func:`cmbstudy.figures.explain.plot_cbam_maps`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, InputError

__all__ = ["compute_cbam_maps"]


def compute_cbam_maps(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """CBAM spatial attention of every skip from one eval forward pass, at input size.

    Each skip's (B, 1, h, w) map (the sigmoid of CBAM's 7 x 7 spatial convolution)
    covers the padded input at scale 1/k; it is cropped to ceil(H/k) x ceil(W/k),
    bilinearly upsampled by k and cropped to H x W, so pixel centres stay aligned.
    Values stay in (0, 1).

    Args:
        model: network with ``cbam_modules()`` (see :class:`cmbstudy.models.RLKUNet`).
        x: (B, 3, H, W) input.

    Returns:
        skip name -> (B, 1, H, W) float32 array, sorted by name; empty for a model without CBAM.

    Raises:
        InputError: ``x`` is not 4D.
        ConfigError: the model has no ``cbam_modules``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"model input must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if not hasattr(model, "cbam_modules"):
        raise ConfigError(f"{type(model).__name__} lists no cbam_modules(): use a network with CBAM skips")
    h, w = x.shape[-2:]
    captured: dict[str, torch.Tensor] = {}
    factors: dict[str, int] = {}
    handles = []
    for name, (cbam, factor) in model.cbam_modules().items():
        factors[name] = int(factor)

        def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor, name: str = name) -> None:
            captured[name] = output.detach()

        handles.append(cbam.spatial.register_forward_hook(keep))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    out: dict[str, np.ndarray] = {}
    for name in sorted(captured):
        k = factors[name]
        m = captured[name].float()[..., : math.ceil(h / k), : math.ceil(w / k)]
        up = F.interpolate(m, scale_factor=k, mode="bilinear", align_corners=False)[..., :h, :w]
        out[name] = up.cpu().numpy().astype(np.float32)
    return out
