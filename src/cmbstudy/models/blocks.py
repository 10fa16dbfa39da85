"""Building blocks of RLK-UNet with CBAM (Cho et al. 2025, section 2.2).

- :class:`RLKBlock`: the residual large-kernel block (Son et al. 2023, RLK-Unet,
  after RepLKNet, Ding et al. 2022), written here because no library ships it.
- :class:`ChannelAttention`, :class:`SpatialAttention`, :class:`CBAM`: the
  Convolutional Block Attention Module (Woo et al. 2018), written here because
  neither torch nor MONAI ships it (MONAI has squeeze-and-excitation only).
- :class:`SkipRefinement`: the attention-refined skip connection of Cho et al.
  (CBAM, then MONAI's Oktay et al. 2018 attention gate conditioned on the
  coarser decoder feature).

GroupNorm, GELU and the convolutions come from torch; stochastic depth is
MONAI's :class:`monai.networks.layers.DropPath`; the attention gate is MONAI's
:class:`monai.networks.nets.attentionunet.AttentionBlock`. All tensors are 2D
feature maps ``(B, C, H, W)`` with sizes in pixels of the (resampled) slice.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.networks.layers import DropPath
from monai.networks.nets.attentionunet import AttentionBlock

from ..errors import ConfigError

__all__ = [
    "group_norm",
    "RLKBlock",
    "ChannelAttention",
    "SpatialAttention",
    "CBAM",
    "SkipRefinement",
]


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count ``<= max_groups`` that divides ``channels``.

    Raises:
        ConfigError: ``channels`` or ``max_groups`` is not positive.
    """
    if channels < 1 or max_groups < 1:
        raise ConfigError(
            f"group norm needs positive channels and groups, got {channels} and {max_groups}"
        )
    groups = math.gcd(channels, max_groups)
    return nn.GroupNorm(num_groups=groups, num_channels=channels)


class RLKBlock(nn.Module):
    """Residual large-kernel (RLK) block; shape-preserving ``(B, C, H, W) -> (B, C, H, W)``.

    Two pre-activation residual sub-blocks, as in the RLK-Unet of Son et al.
    (2023, Front. Oncol. 13:1273013), which follows RepLKNet (Ding et al., CVPR
    2022), with the GroupNorm + GELU of Cho et al. (2025, section 2.2.1)::

        y = PW_out(GELU(GN(DW_k(z) + DW_s(z)))),  z = PW_in(GELU(GN(x)))
        x = x + DropPath(y)                                   # large-kernel mixer
        x = x + DropPath(PW_2(GELU(PW_1(GN(x)))))             # 1x1 feed-forward

    ``DW_k`` is a depthwise ``kernel_size x kernel_size`` convolution (13 x 13
    in the paper: about the extent of a 2-10 mm CMB plus its context at the
    paper's 512 x 512 resampling). Depthwise large kernels keep the block
    affordable on a CPU (a dense 13 x 13 convolution has ``C`` times the
    weights). ``DW_s`` is a parallel small depthwise kernel (``small_kernel``,
    5 in Son et al.'s public code; 0 disables it) that keeps fine detail, as
    RepLKNet recommends for large kernels. The large-kernel branch always
    reaches the output here; in the public RLK-Unet code its result is
    overwritten before use.

    Args:
        channels: feature channels ``C``.
        kernel_size: odd large-kernel size in pixels.
        small_kernel: odd small parallel kernel size, or 0 for none.
        mlp_ratio: hidden width of the feed-forward sub-block as a multiple of
            ``C``; 0 drops that sub-block.
        drop_path: stochastic-depth probability of both residual branches.
        norm_groups: upper bound on GroupNorm groups (see :func:`group_norm`).

    Raises:
        ConfigError: an even or non-positive kernel size, a negative MLP ratio
            or a drop-path rate outside [0, 1).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 13,
        small_kernel: int = 5,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size must be odd and positive, got {kernel_size}")
        if small_kernel < 0 or (small_kernel > 0 and small_kernel % 2 == 0):
            raise ConfigError(f"model.small_kernel must be 0 or odd, got {small_kernel}")
        if mlp_ratio < 0:
            raise ConfigError(f"model.mlp_ratio must be >= 0, got {mlp_ratio}")
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"model.drop_path must lie in [0, 1), got {drop_path}")
        self.norm_in = group_norm(channels, norm_groups)
        self.pw_in = nn.Conv2d(channels, channels, 1)
        self.dw_large = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )
        self.dw_small: nn.Conv2d | None = None
        if small_kernel > 0:
            self.dw_small = nn.Conv2d(
                channels, channels, small_kernel, padding=small_kernel // 2, groups=channels
            )
        self.norm_mid = group_norm(channels, norm_groups)
        self.pw_out = nn.Conv2d(channels, channels, 1)
        self.mlp: nn.Sequential | None = None
        hidden = int(round(channels * mlp_ratio))
        if hidden > 0:
            self.mlp = nn.Sequential(
                group_norm(channels, norm_groups),
                nn.Conv2d(channels, hidden, 1),
                nn.GELU(),
                nn.Conv2d(hidden, channels, 1),
            )
        self.drop_path = DropPath(drop_path)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        z = self.pw_in(self.act(self.norm_in(x)))
        y = self.dw_large(z)
        if self.dw_small is not None:
            y = y + self.dw_small(z)
        y = self.pw_out(self.act(self.norm_mid(y)))
        x = x + self.drop_path(y)
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(x))
        return x


class ChannelAttention(nn.Module):
    """CBAM channel attention (Woo et al., ECCV 2018, eq. 2).

    ``M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with one MLP shared
    by both pooled descriptors: ``C -> max(1, C // reduction) -> C`` with a
    ReLU, written as 1 x 1 convolutions.

    Args:
        channels: feature channels ``C``.
        reduction: reduction ratio ``r`` of the hidden layer (16 in Woo et al.).

    Raises:
        ConfigError: ``reduction`` is not positive.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ConfigError(f"model.cbam_reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
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

    def __init__(self, kernel_size: int = 7) -> None:
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

    ``F' = M_c(F) * F``; ``F'' = M_s(F') * F'`` (Cho et al. 2025, eqs. 1-2,
    Fig. 1b). The spatial map of the last call is kept in
    :attr:`last_spatial_map` (detached) for the attention figures.

    Args:
        channels: feature channels ``C``.
        reduction: channel-MLP reduction ratio.
        spatial_kernel: spatial-attention kernel size (7 in Woo et al.).
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)
        self.last_spatial_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        x = x * self.channel(x)
        s_map = self.spatial(x)
        self.last_spatial_map = s_map.detach()
        return x * s_map


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
