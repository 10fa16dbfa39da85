"""RLK-UNet with CBAM: the network of Cho et al. (2025, section 2.2, Fig. 1).

A 2D U-Net on 2.5D input (an axial slice and its two neighbours as 3
channels). Encoder: a stem convolution, then ``len(widths)`` stages of
:class:`~cmbstudy.models.rlk.RLKBlock` (4 in the paper), each stage after
the first entered through a GroupNorm + 2 x 2 stride-2 convolution (strided
downsampling). The deepest stage is the bottleneck. Decoder: per level a
2 x 2 stride-2 transposed convolution, the refined skip
(:class:`~cmbstudy.models.gate.SkipRefinement`: CBAM then attention gate),
concatenation, a 1 x 1 fusion convolution and RLK blocks. Stochastic depth
rises linearly with depth, from 0 at the first stage to ``drop_path`` at the
bottleneck; a decoder level uses the rate of the encoder stage it mirrors.

Outputs are logits of one foreground channel (apply a sigmoid). The
authors' public code ends in a 2-class softmax instead; with two classes the
two are equivalent up to parameterisation, and one channel matches MONAI's
``DiceFocalLoss(sigmoid=True)``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError, InputError
from .cbam import CBAM
from .gate import SkipRefinement
from .layers import group_norm, pad_to_multiple, prior_bias
from .registry import MODEL_FIELDS, register_model
from .rlk import RLKBlock

__all__ = ["RLKUNet", "build_rlk_unet"]


class _Head(nn.Module):
    """GroupNorm, GELU, 1 x 1 convolution to one logit channel: ``(B, C, h, w) -> (B, 1, h, w)``."""

    def __init__(self, channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.act = nn.GELU()
        self.conv = nn.Conv2d(channels, 1, 1)
        nn.init.constant_(self.conv.bias, prior_bias())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(x)))


class _DecoderLevel(nn.Module):
    """Upsample the coarser feature, refine the skip, fuse, then RLK blocks."""

    def __init__(
        self,
        channels: int,
        coarser_channels: int,
        skip: SkipRefinement,
        blocks: nn.Sequential,
        norm_groups: int,
    ) -> None:
        super().__init__()
        self.up = nn.Sequential(
            group_norm(coarser_channels, norm_groups),
            nn.ConvTranspose2d(coarser_channels, channels, 2, stride=2),
        )
        self.skip = skip
        self.fuse = nn.Conv2d(2 * channels, channels, 1)
        self.blocks = blocks

    def forward(self, coarser: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``coarser (B, 2C', h/2, w/2)``, ``skip (B, C, h, w)`` -> ``(B, C, h, w)``."""
        up = self.up(coarser)
        refined = self.skip(skip, up)
        return self.blocks(self.fuse(torch.cat([refined, up], dim=1)))


class RLKUNet(nn.Module):
    """RLK-UNet with optional CBAM skips, attention gates and deep supervision.

    Input ``(B, in_channels, H, W)`` float, any ``H, W``: the input is
    zero-padded at the bottom and right to a multiple of ``2 ** (n_stages - 1)``
    (8 for 4 stages; zero is the background value of the z-scored slices) and
    every output is cropped back. Output in eval mode: logits ``(B, 1, H, W)``.
    In train mode: a list ``[final (B,1,H,W), aux_1 (B,1,ceil(H/2),ceil(W/2)),
    aux_2 (... /4), aux_3 (... /8)]`` (logits) with deep supervision, else
    ``[final]``. The auxiliary outputs come from the decoder levels at 1/2 and
    1/4 and from the bottleneck at 1/8; they cover the padded grid cropped to
    ``ceil`` sizes, so for sizes that are not multiples of 8 they are offset
    by under one coarse pixel from a target resized with nearest-exact
    interpolation (MONAI ``DeepSupervisionLoss``).

    Skips are numbered from the top: ``skip1`` at 1/1, ``skip2`` at 1/2,
    ``skip3`` at 1/4 (for 4 stages). ``cbam_skips = k`` puts CBAM on the ``k``
    deepest skips: 1 -> ``skip3``; 2 -> ``skip3, skip2``; 3 -> all.

    Attributes:
        gradcam_layer: name (as in ``named_modules()``) of the final decoder
            block, for :class:`monai.visualize.GradCAM`.

    Args:
        widths: channels of the encoder stages, shallow to deep.
        kernel_size: large depthwise kernel of the RLK blocks (13 in the paper).
        blocks_per_stage: RLK blocks per encoder stage and decoder level.
        cbam_skips: number of skips, from the deepest, that carry CBAM.
        attention_gate: add the Oktay et al. (2018) gate on every skip.
        deep_supervision: return the auxiliary outputs in train mode.
        drop_path: stochastic-depth rate at the bottleneck.
        cbam_reduction: CBAM channel-MLP reduction ratio.
        small_kernel: parallel small depthwise kernel of the RLK blocks (0: none).
        mlp_ratio: feed-forward width of the RLK blocks (0: none).
        norm_groups: upper bound on GroupNorm groups.
        in_channels: input channels (3: the slice and its two neighbours).

    Raises:
        ConfigError: fewer than 2 stages, a non-positive width or block count,
            ``cbam_skips`` outside ``0..n_stages-1``, or an invalid block setting.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        kernel_size: int = 13,
        blocks_per_stage: int = 2,
        cbam_skips: int = 3,
        attention_gate: bool = True,
        deep_supervision: bool = True,
        drop_path: float = 0.1,
        cbam_reduction: int = 16,
        small_kernel: int = 5,
        mlp_ratio: float = 4.0,
        norm_groups: int = 8,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        n_stages = len(widths)
        if n_stages < 2 or any(w < 1 for w in widths):
            raise ConfigError(f"model.widths must hold >= 2 positive channel counts, got {widths}")
        if blocks_per_stage < 1:
            raise ConfigError(f"model.blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if not 0 <= cbam_skips <= n_stages - 1:
            raise ConfigError(
                f"model.cbam_skips must lie in 0..{n_stages - 1} for {n_stages} stages, "
                f"got {cbam_skips}"
            )
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"model.drop_path must lie in [0, 1), got {drop_path}")
        self.n_stages = n_stages
        self.divisor = 2 ** (n_stages - 1)
        self.deep_supervision = deep_supervision
        rates = [drop_path * s / (n_stages - 1) for s in range(n_stages)]

        def stage_blocks(channels: int, rate: float) -> nn.Sequential:
            return nn.Sequential(
                *[
                    RLKBlock(channels, kernel_size, small_kernel, mlp_ratio, rate, norm_groups)
                    for _ in range(blocks_per_stage)
                ]
            )

        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.downs = nn.ModuleList(
            nn.Sequential(
                group_norm(widths[s - 1], norm_groups),
                nn.Conv2d(widths[s - 1], widths[s], 2, stride=2),
            )
            for s in range(1, n_stages)
        )
        self.encoders = nn.ModuleList(stage_blocks(widths[s], rates[s]) for s in range(n_stages))
        # Decoder levels from the deepest skip (stage n-2) up to the full-resolution one (stage 0).
        self.skip_names = [f"skip{s + 1}" for s in range(n_stages - 1)]
        self.decoders = nn.ModuleList()
        for s in range(n_stages - 2, -1, -1):
            use_cbam = s >= (n_stages - 1) - cbam_skips
            skip = SkipRefinement(widths[s], use_cbam, attention_gate, cbam_reduction)
            blocks = stage_blocks(widths[s], rates[s])
            self.decoders.append(_DecoderLevel(widths[s], widths[s + 1], skip, blocks, norm_groups))
        self.head = _Head(widths[0], norm_groups)
        # Auxiliary heads at 1/2, 1/4, ..., 1/2**(n-1): decoder levels 1..n-2, then the bottleneck.
        self.aux_heads = nn.ModuleList(
            _Head(widths[s], norm_groups) for s in range(1, n_stages) if deep_supervision
        )
        self.gradcam_layer: str = f"decoders.{n_stages - 2}.blocks"

    def cbam_modules(self) -> dict[str, tuple[CBAM, int]]:
        """Skip name -> (its CBAM, its scale factor ``2**s``) for every skip that carries CBAM, deepest first.

        The attention figures hook ``cbam.spatial`` to read the spatial map of a forward pass.
        """
        out = {}
        for level, decoder in enumerate(self.decoders):
            s = self.n_stages - 2 - level
            if decoder.skip.cbam is not None:
                out[self.skip_names[s]] = (decoder.skip.cbam, 2**s)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, 1, H, W)`` in eval mode; a list (see the class docstring) in train mode.

        Raises:
            InputError: ``x`` is not 4D ``(B, C, H, W)`` with the expected channels.
        """
        expected = self.stem.in_channels
        if x.ndim != 4 or x.shape[1] != expected:
            raise InputError(
                f"model input must be (B, {expected}, H, W) (a slice and its neighbours), "
                f"got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.divisor)

        features: list[torch.Tensor] = []
        y = self.stem(x)
        for s, blocks in enumerate(self.encoders):
            if s > 0:
                y = self.downs[s - 1](y)
            y = blocks(y)
            features.append(y)

        decoded = [features[-1]]  # bottleneck first, then coarse-to-fine decoder levels
        for level, decoder in enumerate(self.decoders):
            s = self.n_stages - 2 - level
            decoded.append(decoder(decoded[-1], features[s]))

        final = _crop(self.head(decoded[-1]), h, w, 1)
        if not self.training:
            return final
        outputs = [final]
        if self.deep_supervision:
            # decoded[-1 - s] is the feature map at scale 1 / 2**s (s = n-1: the bottleneck).
            for s, head in enumerate(self.aux_heads, start=1):
                outputs.append(_crop(head(decoded[-1 - s]), h, w, 2**s))
        return outputs


def _crop(t: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """Crop a ``(B, C, h', w')`` map at scale ``1/factor`` to ``ceil(h/factor), ceil(w/factor)``."""
    return t[..., : -(-h // factor), : -(-w // factor)]


_RLK_FIELDS = tuple(p for p in inspect.signature(RLKUNet).parameters if p in MODEL_FIELDS)


def build_rlk_unet(**cfg: Any) -> nn.Module:
    """The registry builder of ``rlk_unet``: RLK-UNet with CBAM off (``cbam_skips`` set to 0)."""
    return RLKUNet(**{**cfg, "cbam_skips": 0})


register_model("rlk_unet_cbam", RLKUNet, _RLK_FIELDS)
register_model("rlk_unet", build_rlk_unet, _RLK_FIELDS)
