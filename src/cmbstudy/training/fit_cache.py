"""A fitted model kept under the hash of what it was fitted on, so that runs fitting the same thing share it.

The study trains several networks on the same training subjects (fold 0 of
RLK-UNet + CBAM, of the network without CBAM, and of two published networks).
Their second looks fit the same image model on the same blobs of those subjects,
with no network involved (:mod:`cmbstudy.training.second_look`); about a minute
of CPU each for the patch CNN. :func:`load_or_fit` fits it once, writes it under
a folder of the preprocessing cache, and the other runs read it.

The key (:func:`fit_key`) hashes the arrays fitted on, a JSON description of
the settings, the package's source (any edit refits), the versions of the
libraries that compute it and torch's thread count, since a fit on another
thread count may differ in its last bits: a run that reads the cache gets
exactly what it would have fitted itself. A file lock (the filelock library)
makes a second run with the same key wait for the first one's fit instead of
fitting it beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import joblib
import numpy as np
import torch
from filelock import FileLock

__all__ = ["FIT_CACHE_DIR", "fit_key", "load_or_fit"]

#: The folder of fitted models under the preprocessing cache (:func:`cmbstudy.preprocessing.cache.default_cache_dir`).
FIT_CACHE_DIR = "fitted"

T = TypeVar("T")


@lru_cache(maxsize=1)
def _environment() -> str:
    import scipy
    import sklearn

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.yaml")]):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    versions = {"numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__,
                "torch": torch.__version__}
    return json.dumps({"source": digest.hexdigest(), **versions}, sort_keys=True)


def fit_key(arrays: Iterable[np.ndarray | None], settings: Any) -> str:
    """sha256 of ``arrays`` (shape, dtype and bytes; None counts as its own value), of ``settings`` as JSON, of
    the package's source and library versions, and of torch's thread count."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(_environment().encode())
    digest.update(str(torch.get_num_threads()).encode())
    return digest.hexdigest()


def load_or_fit(folder: Path | None, key: str, fit: Callable[[], T]) -> T:
    """``fit()``, or what an earlier call with ``key`` wrote to ``folder`` (None: no cache, always fitted).

    The file is written whole (to a temporary name, then renamed); one that cannot be read is fitted again and
    replaced.
    """
    if folder is None:
        return fit()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.joblib"
    with FileLock(str(path.with_suffix(".lock"))):
        if path.is_file():
            try:
                return joblib.load(path)
            except Exception:  # noqa: BLE001 - a truncated or foreign file is refitted, as if absent
                pass
        value = fit()
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        joblib.dump(value, partial)
        os.replace(partial, path)
        return value
