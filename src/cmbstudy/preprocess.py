"""Preprocessing of one volume for 2.5D slicing, and its exact geometric inverse.

Steps (Cho et al., Methods "Preprocessing"): canonical RAS orientation (flips
and permutations only), brain mask (the dataset's, or brain extraction), N4
bias-field correction inside the brain (SimpleITK), tight crop to the brain
in-plane padded to a square, in-plane resample to ``S x S`` (Z unchanged),
z-score within the brain. The brain mask is computed before N4 so that N4
fits only brain voxels.

The crop and resample are one axis-aligned scaling per in-plane axis, applied
with :func:`scipy.ndimage.affine_transform` using the pixel-edge convention: the
square box ``[x0 - 0.5, x0 + L - 0.5]`` (canonical voxel coordinates) maps onto
``[-0.5, S - 0.5]``. :meth:`PreprocessedVolume.restore` applies the inverse
scaling and :func:`cmbstudy.io.from_canonical`, so outputs land on the input
grid with the input affine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from .config import PreprocessConfig
from .datasets import Subject
from .errors import ConfigError, InputError
from .io import from_canonical, load_image, load_mask, to_canonical, voxel_sizes, write_atomically

__all__ = [
    "BRAIN_EXTRACTION_METHODS",
    "Geometry",
    "PreprocessedVolume",
    "extract_brain",
    "n4_correct",
    "preprocess_image",
    "preprocess_subject",
    "load_preprocessed",
]

BRAIN_EXTRACTION_METHODS: tuple[str, ...] = ("mask", "nonzero", "threshold", "deepbet")
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Geometry:
    """All that maps a preprocessed (Z, S, S) array back onto the input grid.

    The preprocessed axes are (Z, X, Y) of the canonical RAS grid: axis 0
    inferior -> superior, axis 1 left -> right, axis 2 posterior -> anterior.
    """

    original_shape: tuple[int, int, int]  # shape of the input NIfTI (voxels)
    original_affine: tuple[tuple[float, ...], ...]  # 4x4 affine of the input NIfTI (mm)
    canonical_shape: tuple[int, int, int]  # (X, Y, Z) after reorientation to RAS
    canonical_voxel_mm: tuple[float, float, float]  # voxel sizes along canonical X, Y, Z (mm)
    box_start: tuple[int, int]  # first canonical (x, y) voxel of the square crop (may be < 0)
    box_size: int  # side L of the square crop (canonical voxels)
    size: int  # side S of the resampled slices (pixels)

    @property
    def scale(self) -> float:
        """Canonical voxels per output pixel in-plane (L / S)."""
        return self.box_size / self.size

    @property
    def output_voxel_mm(self) -> tuple[float, float, float]:
        """Voxel sizes (mm) of the preprocessed array along its (Z, X, Y) axes."""
        vx, vy, vz = self.canonical_voxel_mm
        return (vz, vx * self.scale, vy * self.scale)


@dataclass
class PreprocessedVolume:
    """One subject after :func:`preprocess_image`; arrays are (Z, S, S) = (Z, X, Y) canonical."""

    subject_id: str  # BIDS label without "sub-"
    image: np.ndarray  # (Z, S, S) float32, z-scored within the brain, 0 outside
    brain: np.ndarray  # (Z, S, S) bool brain mask
    mask: np.ndarray | None  # (Z, S, S) uint8 CMB mask (nearest neighbour); None without reference
    geometry: Geometry  # inverse mapping to the input grid

    def restore(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """Map a (Z, S, S) array back onto the input image's grid and orientation.

        Args:
            array: (Z, S, S) values on the preprocessed grid (probabilities, labels, ...).
            order: spline order, 1 (linear) for continuous values, 0 for labels.

        Returns:
            Array with the input NIfTI's shape (X0, Y0, Z0), 0 outside the crop box.

        Raises:
            ValueError: ``array`` does not have the preprocessed shape.
        """
        g = self.geometry
        expected = (g.canonical_shape[2], g.size, g.size)
        if array.shape != expected:
            raise ValueError(f"restore expects an array of shape {expected}, got {array.shape}")
        planes = np.transpose(np.asarray(array), (1, 2, 0))  # (S, S, Z)
        inv = g.size / g.box_size
        offset = [(-g.box_start[0] + 0.5) * inv - 0.5, (-g.box_start[1] + 0.5) * inv - 0.5, 0.0]
        dtype = planes.dtype if order == 0 else np.result_type(planes.dtype, np.float32)
        canonical = ndimage.affine_transform(
            planes.astype(dtype, copy=False), [inv, inv, 1.0], offset=offset,
            output_shape=g.canonical_shape, order=order, mode="nearest",
        )
        x0, y0 = g.box_start
        canonical[: max(x0, 0)] = 0
        canonical[max(x0 + g.box_size, 0):] = 0
        canonical[:, : max(y0, 0)] = 0
        canonical[:, max(y0 + g.box_size, 0):] = 0
        return from_canonical(canonical, _GridProxy(np.asarray(g.original_affine), g.original_shape))


class _GridProxy:
    """The ``affine`` and ``shape`` of the input image (all :func:`from_canonical` reads)."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, int, int]) -> None:
        self.affine = affine
        self.shape = shape


def extract_brain(data: np.ndarray, method: str) -> np.ndarray:
    """Brain mask of a canonical (X, Y, Z) magnitude volume by ``method``.

    ``"nonzero"``: the image is already skull-stripped (e.g. VALDO ``desc-masked``);
    ``"threshold"``: Otsu threshold, largest 26-connected component, holes filled
    (3D, then per axial slice) -- a simple fallback, not a skull stripper.

    Raises:
        ConfigError: unknown method.
        InputError: the result is empty.
    """
    from skimage.filters import threshold_otsu

    if method == "nonzero":
        brain = data != 0
    elif method == "threshold":
        brain = data > threshold_otsu(data)
        labels, n = ndimage.label(brain, structure=np.ones((3, 3, 3), bool))
        if n > 1:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            brain = labels == int(np.argmax(sizes))
    else:
        raise ConfigError(f"brain extraction {method!r} is not one of {BRAIN_EXTRACTION_METHODS}")
    brain = ndimage.binary_fill_holes(brain)
    for z in range(brain.shape[2]):
        brain[:, :, z] = ndimage.binary_fill_holes(brain[:, :, z])
    if not brain.any():
        raise InputError(f"brain extraction {method!r} found no brain voxel: check the image")
    return brain


def _deepbet_mask(image: nib.Nifti1Image) -> np.ndarray:
    """Brain mask by deepbet (optional dependency), on the image's own grid."""
    if importlib.util.find_spec("deepbet") is None:
        raise ConfigError(
            "preprocess.brain_extraction is 'deepbet' but deepbet is not installed: "
            "`pip install deepbet`, or use 'mask', 'nonzero' or 'threshold'"
        )
    from deepbet import run_bet

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src, out = folder / "image.nii.gz", folder / "mask.nii.gz"
        nib.save(image, src)
        # documented call: run_bet(inputs, brains, masks, tivs, threshold, n_dilate, no_gpu)
        run_bet([str(src)], [str(folder / "brain.nii.gz")], [str(out)], [str(folder / "tiv.csv")],
                threshold=0.5, n_dilate=0, no_gpu=True)
        return np.asanyarray(nib.load(str(out)).dataobj) > 0


def n4_correct(
    data: np.ndarray, brain: np.ndarray, spacing_mm: Sequence[float], shrink: int,
    iterations: Sequence[int],
) -> np.ndarray:
    """N4 bias-field correction of an (X, Y, Z) volume, fitted inside ``brain`` (SimpleITK).

    The field is fitted on a copy shrunk by ``shrink`` (in-plane; along Z only
    while at least 8 slices remain) and applied at full resolution through the
    log bias field, as N4's authors recommend for speed (Tustison 2010).

    Returns:
        Corrected (X, Y, Z) float32 volume; voxels outside ``brain`` are divided by
        the same smooth field.
    """
    import SimpleITK as sitk

    values = data[brain]
    shift = 0.0
    if values.min() <= 0:  # N4 works on log intensities: make brain voxels positive
        shift = float(-values.min() + 1e-3 * (values.max() - values.min() + 1e-6))
    image = sitk.GetImageFromArray(np.transpose(data + shift, (2, 1, 0)).astype(np.float32))
    image.SetSpacing([float(s) for s in spacing_mm])
    mask = sitk.GetImageFromArray(np.transpose(brain, (2, 1, 0)).astype(np.uint8))
    mask.CopyInformation(image)
    z_shrink = max(1, min(shrink, data.shape[2] // 8))
    factors = [max(1, shrink), max(1, shrink), z_shrink]
    small = sitk.Shrink(image, factors)
    small_mask = sitk.Shrink(mask, factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    field = np.exp(np.transpose(sitk.GetArrayFromImage(log_field), (2, 1, 0)))
    return ((data + shift) / field - shift).astype(np.float32)


def _square_box(brain: np.ndarray) -> tuple[tuple[int, int], int]:
    """First (x, y) voxel and side of the brain's in-plane bounding box padded to a square."""
    xs = np.flatnonzero(brain.any(axis=(1, 2)))
    ys = np.flatnonzero(brain.any(axis=(0, 2)))
    wx, wy = int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)
    side = max(wx, wy)
    return (int(xs[0]) - (side - wx) // 2, int(ys[0]) - (side - wy) // 2), side


def _resample(volume: np.ndarray, box_start: tuple[int, int], side: int, size: int, order: int) -> np.ndarray:
    """(X, Y, Z) canonical -> (Z, S, S) crop-and-resample; 0 outside the image."""
    scale = side / size
    offset = [box_start[0] - 0.5 + 0.5 * scale, box_start[1] - 0.5 + 0.5 * scale, 0.0]
    out = ndimage.affine_transform(
        volume, [scale, scale, 1.0], offset=offset, output_shape=(size, size, volume.shape[2]),
        order=order, mode="grid-constant", cval=0.0,
    )
    return np.ascontiguousarray(np.transpose(out, (2, 0, 1)))


def preprocess_image(
    image: nib.Nifti1Image,
    cfg: PreprocessConfig,
    brain_mask: nib.Nifti1Image | None = None,
    mask: nib.Nifti1Image | None = None,
    subject_id: str = "",
) -> PreprocessedVolume:
    """Preprocess one validated 3D image (and its masks, on the same grid).

    Args:
        image: 3D magnitude image (from :func:`cmbstudy.io.load_image`).
        cfg: ``size`` S, ``n4``, ``n4_shrink``, ``n4_iterations``, ``brain_extraction``.
        brain_mask: binary brain mask on the image grid (needed for ``"mask"``).
        mask: binary CMB mask on the image grid, or None.
        subject_id: carried into the result.

    Raises:
        ConfigError: unknown brain-extraction method, or deepbet not installed.
        InputError: ``"mask"`` without a brain mask, an empty brain, or a constant image.
    """
    if cfg.brain_extraction not in BRAIN_EXTRACTION_METHODS:
        raise ConfigError(
            f"preprocess.brain_extraction {cfg.brain_extraction!r} is not one of {BRAIN_EXTRACTION_METHODS}"
        )
    canonical = to_canonical(image)
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    spacing = voxel_sizes(canonical)
    label = f"subject {subject_id}" if subject_id else "image"
    if cfg.brain_extraction == "mask":
        if brain_mask is None:
            raise InputError(
                f"{label} has no brain mask but preprocess.brain_extraction is 'mask': "
                "use --set preprocess.brain_extraction=threshold (or nonzero/deepbet)"
            )
        brain = np.asarray(to_canonical(brain_mask).dataobj) > 0
    elif cfg.brain_extraction == "deepbet":
        brain = np.asarray(to_canonical(
            nib.Nifti1Image(_deepbet_mask(image).astype(np.uint8), image.affine)
        ).dataobj) > 0
    else:
        brain = extract_brain(data, cfg.brain_extraction)
    if not brain.any():
        raise InputError(f"{label}: the brain mask is empty: check the brain mask file")
    if cfg.n4:
        data = n4_correct(data, brain, spacing, cfg.n4_shrink, cfg.n4_iterations)
    box_start, side = _square_box(brain)
    out_image = _resample(data, box_start, side, cfg.size, order=1)
    out_brain = _resample(brain.astype(np.uint8), box_start, side, cfg.size, order=0) > 0
    values = out_image[out_brain]
    std = float(values.std()) if values.size else 0.0
    if std == 0.0:
        raise InputError(f"{label}: the image is constant inside the brain: check the file")
    out_image = np.where(out_brain, (out_image - values.mean()) / std, 0.0).astype(np.float32)
    out_mask = None
    if mask is not None:
        cmb = np.asarray(to_canonical(mask).dataobj).astype(np.uint8)
        out_mask = _resample(cmb, box_start, side, cfg.size, order=0).astype(np.uint8)
    geometry = Geometry(
        original_shape=tuple(int(v) for v in image.shape[:3]),
        original_affine=tuple(tuple(float(v) for v in row) for row in image.affine),
        canonical_shape=tuple(int(v) for v in data.shape),
        canonical_voxel_mm=tuple(float(v) for v in spacing),
        box_start=box_start,
        box_size=side,
        size=cfg.size,
    )
    return PreprocessedVolume(subject_id, out_image, out_brain, out_mask, geometry)


def preprocess_subject(subject: Subject, cfg: PreprocessConfig) -> PreprocessedVolume:
    """Read a subject's files with :mod:`cmbstudy.io` and run :func:`preprocess_image`.

    Raises:
        InputError: as :func:`cmbstudy.io.load_image` / :func:`~cmbstudy.io.load_mask`
            and :func:`preprocess_image`.
    """
    image = load_image(subject.image_path)
    brain = None
    if subject.brain_mask_path is not None:
        brain = load_mask(subject.brain_mask_path, reference=image, what="brain mask")
    mask = None
    if subject.mask_path is not None:
        mask = load_mask(subject.mask_path, reference=image, what="CMB mask")
    return preprocess_image(image, cfg, brain_mask=brain, mask=mask, subject_id=subject.subject_id)


def _cache_key(subject: Subject, cfg: PreprocessConfig) -> str:
    paths = [subject.image_path, subject.mask_path, subject.brain_mask_path]
    files = []
    for path in paths:
        if path is None:
            files.append(None)
        else:
            stat = Path(path).stat()
            files.append([Path(path).name, stat.st_size, stat.st_mtime_ns])
    text = json.dumps(
        {"version": _CACHE_VERSION, "cfg": dataclasses.asdict(cfg), "files": files}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save_cache(volume: PreprocessedVolume, path: Path) -> None:
    arrays = {"image": volume.image, "brain": volume.brain}
    if volume.mask is not None:
        arrays["mask"] = volume.mask
    geometry = json.dumps(dataclasses.asdict(volume.geometry))
    write_atomically(
        path,
        lambda tmp: np.savez(tmp, subject_id=np.array(volume.subject_id), geometry=np.array(geometry), **arrays),
        suffix=".npz",
    )


def _read_cache(path: Path) -> PreprocessedVolume:
    with np.load(path, allow_pickle=False) as npz:
        raw = json.loads(str(npz["geometry"]))
        geometry = Geometry(
            original_shape=tuple(raw["original_shape"]),
            original_affine=tuple(tuple(row) for row in raw["original_affine"]),
            canonical_shape=tuple(raw["canonical_shape"]),
            canonical_voxel_mm=tuple(raw["canonical_voxel_mm"]),
            box_start=tuple(raw["box_start"]),
            box_size=int(raw["box_size"]),
            size=int(raw["size"]),
        )
        mask = npz["mask"] if "mask" in npz.files else None
        return PreprocessedVolume(str(npz["subject_id"]), npz["image"], npz["brain"], mask, geometry)


def load_preprocessed(
    subjects: Sequence[Subject], cfg: PreprocessConfig, cache_dir: Path, progress: bool = True
) -> list[PreprocessedVolume]:
    """Preprocess every subject, reading and writing one ``.npz`` per subject in ``cache_dir``.

    The cache file name holds a hash of ``cfg`` and of the input files' names,
    sizes and modification times; a changed input or setting is recomputed and
    the subject's stale cache files are removed.

    Raises:
        InputError: as :func:`preprocess_subject`.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    volumes = []
    for subject in tqdm(subjects, desc="preprocess", unit="subject", disable=not progress):
        path = cache_dir / f"sub-{subject.subject_id}_{_cache_key(subject, cfg)}.npz"
        if path.is_file():
            try:
                volumes.append(_read_cache(path))
                continue
            except (OSError, ValueError, KeyError):
                path.unlink()  # unreadable cache (e.g. interrupted copy): recompute
        volume = preprocess_subject(subject, cfg)
        own = re.compile(rf"sub-{re.escape(subject.subject_id)}_[0-9a-f]{{16}}\.npz")
        for stale in cache_dir.glob("sub-*.npz"):
            if own.fullmatch(stale.name):
                stale.unlink()
        _save_cache(volume, path)
        volumes.append(volume)
    return volumes
