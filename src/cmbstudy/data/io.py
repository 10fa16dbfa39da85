"""NIfTI input/output with validation, canonical orientation and atomic writes.

Every volume that enters cmbstudy goes through :func:`load_image` or
:func:`load_mask`, which turn the ways a file can be wrong (missing, not a
NIfTI, a truncated gzip, 4D, 2D, NaN/Inf, all zero, a mask that is not 0/1, a
mask on another grid) into one :class:`~cmbstudy.errors.InputError` naming the
file and what to do. Everything cmbstudy writes goes through
:func:`save_nifti` or :func:`atomic_output_dir`, so an interrupted run leaves
no partial file and a rerun never overwrites results unless asked to.

Orientation: arrays are processed in nibabel's closest canonical orientation
(RAS+, axis 2 = axial, inferior to superior); :func:`to_canonical` and
:func:`from_canonical` convert exactly (axis flips and permutations only, no
resampling), so outputs land on the input grid with the input affine.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    io_orientation,
    ornt_transform,
)

from ..errors import InputError, OutputError

__all__ = [
    "NIFTI_SUFFIXES",
    "load_image",
    "load_mask",
    "check_same_grid",
    "voxel_sizes",
    "to_canonical",
    "from_canonical",
    "write_atomically",
    "write_text_atomically",
    "save_nifti",
    "atomic_output_dir",
    "check_output_dir",
    "to_json_safe",
    "read_json",
    "write_json",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_AFFINE_ATOL_MM = 1e-3


def _is_nifti_name(path: Path) -> bool:
    return any(path.name.endswith(suffix) for suffix in NIFTI_SUFFIXES)


def _check_gzip(path: Path, what: str) -> None:
    """Decompress the whole stream once so that a corrupt block or CRC is caught here.

    nibabel reads only the bytes it needs and never reaches the gzip trailer, so
    a damaged file can otherwise load as garbage voxels.
    """
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic != b"\x1f\x8b":
        raise InputError(
            f"{what} {path} is named .nii.gz but is not gzip-compressed: "
            "check that it is a NIfTI file (rename it to .nii if it is uncompressed)"
        )
    with gzip.open(path, "rb") as stream:
        while stream.read(1 << 24):
            pass


def _read(path: Path, what: str) -> nib.Nifti1Image:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist: check the path")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file: give a .nii or .nii.gz file")
    if not _is_nifti_name(path):
        raise InputError(f"{what} {path} is not a NIfTI file (.nii or .nii.gz): convert it first")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes): copy or export it again")
    try:
        if path.name.endswith(".gz"):
            _check_gzip(path, what)
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{what} {path} is not a NIfTI-1/2 image: convert it first")
        data = np.asanyarray(img.dataobj)
    except InputError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(
            f"{what} {path} is truncated or its gzip stream is corrupt ({exc}): copy or export it again"
        ) from exc
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise InputError(f"{what} {path} cannot be read as NIfTI ({exc}): check the file") from exc
    return nib.Nifti1Image(data, img.affine, img.header) if isinstance(img, nib.Nifti2Image) else img


def _squeeze_to_3d(img: nib.Nifti1Image, path: Path, what: str) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise InputError(
            f"{what} {path} is {data.ndim}D with shape {data.shape}; a 3D volume is needed: "
            "extract one volume (e.g. the first echo) first"
        )
    if data.ndim < 3 or min(data.shape) < 1:
        raise InputError(
            f"{what} {path} has shape {data.shape}; a 3D volume is needed, not a 2D image"
        )
    return data


def load_image(path: str | Path, what: str = "image", allow_zero: bool = False) -> nib.Nifti1Image:
    """Read and validate a 3D NIfTI image; returns it with float32 data.

    Args:
        path: a .nii or .nii.gz file.
        what: how the file is named in error messages ("image", "prediction", ...).
        allow_zero: accept an all-zero volume (e.g. a probability map with no detection).

    Raises:
        InputError: missing, not NIfTI, corrupt gzip, not 3D, NaN/Inf voxels, or all zero.
    """
    path = Path(path)
    img = _read(path, what)
    data = _squeeze_to_3d(img, path, what).astype(np.float32)
    n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise InputError(
            f"{what} {path} has {n_bad} NaN/Inf voxels: replace them (e.g. with 0) before use"
        )
    if not allow_zero and not np.any(data):
        raise InputError(f"{what} {path} is all zero: check that the right file was exported")
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(np.float32)
    return out


def load_mask(
    path: str | Path, reference: nib.Nifti1Image | None = None, what: str = "mask"
) -> nib.Nifti1Image:
    """Read a binary (0/1) 3D mask, optionally checking it lies on ``reference``'s grid.

    Raises:
        InputError: unreadable, not 3D, non-binary values, or a grid other than the reference's.
    """
    path = Path(path)
    img = _read(path, what)
    data = _squeeze_to_3d(img, path, what)
    if not np.all(np.isfinite(data)):
        raise InputError(f"{what} {path} has NaN/Inf voxels: a mask must hold only 0 and 1")
    values = np.unique(data)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if values.size > 8 else "")
        raise InputError(
            f"{what} {path} holds values {{{shown}}}; a mask must hold only 0 and 1: "
            "binarise it (mask > 0) or export a binary CMB mask"
        )
    out = nib.Nifti1Image(data.astype(np.uint8), img.affine, img.header)
    out.set_data_dtype(np.uint8)
    if reference is not None:
        check_same_grid(reference, out, what_a="image", what_b=f"{what} {path}")
    return out


def check_same_grid(
    a: nib.Nifti1Image, b: nib.Nifti1Image, what_a: str = "image", what_b: str = "mask"
) -> None:
    """Raise unless ``a`` and ``b`` have the same 3D shape and affine (within 1e-3 mm)."""
    if a.shape[:3] != b.shape[:3]:
        raise InputError(
            f"{what_b} has shape {b.shape[:3]} but {what_a} has {a.shape[:3]}: "
            "they must be on the same voxel grid (resample the mask onto the image)"
        )
    if not np.allclose(a.affine, b.affine, atol=_AFFINE_ATOL_MM):
        raise InputError(
            f"{what_b} has a different affine than {what_a} (max difference "
            f"{np.abs(a.affine - b.affine).max():.3g} mm): they must be on the same voxel grid"
        )


def voxel_sizes(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel edge lengths in mm along the array axes (from the affine, so oblique-safe)."""
    return tuple(float(v) for v in np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0)))


def to_canonical(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The image in the closest canonical orientation (RAS+), by flips/permutations only."""
    return nib.as_closest_canonical(img)


def from_canonical(array: np.ndarray, original: nib.Nifti1Image) -> np.ndarray:
    """Map an array computed on ``to_canonical(original)``'s grid back to ``original``'s grid.

    ``array`` has the canonical spatial shape (extra trailing axes are carried along).
    """
    transform = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(original.affine))
    back = apply_orientation(array, transform)
    if back.shape[:3] != original.shape[:3]:
        raise ValueError(
            f"array of shape {array.shape} does not map onto the original grid {original.shape}"
        )
    return np.ascontiguousarray(back)


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
