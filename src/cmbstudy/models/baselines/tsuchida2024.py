"""SHIVA-CMB (Tsuchida et al. 2024): a 3D U-Net on the whole volume at 1 mm isotropic voxels.

Reconstructed from the publication: a volumetric U-Net that segments CMBs on
SWI / T2*-GRE volumes resampled to 1 mm isotropic voxels, one output channel,
CMBs as the connected components of the thresholded map. Here the network is
MONAI's ``UNet(spatial_dims=3)`` with one level per entry of ``model.widths``
(channels), stride-2 downsampling between levels, two residual units per level,
instance normalisation; it is trained on lesion-centred 3D patches
(``train.patch_size``, :class:`cmbstudy.training.sampling_3d.PatchDataset`) of the study's
synthetic cohort with the study's Dice + Focal loss, and applied to the whole
volume by sliding windows (:func:`cmbstudy.inference.sliding_window.predict_volume_3d`).

Approximate: the depth and widths (the published network's are not used: the
study's ``model.widths`` set them), the loss, the patch size and the training
schedule (the study's), a single model (the published tool is an ensemble
trained on several cohorts; no published weights are used). The isotropic
spacing is ``model.spacing_mm`` (1 mm in the ``tsuchida2024`` variant, as
published); the CPU ``quick`` profile overrides it to a coarser spacing, since
1 mm volumes are several times larger than the preprocessed grid.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import UNet

from ...errors import ConfigError, InputError
from ..layers import check_spacing, prior_bias
from ..losses import make_dice_focal
from ..registry import register_model

__all__ = ["ShivaUNet", "build_tsuchida2024"]


class ShivaUNet(nn.Module):
    """3D U-Net: ``(B, 1, D, H, W)`` -> ``(B, 1, D, H, W)`` logits (train and eval mode).

    ``D, H, W`` must be multiples of ``2 ** (len(widths) - 1)`` (the training
    patch and the sliding window are ``train.patch_size``).

    Raises:
        ConfigError: fewer than two widths or a width below 1.
    """

    input_kind = "3d"

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), spacing_mm: float = 1.0) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ConfigError(f"model.widths={widths}: the 3D U-Net needs at least two widths >= 1")
        self.spacing_mm = check_spacing(spacing_mm)
        self.multiple = 2 ** (len(widths) - 1)
        self.net = UNet(
            spatial_dims=3, in_channels=1, out_channels=1, channels=widths,
            strides=(2,) * (len(widths) - 1), num_res_units=2, norm="instance",
        )
        last = [m for m in self.net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))][-1]
        if last.bias is not None:
            nn.init.constant_(last.bias, prior_bias())
        self.loss = make_dice_focal()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` ``(B, 1, D, H, W)``.

        Raises:
            InputError: ``x`` is not 5D with one channel, or a spatial size is not a multiple of the downsampling.
        """
        if x.ndim != 5 or x.shape[1] != 1 or any(s % self.multiple for s in x.shape[2:]):
            raise InputError(
                f"the 3D U-Net takes (B, 1, D, H, W) with D, H, W multiples of {self.multiple}, got "
                f"{tuple(x.shape)}; set train.patch_size to multiples of {self.multiple}"
            )
        return self.net(x)

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Dice + Focal loss (:func:`cmbstudy.models.losses.make_dice_focal`) of ``x`` against ``target`` (B, 1, D, H, W)."""
        return self.loss(self.forward(x).float(), target.float())


def build_tsuchida2024(widths: Sequence[int] = (16, 32, 64, 128), spacing_mm: float = 1.0) -> ShivaUNet:
    """The registry builder of ``tsuchida2024_shiva`` (takes ``model.widths`` and ``model.spacing_mm``)."""
    return ShivaUNet(widths, spacing_mm)


register_model("tsuchida2024_shiva", build_tsuchida2024, ("widths", "spacing_mm"))
