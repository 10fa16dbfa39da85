"""Fan et al. (2022): a 2D U-Net on multi-slice input, reconstructed as ``fan2022_unet``.

What is reconstructed: Cho et al. (2026) cite Fan et al. (Front. Med. 9:807443)
for "multi-slice U-Net inputs": a U-Net that segments one axial slice with
adjacent slices stacked as input channels. Here that is MONAI's
:class:`~monai.networks.nets.BasicUNet` (the classic encoder-decoder of
Ronneberger et al. 2015: two 3 x 3 convolutions per level, 2 x 2 max-pooling,
transposed-convolution upsampling, concatenated skips) on the study's 2.5D
input ``(B, 3, H, W)``: the slice and its two neighbours.

What is approximate:

- the number of input slices: the study's 2.5D input has 3; whether Fan et
  al. stacked 3 or 5 slices is not known here (their abstract speaks of a
  3D CNN on SWI), so 3 is an assumption that keeps every 2.5D network on the
  same input;
- depth and widths: BasicUNet has 5 levels; the profile's 4 ``widths`` give
  the first 4 and the 5th doubles the last (U-Net's doubling per level), so
  profiles size this network as the others;
- normalisation and activation are MONAI's defaults (instance norm, leaky
  ReLU), not the 2015 U-Net's (none, ReLU);
- one foreground logit channel, trained with the study's loss (the profile's
  Dice + Focal), not the authors' loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.nets import BasicUNet

from ...errors import ConfigError
from ..layers import pad_to_multiple, prior_bias
from ..registry import register_model

__all__ = ["Fan2022UNet", "make_fan2022_unet", "make_unet_features"]

#: Channels of the 2.5D input: an axial slice and its two neighbours.
IN_CHANNELS = 3
#: The input is zero-padded to a multiple of this (BasicUNet halves 4 times) ...
UNET_DIVISOR = 16
#: ... and to at least this size, so that the bottleneck is at least 2 x 2
#: (instance norm needs more than one element per channel).
UNET_MIN_SIZE = 32


def make_unet_features(widths: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """BasicUNet's 6 feature counts from 4 or 5 encoder ``widths``.

    Returns ``(w1, w2, w3, w4, w5, w1)``: 4 widths get ``w5 = 2 * w4``; the
    last entry is the width of the final decoder level.

    Raises:
        ConfigError: not 4 or 5 widths, or a width below 1.
    """
    widths = tuple(int(w) for w in widths)
    if len(widths) not in (4, 5) or min(widths) < 1:
        raise ConfigError(
            f"model.widths must be 4 or 5 positive channel counts for a BasicUNet, got {widths}"
        )
    levels = widths if len(widths) == 5 else (*widths, 2 * widths[-1])
    return (*levels, widths[0])


class Fan2022UNet(nn.Module):
    """Multi-slice 2D U-Net: ``(B, 3, H, W) -> (B, 1, H, W)`` logits, any ``H, W``.

    The input is zero-padded at the bottom and right to a multiple of 16, at
    least 32 per side (zero is the background of the z-scored slices), and the
    output cropped back. The same single tensor in train and eval modes (no
    deep supervision).

    Args:
        widths: channels of the encoder levels, shallow to deep (4 or 5).
        in_channels: input slices stacked as channels.

    Raises:
        ConfigError: invalid ``widths`` (see :func:`make_unet_features`).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), in_channels: int = IN_CHANNELS) -> None:
        super().__init__()
        self.unet = BasicUNet(
            spatial_dims=2, in_channels=in_channels, out_channels=1, features=make_unet_features(widths)
        )
        nn.init.constant_(self.unet.final_conv.bias, prior_bias())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, 3, H, W)`` float -> logits ``(B, 1, H, W)``."""
        height, width = x.shape[-2:]
        return self.unet(pad_to_multiple(x, UNET_DIVISOR, UNET_MIN_SIZE))[..., :height, :width]


def make_fan2022_unet(widths: tuple[int, ...] = (16, 32, 64, 128)) -> nn.Module:
    """Registry builder of ``fan2022_unet``.

    Raises:
        ConfigError: invalid ``widths``.
    """
    return Fan2022UNet(widths=tuple(widths))


register_model("fan2022_unet", make_fan2022_unet, ("widths",))
