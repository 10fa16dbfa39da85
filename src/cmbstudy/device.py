"""The torch device a command runs on, and the mixed precision used there.

``--device auto`` picks CUDA when it is available, else the CPU. On CUDA the
networks run under bf16 autocast; on the CPU in plain fp32.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "autocast"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for but not available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {device!r} is not a device: use auto, cpu or cuda") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    return resolved


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; plain fp32 (a no-op context) elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
