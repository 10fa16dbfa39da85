"""The Convolutional Block Attention Module, CBAM (Woo et al., ECCV 2018), on 2D feature maps.

Written here because neither torch nor MONAI ships it (MONAI has
squeeze-and-excitation only). ``timm.layers.CbamModule`` matches the paper's
channel attention, but its spatial attention is a convolution followed by
BatchNorm (as in Woo et al.'s public code), and this network uses no BatchNorm
(batch size 2, GroupNorm everywhere); the paper (Cho et al. 2026, Fig. 1b)
describes a convolution followed by a sigmoid, which is what is written here.
Tensors are ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError

__all__ = ["SPATIAL_KERNEL", "ChannelAttention", "SpatialAttention", "CBAM"]

#: Side of the spatial attention's convolution (pixels), as in Woo et al. and the paper's Fig. 1b.
SPATIAL_KERNEL = 7


class ChannelAttention(nn.Module):
    """CBAM channel attention (Woo et al., ECCV 2018, eq. 2).

    ``M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with one MLP shared
    by both pooled descriptors: ``C -> h -> C`` with a ReLU, written as 1 x 1
    convolutions, ``h = max(min_hidden, C // reduction)`` (and at most ``C``).
    The floor is this study's: with the reduction of 16 of Woo et al., a
    16-channel skip would get a single hidden unit, one number for every
    channel's weight.

    Args:
        channels: feature channels ``C``.
        reduction: reduction ratio ``r`` of the hidden layer (16 in Woo et al.).
        min_hidden: the least hidden width.

    Raises:
        ConfigError: ``reduction`` or ``min_hidden`` is not positive.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        if reduction < 1 or min_hidden < 1:
            raise ConfigError(
                f"model.cbam_reduction ({reduction}) and model.cbam_min_hidden ({min_hidden}) must be >= 1"
            )
        hidden = min(channels, max(min_hidden, channels // reduction))
        self.hidden = hidden
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, 1, 1)`` weights in (0, 1)."""
        avg = torch.mean(x, dim=(2, 3), keepdim=True)
        mx = torch.amax(x, dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialAttention(nn.Module):
    """CBAM spatial attention (Woo et al., ECCV 2018, eq. 3).

    ``M_s(F) = sigmoid(conv_k([mean_c(F); max_c(F)]))`` with a ``k x k``
    convolution (7 x 7 in Woo et al.) over the channel-mean and channel-max
    maps, zero-padded so the map has the input's size.

    Args:
        kernel_size: odd convolution size in pixels.

    Raises:
        ConfigError: ``kernel_size`` is even or not positive.
    """

    def __init__(self, kernel_size: int = SPATIAL_KERNEL) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"CBAM spatial kernel must be odd and positive, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 1, H, W)`` map in (0, 1)."""
        pooled = torch.cat(
            [torch.mean(x, dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], dim=1
        )
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel, then spatial.

    ``F' = M_c(F) * F``; ``F'' = M_s(F') * F'`` (Cho et al. 2026, eqs. 1-2,
    Fig. 1b). The module keeps no state: the attention figures read the spatial
    map ``M_s`` with a forward hook on :attr:`spatial` (:mod:`cmbstudy.explain.cbam_maps`).

    Args:
        channels: feature channels ``C``.
        reduction: channel-MLP reduction ratio.
        spatial_kernel: spatial-attention kernel size (7 in Woo et al.).
        min_hidden: the least hidden width of the channel MLP.
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = SPATIAL_KERNEL,
                 min_hidden: int = 8) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, min_hidden)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        x = x * self.channel(x)
        return x * self.spatial(x)
