"""NIfTI input/output with validation, canonical orientation and atomic writes.

Every volume that enters cmbstudy goes through :func:`load_image` or
:func:`load_mask`, which turn the ways a file can be wrong (missing, not a
NIfTI, a truncated gzip, 4D, 2D, NaN/Inf, all zero, a mask that is not 0/1, a
mask on another grid) into one :class:`~cmbstudy.errors.InputError` naming the
file and what to do. Everything cmbstudy writes goes through
:func:`save_nifti` or :func:`atomic_output_dir`, so an interrupted run leaves
no partial file and a rerun never overwrites results unless asked to. Files
and folders are written at the umask's mode (``0644`` and ``0755`` under the
usual ``022``), like any other program's output.

Awkward but readable inputs are accepted with a warning on the ``cmbstudy``
logger: a 4D file with a singleton 4th axis is squeezed; an identity qform
beside a valid sform (or the reverse) gives way to the valid one; integer data
with a scaling slope are scaled (nibabel applies ``scl_slope``/``scl_inter``);
NaN voxels of a scan are set to 0 by :func:`load_scan`, which says where they
were (the caller then checks that none lies inside the brain, see
:func:`cmbstudy.preprocessing.preprocess.preprocess_image`). A mask holding
values other than 0 and 1 is refused: which non-zero label means a lesion is
the annotator's choice, not the reader's.

Orientation: arrays are processed in nibabel's closest canonical orientation
(RAS+, axis 2 = axial, inferior to superior); :func:`to_canonical` and
:func:`from_canonical` convert exactly (axis flips and permutations only, no
resampling), so outputs land on the input grid with the input affine.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    io_orientation,
    ornt_transform,
)

from ..errors import InputError
from . import outputs
from .outputs import *  # noqa: F403  (re-exported: writing results, see cmbstudy.data.outputs)

__all__ = [
    "NIFTI_SUFFIXES",
    "load_image",
    "load_scan",
    "load_mask",
    "phase_beside",
    "load_phase",
    "load_magnitude_and_phase",
    "check_same_grid",
    "voxel_sizes",
    "to_canonical",
    "from_canonical",
    *outputs.__all__,
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_AFFINE_ATOL_MM = 1e-3
log = logging.getLogger(__name__)


def _is_nifti_name(path: Path) -> bool:
    return any(path.name.endswith(suffix) for suffix in NIFTI_SUFFIXES)


def _read_gzip(path: Path, what: str) -> nib.Nifti1Image | nib.Nifti2Image:
    """A ``.nii.gz`` decompressed whole, once, into memory, and read as NIfTI-1 or NIfTI-2 from there.

    Reading the whole stream catches a corrupt block or CRC (nibabel alone reads only the bytes it
    needs and never reaches the gzip trailer, so a damaged file could load as garbage voxels), and the image
    is then read from the decompressed bytes: the file is decompressed once, not once more for every read of
    its voxels. (``nib.load`` cannot read bytes in memory; each image class can.)
    """
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic != b"\x1f\x8b":
        raise InputError(
            f"{what} {path} is named .nii.gz but is not gzip-compressed: "
            "check that it is a NIfTI file (rename it to .nii if it is uncompressed)"
        )
    with gzip.open(path, "rb") as stream:  # read to its end, where the CRC and the length are checked;
        data = stream.read()  # at a peak of about twice the voxels' bytes (gzip.decompress takes three times)
    for image_class in (nib.Nifti1Image, nib.Nifti2Image):  # the header decides, as for nib.load
        if image_class.header_class.may_contain_header(data[:image_class.header_class.sizeof_hdr]):
            return image_class.from_bytes(data)
    raise InputError(f"{what} {path} cannot be read as NIfTI (its header is neither NIfTI-1 nor NIfTI-2): "
                     "check the file")


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
        img = _read_gzip(path, what) if path.name.endswith(".gz") else nib.load(str(path))
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
    if np.issubdtype(img.get_data_dtype(), np.integer) and img.dataobj.slope not in (1.0, None):
        log.info("%s %s: integer data scaled by its slope %g (intercept %g)", what, path.name,
                 img.dataobj.slope, img.dataobj.inter)
    # the voxels read, not the file or its decompressed bytes again, with the valid affine and a NIfTI-1 header:
    # a NIfTI-2 header becomes NIfTI-1 field by field; nibabel keeps its size field (540) and, checking it, warns
    # a user of a valid file that it mended it
    header = nib.Nifti1Header.from_header(img.header, check=False)
    header["sizeof_hdr"] = nib.Nifti1Header.sizeof_hdr
    return nib.Nifti1Image(data, _valid_affine(img, path, what), header)


def _is_identity(matrix: np.ndarray) -> bool:
    return bool(np.allclose(matrix, np.eye(4), atol=1e-6))


def _valid_affine(img: nib.Nifti1Image, path: Path, what: str) -> np.ndarray:
    """The header's affine, unless one of sform/qform is the identity and the other is not.

    nibabel (like the NIfTI standard) prefers the sform. A header whose sform
    is set to the identity while its qform holds the scanner geometry (or the
    reverse) is a converter's slip; the non-identity transform is the valid one.
    """
    header = img.header
    if int(header["sform_code"]) == 0 or int(header["qform_code"]) == 0:
        return img.affine
    sform, qform = header.get_sform(), header.get_qform()
    if np.allclose(sform, qform, atol=_AFFINE_ATOL_MM):
        return img.affine
    if _is_identity(sform) and not _is_identity(qform):
        log.warning("%s %s: the sform is the identity but the qform is not: the qform is used", what, path.name)
        return qform
    if _is_identity(qform) and not _is_identity(sform):
        log.warning("%s %s: the qform is the identity but the sform is not: the sform is used", what, path.name)
        return sform
    log.warning("%s %s: the sform and qform differ: the sform is used (the NIfTI rule)", what, path.name)
    return img.affine


def _squeeze_to_3d(img: nib.Nifti1Image, path: Path, what: str) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        log.warning("%s %s has shape %s: its singleton axes after the third are dropped", what, path.name,
                    data.shape)
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


def load_scan(path: str | Path, what: str = "scan", allow_zero: bool = False
              ) -> tuple[nib.Nifti1Image, np.ndarray | None]:
    """Read and validate a 3D NIfTI image, its NaN/Inf voxels set to 0, and where they were.

    The file is read once. The caller decides about the NaN/Inf voxels (e.g.
    :func:`cmbstudy.preprocessing.preprocess.preprocess_image` accepts them outside
    the brain and refuses them inside it).

    Returns:
        The image with float32 data, and (X, Y, Z) bool of its NaN/Inf voxels, or None when it has none.

    Raises:
        InputError: missing, not NIfTI, corrupt gzip, not 3D, or all zero (unless ``allow_zero``).
    """
    path = Path(path)
    img = _read(path, what)
    data = _squeeze_to_3d(img, path, what).astype(np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        data = np.where(bad, np.float32(0.0), data)
    if not allow_zero and not np.any(data):
        raise InputError(f"{what} {path} is all zero: check that the right file was exported")
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(np.float32)
    out.set_filename(str(path))  # named in later messages (e.g. NaN inside the brain); nothing is written there
    return out, (bad if bad.any() else None)


def load_image(path: str | Path, what: str = "image", allow_zero: bool = False) -> nib.Nifti1Image:
    """Read and validate a 3D NIfTI image; returns it with float32 data.

    Args:
        path: a .nii or .nii.gz file.
        what: how the file is named in error messages ("image", "prediction", ...).
        allow_zero: accept an all-zero volume (e.g. a probability map with no detection).

    Raises:
        InputError: missing, not NIfTI, corrupt gzip, not 3D, NaN/Inf voxels (:func:`load_scan`
            accepts them), or all zero.
    """
    image, bad = load_scan(path, what, allow_zero=True)
    if bad is not None:
        raise InputError(
            f"{what} {path} has {int(bad.sum())} NaN/Inf voxels: replace them (e.g. with 0) before use"
        )
    if not allow_zero and not np.any(np.asarray(image.dataobj)):
        raise InputError(f"{what} {path} is all zero: check that the right file was exported")
    return image


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


def phase_beside(image_path: str | Path) -> Path | None:
    """The phase image stored beside a magnitude image in BIDS, or None: ``<base>_part-phase_<suffix>`` for
    ``<base>_<suffix>`` (or for ``<base>_part-mag_<suffix>``), .nii.gz or .nii."""
    path = Path(image_path)
    name = path.name
    for ext in NIFTI_SUFFIXES:
        if name.endswith(ext):
            stem = name[: -len(ext)]
            break
    else:
        return None
    if "_part-phase" in stem or "_" not in stem:
        return None
    base, suffix = stem.rsplit("_", 1)
    base = base.replace("_part-mag", "")
    for ext in (".nii.gz", ".nii"):  # the dataset loader's order of preference
        candidate = path.with_name(f"{base}_part-phase_{suffix}{ext}")
        if candidate.is_file():
            return candidate
    return None


def load_phase(image_path: str | Path, reference: nib.Nifti1Image | None = None) -> np.ndarray | None:
    """(X, Y, Z) float32 the phase (radians, as the scanner's filtered phase) beside ``image_path``
    (:func:`phase_beside`), or None where there is none; NaN/Inf voxels are 0.

    Raises:
        InputError: the phase is unreadable, not 3D, or not on the magnitude's (``reference``'s) grid.
    """
    path = phase_beside(image_path)
    if path is None:
        return None
    phase, _ = load_scan(path, "phase image", allow_zero=True)
    if reference is not None:
        check_same_grid(reference, phase, what_a=f"magnitude {Path(image_path).name}", what_b=f"phase image {path}")
    return np.asarray(phase.dataobj, dtype=np.float32)


def load_magnitude_and_phase(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The scan at ``path`` as read (:func:`load_scan`, NaN/Inf voxels 0) and the phase image beside it
    (:func:`load_phase`, None where there is none): what the second look reads of a scan."""
    scan = load_scan(path)[0]
    return np.asarray(scan.dataobj), load_phase(path, scan)


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


