"""Small pieces every network of the study shares: normalisation, padding, output-bias prior, input kind.

Written here once so that RLK-UNet and the baselines agree on them:

- :func:`group_norm`: GroupNorm with the largest group count that divides the channels;
- :func:`pad_to_multiple`: zero-pad a 2D input at the bottom and right (zero is the
  background of the z-scored slices), so every downsampling halves exactly;
- :func:`prior_bias`: the output bias whose sigmoid is the foreground prior
  (Lin et al. 2017, RetinaNet), so training starts from "almost no CMB";
- :func:`is_volumetric` / :func:`check_spacing`: the input kind of a network
  (2.5D slices or 3D patches) and the isotropic spacing of volumetric networks.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = [
    "FOREGROUND_PRIOR",
    "group_norm",
    "prior_bias",
    "pad_to_multiple",
    "is_volumetric",
    "check_spacing",
    "check_patch_size",
]

#: Prior foreground probability used to initialise the output biases
#: (Lin et al. 2017, RetinaNet): CMB voxels are far below 1 % of a slice.
FOREGROUND_PRIOR = 0.01


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


def prior_bias(prior: float = FOREGROUND_PRIOR) -> float:
    """Output bias whose sigmoid is ``prior``: ``-log((1 - prior) / prior)``."""
    return -math.log((1 - prior) / prior)


def pad_to_multiple(x: torch.Tensor, divisor: int, minimum: int = 0) -> torch.Tensor:
    """Zero-pad ``x (B, C, H, W)`` at the bottom and right to a multiple of ``divisor``, at least ``minimum``.

    Zero is the background of the z-scored slices; crop the output back with
    ``[..., :H, :W]``. An input that needs no padding is returned as it is.
    """
    height, width = x.shape[-2:]
    target_h = max(-(-height // divisor) * divisor, minimum)
    target_w = max(-(-width // divisor) * divisor, minimum)
    if (target_h, target_w) == (height, width):
        return x
    return F.pad(x, (0, target_w - width, 0, target_h - height))


def is_volumetric(model: torch.nn.Module) -> bool:
    """True when ``model`` declares ``input_kind = "3d"`` (2.5D, ``"2.5d"``, is the default)."""
    return getattr(model, "input_kind", "2.5d") == "3d"


def check_spacing(spacing_mm: float) -> float:
    """``model.spacing_mm`` of a volumetric network as a float (0 keeps the preprocessed grid).

    Raises:
        ConfigError: a negative spacing.
    """
    if spacing_mm < 0:
        raise ConfigError(f"model.spacing_mm={spacing_mm} must be >= 0 (0 keeps the preprocessed grid)")
    return float(spacing_mm)


def check_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    """``train.patch_size`` of a volumetric network as three ints (slices, rows, columns).

    Raises:
        ConfigError: not three sizes of at least 1.
    """
    patch = tuple(int(v) for v in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise ConfigError(f"train.patch_size={tuple(patch_size)} must be three sizes >= 1 (slices, rows, columns)")
    return patch  # type: ignore[return-value]
