"""Brain extraction: the dataset's mask, an image already skull-stripped, Otsu thresholding, or deepbet.

The method is ``preprocess.brain_extraction``. Volumes are canonical RAS
(X, Y, Z) arrays; the mask is computed before N4 so that N4 fits only brain voxels.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from ..errors import ConfigError, InputError

__all__ = ["BRAIN_EXTRACTION_METHODS", "extract_brain", "deepbet_mask"]

BRAIN_EXTRACTION_METHODS: tuple[str, ...] = ("mask", "nonzero", "threshold", "deepbet")


def extract_brain(data: np.ndarray, method: str) -> np.ndarray:
    """Brain mask of a canonical (X, Y, Z) magnitude volume by ``method``.

    ``"nonzero"``: the image is already skull-stripped (e.g. VALDO ``desc-masked``);
    ``"threshold"``: Otsu threshold, largest 26-connected component, holes filled
    (3D, then per axial slice) -- a simple fallback, not a skull stripper.

    Raises:
        ConfigError: unknown method.
        InputError: the result is empty.
    """
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


def deepbet_mask(image: nib.Nifti1Image) -> np.ndarray:
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

