"""The attention-refined skip connection of RLK-UNet: CBAM and MONAI's attention gate (Oktay et al. 2018).

Tensors are 2D feature maps ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.nets.attentionunet import AttentionBlock

from .cbam import CBAM

__all__ = ["SkipRefinement"]


class SkipRefinement(nn.Module):
    """Attention-refined skip connection: optional CBAM, then an optional attention gate.

    Cho et al. (2025, section 2.2.2) put CBAM on the skip and, "in addition",
    an attention gate (Oktay et al. 2018) conditioned on the coarser decoder
    feature. The text does not say how the two are combined; here they are
    applied in sequence: ``skip -> CBAM -> gate(g=up, x=skip)``, where ``up``
    is the decoder feature from the coarser level after its transposed
    convolution (MONAI's ``AttentionBlock`` wants ``g`` and ``x`` at one
    size, as in MONAI's ``AttentionUnet``). MONAI's gate uses BatchNorm.

    Args:
        channels: channels of the skip and of ``up``.
        use_cbam: apply CBAM to the skip.
        use_gate: apply the attention gate.
        cbam_reduction: channel-MLP reduction ratio of CBAM.
    """

    def __init__(
        self, channels: int, use_cbam: bool, use_gate: bool, cbam_reduction: int = 16
    ) -> None:
        super().__init__()
        self.cbam: CBAM | None = CBAM(channels, cbam_reduction) if use_cbam else None
        self.gate: AttentionBlock | None = None
        if use_gate:
            inter = max(1, channels // 2)
            self.gate = AttentionBlock(spatial_dims=2, f_int=inter, f_g=channels, f_l=channels)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """``skip, up: (B, C, h, w) -> (B, C, h, w)`` refined skip."""
        if self.cbam is not None:
            skip = self.cbam(skip)
        if self.gate is not None:
            skip = self.gate(g=up, x=skip)
        return skip
