"""Writing results so that nothing is lost or half-written: atomic files and folders, JSON, NIfTI.

Every file is created as a temporary file in its folder and renamed into place;
an output folder is built as a temporary folder that replaces the target only
when the work succeeded. Temporary files are created private (0600/0700), so
each is given the mode a plain ``open``/``mkdir`` would have under the umask
(``0644``/``0755`` under the usual ``022``) before it is renamed.
Re-exported by :mod:`cmbstudy.data.io`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import nibabel as nib
import numpy as np

from ..errors import InputError, OutputError

__all__ = [
    "write_atomically",
    "write_text_atomically",
    "save_nifti",
    "atomic_output_dir",
    "check_output_dir",
    "to_json_safe",
    "read_json",
    "write_json",
]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _chmod_to_umask(path: str | Path, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (temporary files are created 0600/0700)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())



def write_atomically(path: str | Path, write: Callable[[str], object], suffix: str = "") -> Path:
    """Create ``path`` by ``write(tmp)`` on a temporary file in the same folder, then rename.

    A reader never sees a half-written file, and an exception leaves ``path`` as it
    was. ``suffix`` keeps the extension that some writers infer the format from
    (``.nii.gz`` for nibabel, ``.npz`` for numpy).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        _chmod_to_umask(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_atomically`)."""
    return write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    dtype: type | np.dtype = np.float32,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Write ``array`` as NIfTI atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(array).astype(dtype), affine, header)
    img.set_data_dtype(dtype)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    return write_atomically(path, lambda tmp: nib.save(img, tmp), suffix=suffix)


def check_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check that results may be written to ``path`` (a folder), before any work starts.

    Raises:
        OutputError: ``path`` is a file, is a non-empty folder and ``overwrite`` is false,
            or its parent cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {path} is a file, not a folder: choose another --out")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputError(
            f"output folder {path} already holds results: choose another --out or pass --overwrite"
        )
    parent = path.parent if not path.exists() else path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"output folder {path} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {path} cannot be written (no permission on {parent})")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` only if the block succeeds.

    On an exception the temporary folder is removed and ``path`` is left as it
    was, so a failed or interrupted run leaves no partial output.

    Raises:
        OutputError: as :func:`check_output_dir`.
    """
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    _chmod_to_umask(tmp, folder=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def to_json_safe(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf -> None, tuples and arrays -> lists, numpy scalars -> Python, paths -> str."""
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [to_json_safe(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def read_json(path: str | Path, advice: str = "restore or remove it", missing_ok: bool = False) -> dict[str, Any]:
    """The JSON object in ``path`` (a file that holds another JSON value reads as ``{}``; so does a
    missing file when ``missing_ok``).

    Raises:
        InputError: the file is missing (unless ``missing_ok``), unreadable or not JSON; the message
            ends with ``advice``.
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return {}
    if not path.is_file():
        raise InputError(f"{path} does not exist: {advice}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}): {advice}") from exc
    return data if isinstance(data, dict) else {}


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically, NaN as null (:func:`to_json_safe`).

    Raises:
        OutputError: ``path`` is a folder or cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"JSON output {path} is a folder: give a file name such as metrics.json")
    text = json.dumps(to_json_safe(data), indent=2, allow_nan=False, default=str) + "\n"
    try:
        return write_text_atomically(path, text)
    except OSError as exc:
        raise OutputError(f"JSON output {path} cannot be written ({exc}): choose another location") from exc
