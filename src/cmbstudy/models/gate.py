"""The attention-refined skip connection of RLK-UNet: CBAM and an attention gate, in parallel.

Cho et al. (2026, section 2.2.2): "In addition to CBAM, attention gates are
applied in parallel to further enhance the spatial selectivity of the skip
connections by conditioning on the decoder's coarser outputs." Both take the
encoder's skip feature; the paper does not say how their two outputs are
combined. Here they are averaged (``skip_fusion="mean"``): each output is the
skip re-weighted by attention in (0, 1), so their mean stays on the skip's
scale and a pixel that either attention keeps survives at half weight;
``"sum"`` is the alternative, for the ablation. With CBAM off at a skip, the
gate's output alone goes on; with both off, the skip itself.

The gate (Oktay et al. 2018) is written here instead of MONAI's
``AttentionBlock`` because that block normalises with BatchNorm, which this
network, trained at batch size 2, avoids everywhere: its two projections are
GroupNorm-normalised, and its one-channel map psi is a 1 x 1 convolution and a
sigmoid (a one-channel GroupNorm would standardise the map itself).
Tensors are 2D feature maps ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from .cbam import CBAM
from .layers import group_norm

__all__ = ["SKIP_FUSIONS", "AttentionGate", "SkipRefinement"]

#: How the outputs of CBAM and of the gate on one skip are combined.
SKIP_FUSIONS: tuple[str, ...] = ("mean", "sum")


class AttentionGate(nn.Module):
    """Additive attention gate: ``x * sigmoid(psi(ReLU(GN(W_g g) + GN(W_x x))))``.

    Args:
        channels: channels of ``x`` (the skip) and of ``g`` (the upsampled coarser decoder feature).
        inter_channels: width of the projections.
        norm_groups: upper bound on GroupNorm groups.
    """

    def __init__(self, channels: int, inter_channels: int, norm_groups: int = 8) -> None:
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(channels, inter_channels, 1), group_norm(inter_channels, norm_groups))
        self.w_x = nn.Sequential(nn.Conv2d(channels, inter_channels, 1), group_norm(inter_channels, norm_groups))
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1), nn.Sigmoid())
        self.relu = nn.ReLU()

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``g, x: (B, C, h, w) -> (B, C, h, w)``: ``x`` re-weighted by a (B, 1, h, w) map."""
        return x * self.psi(self.relu(self.w_g(g) + self.w_x(x)))


class SkipRefinement(nn.Module):
    """Attention-refined skip connection: CBAM and the attention gate on the same skip feature, fused.

    Args:
        channels: channels of the skip and of ``up``.
        use_cbam: apply CBAM to the skip.
        use_gate: apply the attention gate.
        cbam_reduction: channel-MLP reduction ratio of CBAM.
        cbam_min_hidden: floor on CBAM's channel-MLP width.
        fusion: "mean" or "sum" of the two refined features (when both are on).
        norm_groups: upper bound on the gate's GroupNorm groups.

    Raises:
        ConfigError: an unknown fusion.
    """

    def __init__(
        self, channels: int, use_cbam: bool, use_gate: bool, cbam_reduction: int = 16, cbam_min_hidden: int = 8,
        fusion: str = "mean", norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if fusion not in SKIP_FUSIONS:
            raise ConfigError(f"model.skip_fusion {fusion!r} is not one of {SKIP_FUSIONS}")
        self.fusion = fusion
        self.cbam: CBAM | None = CBAM(channels, cbam_reduction, min_hidden=cbam_min_hidden) if use_cbam else None
        self.gate: AttentionGate | None = (
            AttentionGate(channels, max(1, channels // 2), norm_groups) if use_gate else None
        )

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """``skip, up: (B, C, h, w) -> (B, C, h, w)`` refined skip."""
        refined = [branch for branch in (
            self.cbam(skip) if self.cbam is not None else None,
            self.gate(g=up, x=skip) if self.gate is not None else None,
        ) if branch is not None]
        if not refined:
            return skip
        if len(refined) == 1:
            return refined[0]
        fused = refined[0] + refined[1]
        return fused / 2 if self.fusion == "mean" else fused
