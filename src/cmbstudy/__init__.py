"""cmbstudy: an executable study of cerebral microbleed detection with RLK-UNet + CBAM."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

__all__ = ["__version__", "available_cores", "collect_environment", "print_environment"]

try:
    __version__ = metadata.version("cmbstudy")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"


def collect_environment() -> dict[str, str]:
    """Versions of Python, the key libraries and the accelerator, for provenance files."""
    env: dict[str, str] = {
        "cmbstudy": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
    }
    for package in ("numpy", "scipy", "nibabel", "SimpleITK", "monai", "torch"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = "not installed"
    try:
        import torch

        env["cuda_available"] = str(torch.cuda.is_available())
        env["cuda"] = str(torch.version.cuda)
        env["cudnn"] = str(torch.backends.cudnn.version()) if torch.cuda.is_available() else "none"
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        env["torch_threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    return env


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def print_environment() -> None:
    """Print :func:`collect_environment` as aligned ``key: value`` lines."""
    env = collect_environment()
    width = max(len(key) for key in env)
    for key, value in env.items():
        print(f"{key:<{width}}  {value}")
