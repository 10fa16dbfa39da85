"""Preprocessing of one volume for 2.5D slicing (Cho et al. 2026, Methods "Preprocessing").

Steps: canonical RAS orientation (flips and permutations only), brain mask
(the dataset's, or brain extraction, :mod:`~cmbstudy.preprocessing.brain`),
N4 bias-field correction inside the brain (:mod:`~cmbstudy.preprocessing.bias`),
tight crop to the brain in-plane padded to a square, in-plane resample to
``S x S`` (Z unchanged; :mod:`~cmbstudy.preprocessing.geometry`), z-score within
the brain (the image is 0 outside the brain; the z-scored image before that
cut is kept too, for training on masks eroded or dilated by a voxel or two).
The brain mask is computed before N4 so that N4 fits only brain voxels.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np

from ..config import PreprocessConfig
from ..data.datasets import Subject
from ..data.io import load_mask, load_scan, to_canonical, voxel_sizes
from ..errors import ConfigError, InputError
from .bias import n4_correct
from .brain import BRAIN_EXTRACTION_METHODS, deepbet_mask, extract_brain
from .geometry import Geometry, PreprocessedVolume, crop_and_resample, square_box

__all__ = ["preprocess_image", "preprocess_subject"]

log = logging.getLogger(__name__)


def preprocess_image(
    image: nib.Nifti1Image,
    cfg: PreprocessConfig,
    brain_mask: nib.Nifti1Image | None = None,
    mask: nib.Nifti1Image | None = None,
    subject_id: str = "",
    nonfinite: np.ndarray | None = None,
) -> PreprocessedVolume:
    """Preprocess one validated 3D image (and its masks, on the same grid).

    Args:
        image: 3D magnitude image (from :func:`cmbstudy.data.io.load_image`).
        cfg: ``size`` S, ``n4``, ``n4_shrink``, ``n4_iterations``, ``brain_extraction``.
        brain_mask: binary brain mask on the image grid (needed for ``"mask"``).
        mask: binary CMB mask on the image grid, or None.
        subject_id: carried into the result.
        nonfinite: (X, Y, Z) bool on the image grid, voxels that were NaN/Inf in the file and are 0 in
            ``image`` (:func:`cmbstudy.data.io.load_scan`); outside the brain they are accepted
            with a warning, inside it they are an error.

    Raises:
        ConfigError: unknown brain-extraction method, or deepbet not installed.
        InputError: ``"mask"`` without a brain mask, an empty brain, a constant image, or NaN/Inf
            voxels inside the brain.
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
            nib.Nifti1Image(deepbet_mask(image).astype(np.uint8), image.affine)
        ).dataobj) > 0
    else:
        brain = extract_brain(data, cfg.brain_extraction)
    if not brain.any():
        raise InputError(f"{label}: the brain mask is empty: check the brain mask file")
    if nonfinite is not None:
        _check_nonfinite(nonfinite, image, brain, label)
    if cfg.n4:
        data = n4_correct(data, brain, spacing, cfg.n4_shrink, cfg.n4_iterations)
    box_start, side = square_box(brain)
    out_image = crop_and_resample(data, box_start, side, cfg.size, order=1)
    out_brain = crop_and_resample(brain.astype(np.uint8), box_start, side, cfg.size, order=0) > 0
    values = out_image[out_brain]
    std = float(values.std()) if values.size else 0.0
    if std == 0.0:
        raise InputError(f"{label}: the image is constant inside the brain: check the file")
    unmasked = ((out_image - values.mean()) / std).astype(np.float32)
    out_image = np.where(out_brain, unmasked, 0.0).astype(np.float32)
    out_mask = None
    if mask is not None:
        cmb = np.asarray(to_canonical(mask).dataobj).astype(np.uint8)
        out_mask = crop_and_resample(cmb, box_start, side, cfg.size, order=0).astype(np.uint8)
    geometry = Geometry(
        original_shape=tuple(int(v) for v in image.shape[:3]),
        original_affine=tuple(tuple(float(v) for v in row) for row in image.affine),
        canonical_shape=tuple(int(v) for v in data.shape),
        canonical_voxel_mm=tuple(float(v) for v in spacing),
        box_start=box_start,
        box_size=side,
        size=cfg.size,
    )
    return PreprocessedVolume(subject_id, out_image, out_brain, out_mask, geometry, unmasked)


def _check_nonfinite(nonfinite: np.ndarray, image: nib.Nifti1Image, brain: np.ndarray, label: str) -> None:
    """Refuse NaN/Inf voxels inside the (canonical) brain; warn about those outside it, which are 0 now."""
    bad = np.asarray(to_canonical(nib.Nifti1Image(nonfinite.astype(np.uint8), image.affine)).dataobj) > 0
    inside, total = int((bad & brain).sum()), int(bad.sum())
    source = f"{label} ({image.get_filename()})" if image.get_filename() else label
    if inside:
        raise InputError(f"{source}: {inside} of its {total} NaN/Inf voxels lie inside the brain mask: "
                         "the scan is damaged there; export it again or repair those voxels")
    if total:
        log.warning("%s: %d NaN/Inf voxels outside the brain were set to 0", source, total)


def preprocess_subject(subject: Subject, cfg: PreprocessConfig) -> PreprocessedVolume:
    """Read a subject's files with :mod:`cmbstudy.data.io` and run :func:`preprocess_image`.

    Raises:
        InputError: as :func:`cmbstudy.data.io.load_scan` / :func:`~cmbstudy.data.io.load_mask`
            and :func:`preprocess_image`.
    """
    image, nonfinite = load_scan(subject.image_path, what="image")
    brain = None
    if subject.brain_mask_path is not None:
        brain = load_mask(subject.brain_mask_path, reference=image, what="brain mask")
    mask = None
    if subject.mask_path is not None:
        mask = load_mask(subject.mask_path, reference=image, what="CMB mask")
    return preprocess_image(image, cfg, brain_mask=brain, mask=mask, subject_id=subject.subject_id,
                            nonfinite=nonfinite)

