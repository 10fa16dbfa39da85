"""The first look: candidate CMBs from the network's map at a low threshold and from a classical blob detector.

A sensitive first stage, as the two-stage detectors of the field have it (Dou et
al. 2016 screen with a 3D FCN, Al-Masni et al. 2020 with YOLO): every component
of the network's probability map at ``candidate_threshold`` (any size, centroid
in the brain), merged with the strongest dark blobs of a scale-normalised
in-plane Laplacian of Gaussian (local 3D maxima, at most ``log_candidates``
per volume, at the CMB scale of one voxel) of the scan divided by its local
brain mean (:func:`local_ratio`: bias fields and sites cancel, and the scan is
looked at on its own grid, not through the network's resampling). A blob whose
peak lies inside a network candidate's component, or within
:data:`SAME_PLACE_VOXELS` of its centroid, is the same candidate and is
dropped; of two blobs that close, the weaker goes. Candidates farther apart
but within the match distance may still be one lesion: of those that the
second look keeps, :func:`suppress_duplicates` keeps the best scored. The
second look (:mod:`cmbstudy.inference.second_look`) then decides which
candidates are CMBs.

Arrays are (X, Y, Z) on one grid: the input scan's, where lesions are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..evaluation.lesions import Lesions
from ..evaluation.operating_point import OperatingPoint, apply_operating_point
from ..models.baselines.classical import local_ratio as classical_ratio

__all__ = ["LOG_SIGMAS_VOXELS", "LOCAL_MEAN_MM", "SAME_PLACE_VOXELS", "Candidates", "local_ratio", "blob_response",
           "find_blobs", "find_candidates", "suppress_duplicates", "keep_best", "keep_best_at"]

#: In-plane LoG scales (voxels) of the blob detector: the small CMBs that a network misses are 1-2 voxel foci.
LOG_SIGMAS_VOXELS: tuple[float, ...] = (1.0,)
#: Gaussian (voxels) across slices before the in-plane LoG: a CMB blooms into its neighbours, noise does not.
LOG_Z_SIGMA_VOXELS = 0.5
#: In-plane Gaussian (mm) of the local brain mean that :func:`local_ratio` divides by.
LOCAL_MEAN_MM = 6.0
#: Two candidates this close (voxel index distance) are one place: the weaker blob is dropped.
SAME_PLACE_VOXELS = 2.0


@dataclass(frozen=True)
class Candidates:
    """The candidates of one volume.

    Attributes:
        centres: (n, 3) float voxel coordinates: a network component's centroid, or a blob's peak.
        from_network: (n,) bool, the candidate is a component of the network's map.
        component: (n,) int, its label in ``network.labels`` (0 for a blob).
        network: the network's components at the candidate threshold (brain rule applied).
        blob_response: (n,) float, the LoG response at the centre (:func:`blob_response`).
        ratio: (X, Y, Z) float32 the scan over its local brain mean (:func:`local_ratio`), 1 outside the brain.
    """

    centres: np.ndarray
    from_network: np.ndarray
    component: np.ndarray
    network: Lesions
    blob_response: np.ndarray
    ratio: np.ndarray

    @property
    def n(self) -> int:
        """Number of candidates."""
        return int(self.centres.shape[0])


def local_ratio(image: np.ndarray, brain: np.ndarray, voxel_mm: Sequence[float]) -> np.ndarray:
    """(X, Y, Z) float32: the scan over its in-plane local brain mean at :data:`LOCAL_MEAN_MM`, 1 outside the brain
    (the classical detector's ratio, :func:`cmbstudy.models.baselines.classical.local_ratio`)."""
    return classical_ratio(image, brain, voxel_mm, LOCAL_MEAN_MM)


def blob_response(image: np.ndarray, sigmas: Sequence[float] = LOG_SIGMAS_VOXELS) -> np.ndarray:
    """(X, Y, Z) float32: the largest scale-normalised in-plane LoG ``sigma^2 (I_xx + I_yy)`` over ``sigmas``.

    A dark blob (a CMB) gives a positive response. scipy's Gaussian derivative filters; the
    derivatives are in-plane only, because thick GRE slices blur along Z, after a light Gaussian
    across slices (:data:`LOG_Z_SIGMA_VOXELS`; with 400 blobs per subject on 40 subjects of the quick
    training pool, the share of CMBs <= 3 mm with a blob within the match distance rose from 0.74 to 0.76).
    """
    image = np.asarray(image, dtype=np.float32)
    response = np.full(image.shape, -np.inf, dtype=np.float32)
    for sigma in sigmas:
        scale = (float(sigma), float(sigma), LOG_Z_SIGMA_VOXELS)
        log = (ndimage.gaussian_filter(image, scale, order=(2, 0, 0))
               + ndimage.gaussian_filter(image, scale, order=(0, 2, 0))) * float(sigma) ** 2
        np.maximum(response, log, out=response)
    return response


def find_blobs(response: np.ndarray, brain: np.ndarray, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_max`` strongest local 3D maxima (3x3x3) of ``response`` inside ``brain``, strongest first.

    Returns:
        (n, 3) int voxel indices and (n,) responses.
    """
    brain = np.asarray(brain, dtype=bool)
    peak = (response == ndimage.maximum_filter(response, size=3)) & brain & (response > 0)
    index = np.argwhere(peak)
    values = response[peak]
    order = np.argsort(-values, kind="stable")[: max(int(n_max), 0)]
    return index[order], values[order]


def suppress_duplicates(centres: np.ndarray, scores: np.ndarray, distance: float) -> np.ndarray:
    """(n,) bool: greedy non-maximum suppression, the best scored of any candidates within ``distance`` voxels.

    Written by hand: a few dozen kept candidates need no spatial index.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = np.zeros(len(order), dtype=bool)
    for i in order:
        kept = np.flatnonzero(keep)
        if not len(kept) or np.linalg.norm(centres[kept] - centres[i], axis=1).min() > distance:
            keep[i] = True
    return keep


def keep_best(centres: np.ndarray, scores: np.ndarray, threshold: float, distance: float) -> np.ndarray:
    """Indices (ascending) of the candidates scored at or above ``threshold``, of any such candidates within
    ``distance`` voxels of each other the best scored (:func:`suppress_duplicates`): the lesions a second look
    keeps."""
    scores = np.asarray(scores)
    above = np.flatnonzero(scores >= threshold)
    return above[suppress_duplicates(np.asarray(centres)[above], scores[above], distance)]


def keep_best_at(centres: np.ndarray, scores: np.ndarray, thresholds: Sequence[float], distance: float
                 ) -> list[np.ndarray]:
    """:func:`keep_best` at each of ``thresholds``, the duplicates suppressed once: the greedy suppression visits
    the candidates best first, so among those at or above a threshold it keeps exactly the ones it keeps among all."""
    scores = np.asarray(scores)
    kept = np.flatnonzero(suppress_duplicates(np.asarray(centres), scores, distance))
    return [kept[scores[kept] >= threshold] for threshold in thresholds]


def find_candidates(probability: np.ndarray, image: np.ndarray, brain: np.ndarray, voxel_mm: Sequence[float],
                    candidate_threshold: float, log_candidates: int, connectivity: int = 26) -> Candidates:
    """The candidates of one volume (the rule of the module docstring).

    Args:
        probability: (X, Y, Z) the network's probability map.
        image: (X, Y, Z) the scan (magnitude) on the same grid.
        voxel_mm: its voxel sizes (mm).
        brain: (X, Y, Z) bool brain mask (centroid rule for components; blobs inside it only).
        candidate_threshold: probability threshold of the network's candidates.
        log_candidates: most blobs kept per volume (0: the network's candidates only).

    Raises:
        InputError: the arrays differ in shape or are not 3D.
    """
    probability, image = np.asarray(probability), np.asarray(image)
    brain = np.asarray(brain, dtype=bool)
    if probability.ndim != 3 or probability.shape != image.shape or brain.shape != image.shape:
        raise InputError(f"candidates need 3D arrays of one shape, got probability {probability.shape}, "
                         f"image {image.shape} and brain {brain.shape}")
    network = apply_operating_point(probability, OperatingPoint(candidate_threshold, 1, connectivity=connectivity),
                                    brain)
    ratio = local_ratio(image, brain, voxel_mm)
    response = blob_response(ratio)
    peaks, values = find_blobs(response, brain, log_candidates)
    keep = np.ones(len(peaks), dtype=bool)
    if len(peaks):
        keep &= network.labels[tuple(peaks.T)] == 0
        if network.n:
            gaps = np.linalg.norm(peaks[:, None, :] - network.centroids[None], axis=2)
            keep &= gaps.min(axis=1) > SAME_PLACE_VOXELS
        keep[keep] = suppress_duplicates(peaks[keep].astype(float), values[keep], SAME_PLACE_VOXELS)
    peaks, values = peaks[keep], values[keep]
    net_points = np.rint(network.centroids).astype(int).reshape(-1, 3)
    net_points = np.clip(net_points, 0, np.array(image.shape) - 1)
    centres = np.concatenate([network.centroids.reshape(-1, 3), peaks.astype(float)])
    return Candidates(
        centres=centres,
        from_network=np.concatenate([np.ones(network.n, bool), np.zeros(len(peaks), bool)]),
        component=np.concatenate([np.arange(1, network.n + 1), np.zeros(len(peaks), int)]).astype(np.int64),
        network=network,
        blob_response=np.concatenate([response[tuple(net_points.T)] if network.n else np.zeros(0), values]),
        ratio=ratio,
    )
