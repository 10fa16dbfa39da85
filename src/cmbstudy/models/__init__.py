"""Networks by name: ``get_model("rlk_unet_cbam", **cfg)``, as timm's registry.

Registered:

- ``rlk_unet_cbam``: RLK-UNet with CBAM on the skips (Cho et al. 2025), see
  :class:`~cmbstudy.models.rlk_unet.RLKUNet`.
- ``rlk_unet``: the same class with CBAM off (``cbam_skips`` is ignored and
  set to 0): the "without CBAM" arm of the paper's Table 7.

Keyword arguments are the fields of :class:`cmbstudy.config.ModelConfig`
other than ``name``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError
from .rlk_unet import RLKUNet

__all__ = ["get_model", "model_from_config", "list_models", "register_model", "RLKUNet"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, builder: Callable[..., nn.Module]) -> None:
    """Register ``builder(**cfg) -> nn.Module`` under ``name``.

    Raises:
        ConfigError: ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise ConfigError(f"model {name!r} is already registered")
    _REGISTRY[name] = builder


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def _check_kwargs(name: str, target: Callable[..., Any], cfg: dict[str, Any]) -> None:
    valid = set(inspect.signature(target).parameters)
    unknown = sorted(set(cfg) - valid)
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown setting(s) {unknown}; valid settings are {sorted(valid)}"
        )


def _build_rlk_unet_cbam(**cfg: Any) -> nn.Module:
    _check_kwargs("rlk_unet_cbam", RLKUNet, cfg)
    return RLKUNet(**cfg)


def _build_rlk_unet(**cfg: Any) -> nn.Module:
    _check_kwargs("rlk_unet", RLKUNet, cfg)
    return RLKUNet(**{**cfg, "cbam_skips": 0})


register_model("rlk_unet_cbam", _build_rlk_unet_cbam)
register_model("rlk_unet", _build_rlk_unet)


def get_model(name: str, **cfg: Any) -> nn.Module:
    """Build the registered network ``name`` with settings ``cfg``.

    Raises:
        ConfigError: unknown model name (the message lists the valid names) or
            an unknown or invalid setting.
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}; valid names are {', '.join(list_models())} (model.name)"
        )
    return _REGISTRY[name](**cfg)


def model_from_config(cfg: ModelConfig) -> nn.Module:
    """Build the network a profile's ``model:`` section describes.

    Raises:
        ConfigError: as :func:`get_model`.
    """
    values = dataclasses.asdict(cfg)
    name = values.pop("name")
    return get_model(name, **values)
