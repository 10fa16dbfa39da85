"""RLK-UNet with CBAM: the network of Cho et al. (2026, section 2.2, Fig. 1).

A 2D U-Net on 2.5D input (an axial slice and its two neighbours as 3
channels). Encoder: a stem convolution, then four stages of
:class:`~cmbstudy.models.rlk.RLKBlock` (``len(widths)`` of them, 4 in the
paper) at 1, 1/2, 1/4 and 1/8 of the input size, and a bottleneck at 1/16 of
twice the last width; each stage after the first is entered through a
GroupNorm + 2 x 2 stride-2 convolution (strided downsampling). Decoder: four
stages, at 1/8, 1/4, 1/2 and 1, each a 2 x 2 stride-2 transposed convolution,
the refined skip of the encoder stage of its size
(:class:`~cmbstudy.models.gate.SkipRefinement`: CBAM and the attention gate in
parallel), concatenation, a 1 x 1 fusion convolution and RLK blocks. The final
output comes from the full-size decoder stage; with deep supervision the three
other decoder stages (1/2, 1/4, 1/8) give the auxiliary outputs ("multi-scale
outputs are generated at three decoder stages").

Stochastic depth is applied in the encoder only, as the paper says
("droppath is applied with increasing drop rates across encoder levels"): it
rises linearly from 0 at the first stage to ``drop_path`` at the bottleneck,
and the decoder has none.

Outputs are logits of one foreground channel (apply a sigmoid). The authors'
public code ends in a 2-class softmax instead; with two classes the two are
equivalent up to parameterisation, and one channel matches MONAI's
``DiceFocalLoss(sigmoid=True)``.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from ..errors import ConfigError, InputError
from .cbam import CBAM
from .gate import SkipRefinement
from .layers import group_norm, pad_to_multiple, prior_bias
from .registry import MODEL_FIELDS, register_model
from .rlk import RLKBlock

__all__ = ["RLKUNet"]


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


class _DecoderStage(nn.Module):
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
        """``coarser (B, C', h/2, w/2)``, ``skip (B, C, h, w)`` -> ``(B, C, h, w)``."""
        up = self.up(coarser)
        refined = self.skip(skip, up)
        return self.blocks(self.fuse(torch.cat([refined, up], dim=1)))


def _cbam_stages(n_skips: int, cbam_skips: int) -> set[int]:
    """The encoder stages whose skip carries CBAM: the ``cbam_skips`` deepest (-1: all)."""
    count = n_skips if cbam_skips < 0 else cbam_skips
    return set(range(n_skips - count, n_skips))


class RLKUNet(nn.Module):
    """RLK-UNet with CBAM skips, parallel attention gates and deep supervision.

    Input ``(B, in_channels, H, W)`` float, any ``H, W``: the input is
    zero-padded at the bottom and right to a multiple of ``2 ** len(widths)``
    (16 for 4 stages; zero is the background value of the z-scored slices) and
    every output is cropped back. Output in eval mode: logits ``(B, 1, H, W)``.
    In train mode: a list ``[final (B,1,H,W), aux at 1/2 (B,1,ceil(H/2),ceil(W/2)),
    aux at 1/4, aux at 1/8]`` (logits) with deep supervision, else ``[final]``;
    each auxiliary output comes from the decoder stage of its size and covers
    the padded grid cropped to ``ceil`` sizes (the loss max-pools the target on
    the same grid, :class:`cmbstudy.models.losses.DeepSupervisedDiceFocal`).

    Skips are numbered from the top: ``skip1`` at 1/1 ... ``skip4`` at 1/8 (for
    4 stages). ``cbam_skips = k`` puts CBAM on the ``k`` deepest skips: 1 ->
    ``skip4``; 2 -> ``skip4, skip3``; -1 (or the number of skips) -> all; 0 -> none.

    Attributes:
        gradcam_layer: name (as in ``named_modules()``) of the final decoder
            block, for :class:`monai.visualize.GradCAM`.
        divisor: the input is padded to a multiple of this.

    Args:
        widths: channels of the encoder stages, shallow to deep (the bottleneck has twice the last).
        kernel_size: large depthwise kernel of the RLK blocks (13 in the paper).
        blocks_per_stage: RLK blocks per encoder and decoder stage.
        cbam_skips: number of skips, from the deepest, that carry CBAM (-1: all).
        attention_gate: add the Oktay et al. (2018) gate on every skip, in parallel with CBAM.
        skip_fusion: "mean" or "sum" of CBAM's and the gate's outputs on a skip.
        deep_supervision: return the auxiliary outputs in train mode.
        drop_path: stochastic-depth rate at the bottleneck (encoder only).
        cbam_reduction: CBAM channel-MLP reduction ratio.
        cbam_min_hidden: floor on CBAM's channel-MLP width.
        small_kernel: parallel small depthwise kernel of the RLK blocks (0: none).
        mlp_ratio: feed-forward width of the RLK blocks (0: none).
        norm_groups: upper bound on GroupNorm groups.
        in_channels: input channels (3: the slice and its two neighbours).

    Raises:
        ConfigError: fewer than 2 stages, a non-positive width or block count,
            ``cbam_skips`` outside ``-1..len(widths)``, or an invalid block setting.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        kernel_size: int = 13,
        blocks_per_stage: int = 2,
        cbam_skips: int = -1,
        attention_gate: bool = True,
        skip_fusion: str = "mean",
        deep_supervision: bool = True,
        drop_path: float = 0.1,
        cbam_reduction: int = 16,
        cbam_min_hidden: int = 8,
        small_kernel: int = 5,
        mlp_ratio: float = 4.0,
        norm_groups: int = 8,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        n_skips = len(widths)
        if n_skips < 2 or any(w < 1 for w in widths):
            raise ConfigError(f"model.widths must hold >= 2 positive channel counts, got {widths}")
        if blocks_per_stage < 1:
            raise ConfigError(f"model.blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if not -1 <= cbam_skips <= n_skips:
            raise ConfigError(f"model.cbam_skips must lie in -1..{n_skips} for {n_skips} stages, got {cbam_skips}")
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"model.drop_path must lie in [0, 1), got {drop_path}")
        levels = (*widths, 2 * widths[-1])  # encoder stages, then the bottleneck
        self.n_skips = n_skips
        self.divisor = 2**n_skips
        self.deep_supervision = deep_supervision
        rates = [drop_path * s / n_skips for s in range(n_skips + 1)]

        def stage_blocks(channels: int, rate: float) -> nn.Sequential:
            return nn.Sequential(*[RLKBlock(channels, kernel_size, small_kernel, mlp_ratio, rate, norm_groups)
                                   for _ in range(blocks_per_stage)])

        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.downs = nn.ModuleList(
            nn.Sequential(group_norm(levels[s - 1], norm_groups), nn.Conv2d(levels[s - 1], levels[s], 2, stride=2))
            for s in range(1, n_skips + 1)
        )
        self.encoders = nn.ModuleList(stage_blocks(levels[s], rates[s]) for s in range(n_skips + 1))
        self.skip_names = [f"skip{s + 1}" for s in range(n_skips)]
        with_cbam = _cbam_stages(n_skips, cbam_skips)
        # decoder stages from the deepest skip (stage n-1, at 1/2**(n-1)) up to the full-size one (stage 0)
        self.decoders = nn.ModuleList()
        for s in range(n_skips - 1, -1, -1):
            skip = SkipRefinement(widths[s], s in with_cbam, attention_gate, cbam_reduction, cbam_min_hidden,
                                  skip_fusion, norm_groups)
            self.decoders.append(_DecoderStage(widths[s], levels[s + 1], skip, stage_blocks(widths[s], 0.0),
                                               norm_groups))
        self.head = _Head(widths[0], norm_groups)
        # auxiliary heads on the decoder stages at 1/2, 1/4 and 1/8 (stages 1..3)
        self.aux_heads = nn.ModuleList(_Head(widths[s], norm_groups) for s in range(1, min(4, n_skips))
                                       if deep_supervision)
        self.gradcam_layer: str = f"decoders.{n_skips - 1}.blocks"

    def cbam_modules(self) -> dict[str, tuple[CBAM, int]]:
        """Skip name -> (its CBAM, its scale factor ``2**s``) for every skip that carries CBAM, deepest first.

        The attention figures hook ``cbam.spatial`` to read the spatial map of a forward pass.
        """
        out = {}
        for level, decoder in enumerate(self.decoders):
            s = self.n_skips - 1 - level
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
                f"model input must be (B, {expected}, H, W) (a slice and its neighbours), got {tuple(x.shape)}"
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
        decoded = {}  # scale exponent s -> decoder output at 1/2**s
        y = features[-1]  # the bottleneck
        for level, decoder in enumerate(self.decoders):
            s = self.n_skips - 1 - level
            y = decoded[s] = decoder(y, features[s])
        final = _crop(self.head(decoded[0]), h, w, 1)
        if not self.training:
            return final
        outputs = [final]
        if self.deep_supervision:
            outputs += [_crop(head(decoded[s]), h, w, 2**s) for s, head in enumerate(self.aux_heads, start=1)]
        return outputs


def _crop(t: torch.Tensor, h: int, w: int, factor: int) -> torch.Tensor:
    """Crop a ``(B, C, h', w')`` map at scale ``1/factor`` to ``ceil(h/factor), ceil(w/factor)``."""
    return t[..., : -(-h // factor), : -(-w // factor)]


_RLK_FIELDS = tuple(p for p in inspect.signature(RLKUNet).parameters if p in MODEL_FIELDS)

register_model("rlk_unet_cbam", RLKUNet, _RLK_FIELDS)
