"""Brain extraction: the dataset's mask, an image already skull-stripped, Otsu thresholding, or deepbet.

The method is ``preprocess.brain_extraction``. Volumes are canonical RAS
(X, Y, Z) arrays; the mask is computed before N4 so that N4 fits only brain voxels.

A user's scans come either skull-stripped or not, with or without a mask.
:func:`resolve_brain_extraction` turns the command line's choice
(``auto``, ``none``, ``mask``, ``threshold``, ``deepbet``) into one of the
methods, and ``auto`` decides per scan: a given mask wins; a skull-stripped
image (:func:`looks_skull_stripped`) is used as it is; any other scan gets
:data:`UNSTRIPPED_DEFAULT` (deepbet) when it is installed (``pip install
'cmbstudy[brain]'``), else the Otsu threshold. ``benchmarks/brain_extraction.py``
measured both against true brain masks: the threshold wins on the synthetic
scans as generated (a brain on a noise background), deepbet once a scalp is
drawn around the brain, as on real unstripped heads (the data chapter says more).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..errors import ConfigError, InputError

__all__ = [
    "BRAIN_EXTRACTION_METHODS",
    "BRAIN_EXTRACTION_CHOICES",
    "UNSTRIPPED_DEFAULT",
    "extract_brain",
    "deepbet_mask",
    "looks_skull_stripped",
    "resolve_brain_extraction",
]

BRAIN_EXTRACTION_METHODS: tuple[str, ...] = ("mask", "nonzero", "threshold", "deepbet")
#: What ``--brain-extraction`` accepts: ``none`` uses the image as it is (its non-zero voxels), ``auto`` decides.
BRAIN_EXTRACTION_CHOICES: tuple[str, ...] = ("auto", "none", "mask", "threshold", "deepbet")
#: ``auto``'s method for a scan that is not skull-stripped and has no mask, when installed (module docstring).
UNSTRIPPED_DEFAULT = "deepbet"
_UNSTRIPPED_FALLBACK = "threshold"
# A skull-stripped image: at least this share of its voxels exactly 0, and its non-zero voxels in one
# 26-connected region holding at least _ONE_REGION of them (a few stray voxels of a mask edge are allowed).
_MIN_ZERO_SHARE = 0.05
_ONE_REGION = 0.99


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
        from skimage.filters import threshold_otsu  # here: the scans that come with a mask never need it

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
            "`pip install 'cmbstudy[brain]'` (or `pip install deepbet`), or use 'mask', 'nonzero' or 'threshold'"
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



def looks_skull_stripped(data: np.ndarray) -> bool:
    """True when a magnitude volume is exact zeros outside one connected head region.

    A scan with its background kept has noise (hardly any exact zero) there;
    one stripped by a brain mask is exactly 0 outside it. So: at least 5% of
    the voxels are exactly 0, the non-zero voxels form one 26-connected region
    (99% of them), and the zeros surround it (they fill most of each in-plane
    face of the volume). A scanner that zero-fills the background of an
    unstripped head passes this test too; ``--brain-extraction`` then says
    what to do, and the summary states what ``auto`` chose.
    """
    nonzero = data != 0
    n = int(nonzero.sum())
    if n == 0 or 1.0 - n / nonzero.size < _MIN_ZERO_SHARE:
        return False
    labels, count = ndimage.label(nonzero, structure=np.ones((3, 3, 3), bool))
    if count > 1 and np.bincount(labels.ravel())[1:].max() < _ONE_REGION * n:
        return False
    outside = ~ndimage.binary_fill_holes(nonzero)
    faces = [outside[0], outside[-1], outside[:, 0], outside[:, -1]]
    return bool(all(face.mean() > 0.5 for face in faces))


def resolve_brain_extraction(choice: str, data: np.ndarray, has_mask: bool) -> tuple[str, str]:
    """The brain-extraction method for one scan, and the sentence that says why.

    Args:
        choice: one of :data:`BRAIN_EXTRACTION_CHOICES`, or a method of :data:`BRAIN_EXTRACTION_METHODS`.
        data: (X, Y, Z) magnitude volume (NaN already set to 0).
        has_mask: a brain mask was given or the dataset has one.

    Raises:
        ConfigError: an unknown choice, or ``mask`` without a mask.
    """
    if choice == "none":
        return "nonzero", "none: the image is used as it is (its non-zero voxels are the brain)"
    if choice not in BRAIN_EXTRACTION_CHOICES and choice not in BRAIN_EXTRACTION_METHODS:
        raise ConfigError(f"--brain-extraction {choice!r}: use one of {', '.join(BRAIN_EXTRACTION_CHOICES)}")
    if choice == "mask" and not has_mask:
        raise ConfigError("--brain-extraction mask needs a brain mask: pass --brain-mask, --brain-mask-pattern "
                          "or a dataset with brain masks")
    if choice != "auto":
        return choice, f"{choice}: as asked"
    if has_mask:
        return "mask", "auto: the given brain mask"
    if looks_skull_stripped(data):
        return "nonzero", "auto: the image is skull-stripped (exact zeros outside one head region), used as it is"
    if importlib.util.find_spec(UNSTRIPPED_DEFAULT) is not None:
        return UNSTRIPPED_DEFAULT, f"auto: the image is not skull-stripped and has no mask: {UNSTRIPPED_DEFAULT}"
    return _UNSTRIPPED_FALLBACK, (f"auto: the image is not skull-stripped and has no mask: {_UNSTRIPPED_FALLBACK} "
                                  f"({UNSTRIPPED_DEFAULT} is not installed: pip install 'cmbstudy[brain]')")
