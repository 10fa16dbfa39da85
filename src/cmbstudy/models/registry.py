"""Networks by name: ``get_model("rlk_unet_cbam", **cfg)``, as timm's registry.

Each network module registers its builder on import with :func:`register_model`;
the registry imports the study's own networks (:data:`BUILT_IN`) the first time it is asked for one, as
:mod:`cmbstudy.models` imports its modules only when they are used. Keyword arguments are fields of
:class:`cmbstudy.config.ModelConfig` other than ``name``; a builder declares which
it takes, so a profile's settings for other networks (e.g. ``kernel_size``) do
not reach it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Sequence

import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError

__all__ = ["BUILT_IN", "MODEL_FIELDS", "register_model", "list_models", "model_fields", "get_model", "model_from_config"]

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {}
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "name")

#: The modules of the study's networks, each registering its own on import.
BUILT_IN = ("cmbstudy.models.rlk_unet", "cmbstudy.models.baselines.dou2016", "cmbstudy.models.baselines.dynunet",
            "cmbstudy.models.baselines.fan2022", "cmbstudy.models.baselines.tsuchida2024",
            "cmbstudy.models.baselines.wei2022")


def _register_built_in() -> None:
    """Import :data:`BUILT_IN` (each import registers its networks once; later calls cost a lookup)."""
    for module in BUILT_IN:
        importlib.import_module(module)


def register_model(name: str, builder: Callable[..., nn.Module], fields: Sequence[str]) -> None:
    """Register ``builder(**cfg) -> nn.Module`` under ``name``.

    Args:
        fields: the :class:`~cmbstudy.config.ModelConfig` fields the builder takes;
            :func:`model_from_config` passes only these, so a profile's settings
            for other networks (e.g. ``kernel_size``) do not reach it.

    Raises:
        ConfigError: ``name`` is already registered, or ``fields`` names no ModelConfig field.
    """
    if name in _REGISTRY:
        raise ConfigError(f"model {name!r} is already registered")
    unknown = sorted(set(fields) - set(MODEL_FIELDS))
    if unknown:
        raise ConfigError(f"model {name!r}: {unknown} are not ModelConfig fields")
    _REGISTRY[name] = (builder, tuple(fields))


def list_models() -> list[str]:
    """Registered model names, sorted."""
    _register_built_in()
    return sorted(_REGISTRY)


def model_fields(name: str) -> tuple[str, ...]:
    """The ModelConfig fields the registered network ``name`` takes.

    Raises:
        ConfigError: unknown model name.
    """
    _check_name(name)
    return _REGISTRY[name][1]


def _check_name(name: str) -> None:
    _register_built_in()
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}; valid names are {', '.join(list_models())} (model.name)"
        )


def get_model(name: str, **cfg: Any) -> nn.Module:
    """Build the registered network ``name`` with settings ``cfg``.

    Raises:
        ConfigError: unknown model name (the message lists the valid names) or
            an unknown or invalid setting.
    """
    _check_name(name)
    builder, fields = _REGISTRY[name]
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown setting(s) {unknown}; valid settings are {sorted(fields)}"
        )
    return builder(**cfg)


def model_from_config(cfg: ModelConfig) -> nn.Module:
    """Build the network a profile's ``model:`` section describes.

    Raises:
        ConfigError: as :func:`get_model`.
    """
    values = dataclasses.asdict(cfg)
    name = values.pop("name")
    _check_name(name)
    return get_model(name, **{key: values[key] for key in _REGISTRY[name][1]})
