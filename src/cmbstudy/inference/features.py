"""The features of a second-look candidate: named 3D measures around its centre, then its patches.

What each named feature measures, and why, is in :mod:`cmbstudy.inference.second_look`; the patches (the
scan's ratio to its local brain mean minus 1, and the phase, :data:`~cmbstudy.models.patch_net.PATCH_HALF`
voxels either side of the centre) are the patch CNN's input (:mod:`cmbstudy.models.patch_net`). One array
holds both, so that a candidate set is one table: :data:`FEATURES` columns, then :data:`PATCH_COLUMNS`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage, spatial

from ..errors import InputError
from ..models.patch_net import PATCH_HALF, PATCH_SHAPE
from .candidates import Candidates

__all__ = ["FEATURES", "NETWORK_FEATURES", "IMAGE_FEATURES", "IMAGE_COLUMNS", "PATCH_COLUMNS", "N_COLUMNS",
           "candidate_features", "candidate_patches"]

#: The named features of a candidate, in the classifiers' column order (what each measures:
#: :mod:`cmbstudy.inference.second_look`).
FEATURES: tuple[str, ...] = (
    "network_peak", "network_volume_mm3", "from_network", "blob_response", "centre_value", "contrast", "ring_sd",
    "hessian_1", "hessian_2", "hessian_3", "blobness", "inplane_anisotropy", "z_extent_mm", "dark_volume_mm3",
    "edge_distance_mm", "slice_mm", "phase_contrast", "phase_deviation",
)
#: The features that come from the network (the combiner's); the others describe the image alone.
NETWORK_FEATURES: tuple[str, ...] = FEATURES[:3]
IMAGE_FEATURES: tuple[str, ...] = FEATURES[3:]
#: Where the image features lie in a row of :func:`candidate_features` (the image model's gradient boosting's input).
IMAGE_COLUMNS: slice = slice(len(NETWORK_FEATURES), len(FEATURES))
#: Columns after the named features: the candidate's patch of the scan, then of the phase (the patch CNN's input).
PATCH_COLUMNS: int = 2 * int(np.prod(PATCH_SHAPE))
#: Columns of :func:`candidate_features`' array: the named features, then the patches.
N_COLUMNS: int = len(FEATURES) + PATCH_COLUMNS
_SMOOTH_VOXELS = (1.0, 1.0, 0.5)  # Gaussian of the Hessian's image (voxels)
_RING_MM = (2.5, 5.0)  # the background: a square in-plane ring about this far from a candidate, 3x3 centre left out
_BOX = (3, 3, 2)  # half-size (voxels) of the box whose dark voxels are a candidate's dark volume
_PHASE_RING_VOXELS = 3  # the phase's background: the in-plane ring 2..3 voxels from a candidate


def _gather(volume: np.ndarray, points: np.ndarray, half: Sequence[int]) -> np.ndarray:
    """(n, 2h0+1, 2h1+1, 2h2+1) boxes of ``volume`` around integer ``points`` (edges repeated)."""
    half = tuple(int(h) for h in half)
    padded = np.pad(volume, [(h, h) for h in half], mode="edge")
    offsets = [np.arange(-h, h + 1) for h in half]
    index = [points[:, a, None, None, None] + half[a] + np.reshape(offsets[a], [-1 if b == a else 1 for b in range(3)])
             for a in range(3)]
    return padded[index[0], index[1], index[2]]


def _hessians(smooth: np.ndarray, points: np.ndarray, voxel_mm: np.ndarray) -> np.ndarray:
    """(n, 3, 3) Hessians (per mm^2) of ``smooth`` at integer ``points``: central differences of a 3x3x3 box, by
    hand (scipy has no pointwise Hessian; a full-volume one costs far more than a few hundred points)."""
    g = _gather(smooth, points, (1, 1, 1))
    h = np.zeros((len(points), 3, 3))
    centre = g[:, 1, 1, 1]
    second = [(g[:, 2, 1, 1], g[:, 0, 1, 1]), (g[:, 1, 2, 1], g[:, 1, 0, 1]), (g[:, 1, 1, 2], g[:, 1, 1, 0])]
    for a, (plus, minus) in enumerate(second):
        h[:, a, a] = (plus - 2 * centre + minus) / voxel_mm[a] ** 2
    for a, b, pp, pm, mp, mm in ((0, 1, g[:, 2, 2, 1], g[:, 2, 0, 1], g[:, 0, 2, 1], g[:, 0, 0, 1]),
                                 (0, 2, g[:, 2, 1, 2], g[:, 2, 1, 0], g[:, 0, 1, 2], g[:, 0, 1, 0]),
                                 (1, 2, g[:, 1, 2, 2], g[:, 1, 2, 0], g[:, 1, 0, 2], g[:, 1, 0, 0])):
        h[:, a, b] = h[:, b, a] = (pp - pm - mp + mm) / (4 * voxel_mm[a] * voxel_mm[b])
    return h


def _edge_distance(brain: np.ndarray, points: np.ndarray, voxel_mm: np.ndarray) -> np.ndarray:
    """(n,) distance (mm) from integer ``points`` to the nearest voxel of the volume outside ``brain``.

    What scipy's exact Euclidean distance transform gives at the points, found by a k-d tree
    (:class:`scipy.spatial.cKDTree`) over the background voxels that touch the brain: the voxel nearest to a
    point in the brain always does (one step from it toward the point is nearer, so it is brain), and a few
    hundred points do not need the whole transform (0.02 s here against 0.1 s per subject). Points outside
    the brain are at 0; where the brain fills the volume, the voxels just outside the volume are its background.
    """
    points = np.asarray(points).reshape(-1, 3)
    if not brain.any():
        return np.zeros(len(points))
    border = ndimage.binary_dilation(brain) & ~brain  # 6-connected: the background voxels beside the brain
    if not border.any():  # the brain fills the volume: the voxels just outside it are the nearest background
        return _edge_distance(np.pad(brain, 1), points + 1, voxel_mm)
    inside = brain[tuple(points.T)]
    distance = np.zeros(len(points))
    if inside.any():
        tree = spatial.cKDTree(np.argwhere(border) * voxel_mm)
        distance[inside] = tree.query(points[inside] * voxel_mm)[0]
    return distance


def _run_length(dark: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(n,) length of the run of True in each row of (n, Z) ``dark`` through column ``z`` (0 where it is False)."""
    n, depth = dark.shape
    columns = np.arange(depth)[None]
    breaks = ~dark
    above = np.where(breaks & (columns > z[:, None]), columns, depth).min(axis=1)
    below = np.where(breaks & (columns < z[:, None]), columns, -1).max(axis=1)
    return np.where(dark[np.arange(n), z], above - below - 1, 0)


def _phase_features(phase: np.ndarray | None, points: np.ndarray) -> np.ndarray:
    """(n, 2) the phase at each centre minus the mean of its ring, and the largest deviation from that mean in
    the 3x3 around the centre (radians); NaN without a phase image."""
    if phase is None:
        return np.full((len(points), 2), np.nan)
    r = _PHASE_RING_VOXELS
    box = _gather(np.asarray(phase, np.float32), points, (r, r, 0))[..., 0]  # (n, 2r+1, 2r+1)
    ring = np.ones(box.shape[1:], bool)
    ring[r - 1:r + 2, r - 1:r + 2] = False
    background = box[:, ring].mean(axis=1)
    near = box[:, r - 1:r + 2, r - 1:r + 2] - background[:, None, None]
    return np.column_stack([box[:, r, r] - background, np.abs(near).max(axis=(1, 2))])


def candidate_features(candidates: Candidates, probability: np.ndarray, brain: np.ndarray,
                       voxel_mm: Sequence[float], phase: np.ndarray | None = None) -> np.ndarray:
    """(n, :data:`N_COLUMNS`) each candidate's named features (:data:`FEATURES`; the module docstring; mm where
    named so), then its patches (:data:`PATCH_COLUMNS`: the scan's ratio minus 1, then the phase, zero without one).

    Intensities are those of ``candidates.ratio`` (the scan over its local brain mean, about 1 in tissue);
    ``phase`` is the phase image on the same grid, or None (its features are then NaN).

    Raises:
        InputError: a voxel size is not positive, or a phase image of another shape.
    """
    voxel_mm = np.asarray(voxel_mm, dtype=np.float64)
    if voxel_mm.shape != (3,) or not np.all(voxel_mm > 0):
        raise InputError(f"voxel sizes {voxel_mm.tolist()} must be three positive numbers (mm)")
    if phase is not None and np.shape(phase) != candidates.ratio.shape:
        raise InputError(f"phase image of shape {np.shape(phase)} but scan of {candidates.ratio.shape}: "
                         "they must be on the same voxel grid")
    n = candidates.n
    if not n:
        return np.zeros((0, N_COLUMNS))
    ratio = candidates.ratio
    shape = np.array(ratio.shape)
    points = np.clip(np.rint(candidates.centres).astype(int), 0, shape - 1)
    x, y, z = points.T
    hessians = _hessians(ndimage.gaussian_filter(ratio, _SMOOTH_VOXELS), points, voxel_mm)
    eig = np.linalg.eigvalsh(hessians)[:, ::-1]  # descending
    inplane = np.linalg.eigvalsh(hessians[:, :2, :2])  # ascending
    ring = np.maximum(np.ceil(_RING_MM[1] / voxel_mm[:2]).astype(int), 2)
    box = _gather(ratio, points, (ring[0], ring[1], 0))[..., 0]  # (n, 2r+1, 2r+1) the slice around each
    inner = box[:, ring[0] - 1:ring[0] + 2, ring[1] - 1:ring[1] + 2]
    count = box[0].size - inner[0].size
    background = (box.sum(axis=(1, 2)) - inner.sum(axis=(1, 2))) / count
    spread = np.sqrt(np.maximum((np.square(box).sum(axis=(1, 2)) - np.square(inner).sum(axis=(1, 2))) / count
                                - background ** 2, 0.0))
    centre = inner.min(axis=(1, 2))
    contrast = background - centre
    cut = background - contrast / 2
    column = np.pad(ratio, ((1, 1), (1, 1), (0, 0)), mode="edge")[
        x[:, None, None] + np.arange(3)[None, :, None], y[:, None, None] + np.arange(3)[None, None, :], :
    ].min(axis=(1, 2))  # (n, Z) the darkest of the 3x3 around each candidate, per slice
    extent = _run_length(column <= cut[:, None], z) * voxel_mm[2]
    dark = (_gather(ratio, points, _BOX) <= cut[:, None, None, None]).sum(axis=(1, 2, 3))
    edge = _edge_distance(np.asarray(brain, bool), points, voxel_mm)
    network_volume = np.bincount(candidates.network.labels.ravel(), minlength=candidates.network.n + 1)
    voxel_mm3 = float(np.prod(voxel_mm))
    peak = _gather(np.asarray(probability, np.float32), points, (1, 1, 1)).max(axis=(1, 2, 3))
    safe = np.where(np.abs(inplane[:, 1]) > 1e-6, inplane[:, 1], 1e-6)
    return np.column_stack([
        peak, network_volume[candidates.component] * voxel_mm3 * (candidates.component > 0),
        candidates.from_network.astype(float), candidates.blob_response, centre, contrast, spread,
        eig, eig[:, 2] / np.maximum(np.abs(eig[:, 0]), 1e-6), inplane[:, 0] / safe, extent, dark * voxel_mm3, edge,
        np.full(n, voxel_mm[2]), _phase_features(phase, points),
        _gather(ratio, points, PATCH_HALF).reshape(n, -1) - 1.0,
        (_gather(np.asarray(phase, np.float32), points, PATCH_HALF).reshape(n, -1) if phase is not None
         else np.zeros((n, PATCH_COLUMNS // 2))),
    ])


def candidate_patches(features: np.ndarray) -> torch.Tensor:
    """``(n, 2, *PATCH_SHAPE)`` float32 the patch CNN's input, from the patch columns of :func:`candidate_features`."""
    patches = np.asarray(features, dtype=np.float32).reshape(-1, N_COLUMNS)[:, len(FEATURES):]
    return torch.from_numpy(np.ascontiguousarray(patches.reshape((-1, 2) + PATCH_SHAPE)))
