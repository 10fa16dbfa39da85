"""nnU-Net-style 2D network, MONAI :class:`~monai.networks.nets.DynUNet`, as ``nnunet_dynunet``.

What is reconstructed: the network nnU-Net (Isensee et al. 2021) configures
for 2D data: per stage two 3 x 3 convolutions with instance norm and leaky
ReLU (slope 0.01; MONAI's defaults), strided-convolution downsampling,
transposed-convolution upsampling, features doubling per stage up to a cap of
512, and deep supervision on the decoder outputs. Input: the study's 2.5D
slice ``(B, 3, H, W)``.

What is approximate (nnU-Net plans these from the data; here they follow the
profile so every network is sized alike):

- stages: the profile's ``widths`` plus one deeper stage of twice the last
  width (capped at 512), as nnU-Net goes deeper until the feature map is
  about 4 x 4 (a 64-voxel crop: 64 -> 4 after 4 halvings);
- deep supervision: the final output and the 3 decoder levels above the
  bottleneck (``deep_supr_num=3``), so the 4 outputs match the profile's 4
  ``train.deep_supervision_weights``; MONAI upsamples the auxiliary logits to
  the final size, where nnU-Net downsamples the targets instead;
- loss: the study's Dice + Focal (the profile loss), not nnU-Net's Dice +
  cross-entropy; no nnU-Net augmentation, patch planning or post-processing.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.nets import DynUNet

from ...errors import ConfigError
from ..layers import pad_to_multiple, prior_bias
from ..registry import register_model
from .fan2022 import IN_CHANNELS

__all__ = ["NNUNetDynUNet", "make_nnunet_dynunet", "NNUNET_MAX_FEATURES", "NNUNET_KERNEL", "DEEP_SUPR_NUM"]

#: Side of every convolution of a stage, as nnU-Net plans a 2D network.
NNUNET_KERNEL = 3

#: nnU-Net's cap on the features of a 2D stage.
NNUNET_MAX_FEATURES = 512
#: Auxiliary outputs of deep supervision (besides the final one).
DEEP_SUPR_NUM = 3


class NNUNetDynUNet(nn.Module):
    """DynUNet wrapper with the study's output convention.

    Input ``(B, 3, H, W)`` float, any ``H, W``: zero-padded at the bottom and
    right to a multiple of ``2 ** len(widths)`` (16 for 4 widths; zero is the
    background of the z-scored slices) and every output cropped back.
    Eval mode: logits ``(B, 1, H, W)``. Train mode with deep supervision: a
    list ``[final, aux_1, aux_2, aux_3]`` of logits, each ``(B, 1, H, W)``
    (aux_k from the decoder level at ``1 / 2**k``, upsampled by MONAI);
    without deep supervision: one tensor ``(B, 1, H, W)``.

    Args:
        widths: channels of the first stages, shallow to deep; one more stage
            of ``min(2 * widths[-1], 512)`` channels is added.
        deep_supervision: return the auxiliary outputs in train mode.
        in_channels: input channels (3: the slice and its two neighbours).

    Raises:
        ConfigError: fewer than 3 widths (deep supervision needs 4 decoder
            levels) or a width below 1.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        deep_supervision: bool = True,
        in_channels: int = IN_CHANNELS,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < DEEP_SUPR_NUM or min(widths) < 1:
            raise ConfigError(
                f"model.widths must be at least {DEEP_SUPR_NUM} positive channel counts for "
                f"nnunet_dynunet, got {widths}"
            )
        filters = (*widths, min(2 * widths[-1], NNUNET_MAX_FEATURES))
        n_stages = len(filters)
        self.divisor = 2 ** (n_stages - 1)
        self.deep_supervision = bool(deep_supervision)
        self.net = DynUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=1,
            kernel_size=[NNUNET_KERNEL] * n_stages,
            strides=[1] + [2] * (n_stages - 1),
            upsample_kernel_size=[2] * (n_stages - 1),
            filters=filters,
            deep_supervision=self.deep_supervision,
            deep_supr_num=DEEP_SUPR_NUM,
        )
        heads = [self.net.output_block, *(self.net.deep_supervision_heads if self.deep_supervision else [])]
        for head in heads:
            nn.init.constant_(head.conv.conv.bias, prior_bias())

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``x (B, 3, H, W)`` -> logits ``(B, 1, H, W)``, or in train mode a list of 4 of them."""
        height, width = x.shape[-2:]
        out = self.net(pad_to_multiple(x, self.divisor))
        if out.ndim == 5:  # train mode with deep supervision: (B, 1 + k, 1, H, W)
            return [o[..., :height, :width] for o in torch.unbind(out, dim=1)]
        return out[..., :height, :width]


def make_nnunet_dynunet(widths: tuple[int, ...] = (16, 32, 64, 128), deep_supervision: bool = True) -> nn.Module:
    """Registry builder of ``nnunet_dynunet``.

    Raises:
        ConfigError: invalid ``widths``.
    """
    return NNUNetDynUNet(widths=tuple(widths), deep_supervision=deep_supervision)


register_model("nnunet_dynunet", make_nnunet_dynunet, ("widths", "deep_supervision"))
