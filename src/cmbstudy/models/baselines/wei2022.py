"""Wei et al. (2022), MMOC-Net: propose at half resolution, refine at full resolution, as ``wei2022_mmoc``.

What is reconstructed: the medical micro-object cascade network (Front.
Bioeng. Biotechnol. 10:937314) has two stages: a U-Net selects candidate
regions, then a full-resolution network (FRN) segments them finely; it is
trained with a hybrid loss. Here, on the study's 2.5D input ``(B, 3, H, W)``:

1. proposal: the input average-pooled to half resolution goes through a
   U-Net (the network of ``fan2022_unet``: MONAI's
   :class:`~monai.networks.nets.BasicUNet`, sized by ``widths``); its logits
   are upsampled bilinearly to ``(H, W)``;
2. refinement: the full-resolution input concatenated with the proposal
   probability (sigmoid) goes through a network that never downsamples: a
   stem convolution and MONAI residual units with dilations 1, 2, 4, 8, ...
   (one per width; the receptive field grows without losing resolution),
   then a 1 x 1 convolution to one logit channel;
3. hybrid loss (:meth:`Wei2022MMOC.training_loss`):
   ``L = Dice+Focal(refined) + 0.5 * Dice+BCE(proposal)``, MONAI's
   ``DiceFocalLoss`` and ``DiceCELoss`` with sigmoid, batch Dice.

The two stages are trained jointly, end to end (the refinement loss also
reaches the proposal U-Net through the probability map), rather than one
after the other as in the paper: every network of the study is one module
trained by one ``cmbstudy train`` run with the same schedule and data.

What is approximate: the FRN's exact layers, the widths, the way candidate
regions are passed (the whole probability map as an extra channel, not
crops around candidates), and the loss terms and their weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.blocks import Convolution, ResidualUnit

from ...errors import InputError
from ..layers import prior_bias
from ..losses import DICE_SMOOTH, make_dice_focal
from ..registry import register_model
from .fan2022 import IN_CHANNELS, Fan2022UNet, make_unet_features

__all__ = ["Wei2022MMOC", "make_wei2022_mmoc", "REFINED_WEIGHT", "PROPOSAL_WEIGHT"]

#: Weight of the refined output's Dice + Focal term in the hybrid loss.
REFINED_WEIGHT = 1.0
#: Weight of the proposal's Dice + BCE term in the hybrid loss.
PROPOSAL_WEIGHT = 0.5


class Wei2022MMOC(nn.Module):
    """Two-stage network: half-resolution U-Net proposal, full-resolution refinement.

    Input ``(B, 3, H, W)`` float, any ``H, W``. Eval mode: refined logits
    ``(B, 1, H, W)``. Train mode: ``[refined (B, 1, H, W), proposal (B, 1, H, W)]``
    (logits; the proposal upsampled from ``ceil(H/2), ceil(W/2)``).

    Args:
        widths: encoder channels of the proposal U-Net (4 or 5); the
            refinement network has ``widths[0]`` channels and one dilated
            residual unit per width.
        in_channels: input channels (3: the slice and its two neighbours).

    Raises:
        ConfigError: invalid ``widths``.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), in_channels: int = IN_CHANNELS) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.proposal = Fan2022UNet(widths, in_channels=in_channels)
        channels = make_unet_features(widths)[0]
        self.refine_stem = Convolution(2, in_channels + 1, channels, kernel_size=3)
        self.refine_units = nn.Sequential(
            *(ResidualUnit(2, channels, channels, dilation=2**k) for k in range(len(widths)))
        )
        self.refine_head = nn.Conv2d(channels, 1, 1)
        nn.init.constant_(self.refine_head.bias, prior_bias())
        self.refined_loss = make_dice_focal()
        self.proposal_loss = DiceCELoss(sigmoid=True, batch=True, smooth_nr=DICE_SMOOTH, smooth_dr=DICE_SMOOTH)

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, 3, H, W)`` -> ``(refined, proposal)`` logits, both ``(B, 1, H, W)``.

        Raises:
            InputError: ``x`` is not 4D with ``in_channels`` channels.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f"wei2022_mmoc expects (B, {self.in_channels}, H, W) slices, got {tuple(x.shape)}"
            )
        size = x.shape[-2:]
        half = F.avg_pool2d(x, 2, ceil_mode=True)
        proposal = F.interpolate(self.proposal(half), size=size, mode="bilinear", align_corners=False)
        features = self.refine_units(self.refine_stem(torch.cat([x, torch.sigmoid(proposal)], dim=1)))
        return self.refine_head(features), proposal

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Eval: refined logits ``(B, 1, H, W)``; train: ``[refined, proposal]``.

        Raises:
            InputError: as :meth:`forward_both`.
        """
        refined, proposal = self.forward_both(x)
        return [refined, proposal] if self.training else refined

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Hybrid loss of one batch: ``1.0 * DiceFocal(refined) + 0.5 * DiceCE(proposal)``.

        Args:
            x: input ``(B, 3, H, W)``.
            target: mask ``(B, 1, H, W)`` in {0, 1}.

        Returns:
            Scalar tensor.

        Raises:
            InputError: ``target`` is not ``(B, 1, H, W)`` matching ``x``.
        """
        if target.ndim != 4 or target.shape[1] != 1 or target.shape[-2:] != x.shape[-2:]:
            raise InputError(
                f"loss target must be (B, 1, H, W) matching the input {tuple(x.shape)}, got {tuple(target.shape)}"
            )
        refined, proposal = self.forward_both(x)
        target = target.float()
        return REFINED_WEIGHT * self.refined_loss(refined.float(), target) + PROPOSAL_WEIGHT * self.proposal_loss(
            proposal.float(), target
        )


def make_wei2022_mmoc(widths: tuple[int, ...] = (16, 32, 64, 128)) -> nn.Module:
    """Registry builder of ``wei2022_mmoc``.

    Raises:
        ConfigError: invalid ``widths``.
    """
    return Wei2022MMOC(widths=tuple(widths))


register_model("wei2022_mmoc", make_wei2022_mmoc, ("widths",))
