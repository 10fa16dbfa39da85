"""The second look: each candidate (:mod:`cmbstudy.inference.candidates`) scored as a CMB or not, in 3D.

A CMB is a small round dark focus, darker than its surroundings in every
direction; the network's commonest false positives are not: a vein seen end-on
is a dark dot in one slice but a tube across slices or in the plane, and the
brain's edge is dark on one side only. Each candidate is described by named 3D
features computed around its centre (:data:`FEATURES`): the network's peak
probability and component volume, the blob detector's response, the contrast
against a ring around it, the eigenvalues of the 3D Hessian of the smoothed
image (three positive for a blob, one near zero for a tube), the in-plane
anisotropy, the extent across slices and of the dark region in mm, the
distance to the brain's edge, the slice thickness, and, where the scan has a
phase image beside it (BIDS ``part-phase``: the scanner's high-pass filtered
phase), the phase at the centre against its ring and the largest phase
deviation next to the centre. A CMB is paramagnetic: it shifts the phase
around it, which a noise blob does not and a calcification does the other
way. Without a phase image those two are missing (NaN), which scikit-learn's
gradient boosting takes as such. Two classifiers
(:mod:`cmbstudy.training.second_look` trains them) turn them into a score in
[0, 1]: an image model on the image features alone, trained on the blobs of
the run's training subjects (no network is involved, so none of them is
in-sample), and a combiner of its score with the network's features, trained on
the run's validation subjects, which the network never saw. Candidates at or
above the operating point's ``second_look`` threshold are kept, and of kept
candidates within the match distance of each other the best scored
(:func:`~cmbstudy.inference.candidates.suppress_duplicates`): these are the
detected CMBs.

:func:`find_detections` is the one function from a probability map to lesions:
the single-stage rule (:func:`cmbstudy.evaluation.operating_point.apply_operating_point`)
when the operating point has no second look, else candidates, features, scores
and the lesions kept. Arrays are (X, Y, Z) on the input scan's grid.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage, spatial

from ..config import SecondLookConfig
from ..data.outputs import write_atomically, write_json
from ..errors import ConfigError, InputError
from ..evaluation.lesions import Lesions
from ..evaluation.operating_point import OperatingPoint, apply_operating_point
from .candidates import Candidates, find_candidates, keep_best

__all__ = ["FEATURES", "NETWORK_FEATURES", "IMAGE_FEATURES", "stack_scores", "SecondLook", "Detections", "candidate_features", "score_candidates", "find_detections",
           "keep_candidates", "save_second_look", "load_second_look", "THRESHOLDS"]

#: The features of a candidate, in the classifier's column order (the module docstring).
FEATURES: tuple[str, ...] = (
    "network_peak", "network_volume_mm3", "from_network", "blob_response", "centre_value", "contrast", "ring_sd",
    "hessian_1", "hessian_2", "hessian_3", "blobness", "inplane_anisotropy", "z_extent_mm", "dark_volume_mm3",
    "edge_distance_mm", "slice_mm", "phase_contrast", "phase_deviation",
)
#: The second look's score thresholds that its operating points are chosen from (for one scan, and for monitoring).
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)
#: The features that come from the network (the combiner's); the others describe the image alone.
NETWORK_FEATURES: tuple[str, ...] = FEATURES[:3]
IMAGE_FEATURES: tuple[str, ...] = FEATURES[3:]


def stack_scores(image_score: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(n, 4) the combiner's inputs: the image model's score (logit) and the network's features (volume as log)."""
    p = np.clip(np.asarray(image_score, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.column_stack([np.log(p / (1 - p)), features[:, 0], np.log1p(features[:, 1]), features[:, 2]])
_SMOOTH_VOXELS = (1.0, 1.0, 0.5)  # Gaussian of the Hessian's image (voxels)
_RING_MM = (2.5, 5.0)  # the background: a square in-plane ring about this far from a candidate, 3x3 centre left out
_BOX = (3, 3, 2)  # half-size (voxels) of the box whose dark voxels are a candidate's dark volume
_PHASE_RING_VOXELS = 3  # the phase's background: the in-plane ring 2..3 voxels from a candidate
_FORMAT = "cmbstudy second look 3"


@dataclass(frozen=True)
class SecondLook:
    """A trained second look: its classifier and how its candidates are found.

    Attributes:
        kind: the combiner ("boosting" or "logistic"); estimator: the fitted scikit-learn combiner.
        image_estimator: the image model (scikit-learn), on :data:`IMAGE_FEATURES`.
        settings: the candidates' settings it was trained with (:class:`~cmbstudy.config.SecondLookConfig`).
        merge_distance: voxels within which two kept candidates are one lesion (the match distance).
        threshold: the score at or above which a candidate is a CMB, chosen on validation subjects.
        validation: its out-of-fold validation scores, as training reported them.
        monitoring_threshold: the threshold ``monitor`` detects both scans of a pair with, where one was chosen
            on development pairs (:func:`record_monitoring_threshold`); None: ``threshold``.
    """

    kind: str
    estimator: Any
    image_estimator: Any
    settings: SecondLookConfig
    merge_distance: float
    threshold: float
    validation: Mapping[str, Any]
    monitoring_threshold: float | None = None

    def image_score(self, features: np.ndarray) -> np.ndarray:
        """(n,) the image model's probability of a CMB for (n, len(FEATURES)) features."""
        features = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURES))
        if not len(features):
            return np.zeros(0)
        return self.image_estimator.predict_proba(features[:, len(NETWORK_FEATURES):])[:, 1]

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n,) probability of a CMB for (n, len(FEATURES)) features: the combiner of the image model's score."""
        features = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURES))
        if not len(features):
            return np.zeros(0)
        return self.estimator.predict_proba(stack_scores(self.image_score(features), features))[:, 1]


@dataclass(frozen=True)
class Detections:
    """The lesions of one volume and how they were found."""

    lesions: Lesions  # the detected CMBs (labels, centroids, sizes, the network's peak probability)
    scores: np.ndarray  # (n,) the second look's score of each lesion (the network's peak for one stage)
    n_candidates: int  # candidates looked at twice (0 for one stage)


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
    """(n, len(FEATURES)) features of each candidate (the module docstring; mm where named so).

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
        return np.zeros((0, len(FEATURES)))
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
    ])


def _blob_region(ratio: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Voxel indices (k, 3) of a blob candidate's lesion: the dark voxels of a small box connected to its peak."""
    shape = np.array(ratio.shape)
    point = np.clip(np.rint(centre).astype(int), 0, shape - 1)
    lo, hi = np.maximum(point - (2, 2, 1), 0), np.minimum(point + np.array((3, 3, 2)), shape)
    box = ratio[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    peak = float(ratio[tuple(point)])
    dark, _ = ndimage.label(box <= peak + (float(np.median(box)) - peak) / 2)
    seed = tuple(point - lo)
    own = np.argwhere(dark == dark[seed]) if dark[seed] else np.zeros((0, 3), int)
    return own + lo if len(own) else point[None]


def score_candidates(second_look: SecondLook, probability: np.ndarray, image: np.ndarray, brain: np.ndarray,
                     voxel_mm: Sequence[float], connectivity: int = 26, phase: np.ndarray | None = None
                     ) -> tuple[Candidates, np.ndarray]:
    """The candidates of one volume and their second-look scores (``phase``: its phase image, or None)."""
    s = second_look.settings
    candidates = find_candidates(probability, image, brain, voxel_mm, s.candidate_threshold, s.log_candidates,
                                 connectivity)
    return candidates, second_look.score(candidate_features(candidates, probability, brain, voxel_mm, phase))


def find_detections(probability: np.ndarray, point: OperatingPoint, brain: np.ndarray | None = None,
                    image: np.ndarray | None = None, voxel_mm: Sequence[float] | None = None,
                    second_look: SecondLook | None = None, phase: np.ndarray | None = None) -> Detections:
    """The detected CMBs of one (X, Y, Z) probability map under the lesion rule ``point``.

    One stage (``point.second_look`` is None): :func:`apply_operating_point`. Two stages: the
    candidates, scored by ``second_look`` (:func:`score_candidates`), then :func:`keep_candidates`. ``phase`` is
    the scan's phase image on its grid (:func:`cmbstudy.data.io.load_phase`), or None.

    Raises:
        ConfigError: a two-stage rule without a second look, image or voxel sizes.
    """
    if point.second_look is None:
        lesions = apply_operating_point(probability, point, brain)
        return Detections(lesions, lesions.max_prob, 0)
    if second_look is None or image is None or voxel_mm is None or brain is None:
        raise ConfigError("a two-stage lesion rule needs the second look, the image, its brain mask and voxel "
                          "sizes: pass them, or use the single-stage rule (--single-stage)")
    candidates, scores = score_candidates(second_look, probability, image, brain, voxel_mm, point.connectivity,
                                          phase)
    return keep_candidates(candidates, scores, probability, point, second_look.merge_distance)


def keep_candidates(candidates: Candidates, scores: np.ndarray, probability: np.ndarray, point: OperatingPoint,
                    merge_distance: float) -> Detections:
    """The lesions of scored candidates under the two-stage rule ``point``.

    Candidates scored at or above ``point.second_look`` are kept, the best of those within ``merge_distance``
    (a network candidate keeps its component, a blob the dark voxels around its peak), numbered in candidate
    order. Candidates of any size: ``point.min_voxels`` is the single stage's rule, not this one's, as the
    second look's threshold is chosen (:func:`cmbstudy.training.second_look.best_threshold`) and as the
    candidates are found (a blob where the network has a component is that component, so a size rule on
    components would drop a small CMB however the second look scored it). Scoring once and keeping at
    several thresholds gives what :func:`find_detections` gives at each.
    """
    keep = keep_best(candidates.centres, scores, point.second_look, merge_distance)
    labels = np.zeros(np.shape(probability), dtype=np.int32)
    centroids, n_voxels, peaks = [], [], []
    kept = []
    for i in keep:  # the network's components first (they come first), then each blob's free dark voxels
        if candidates.from_network[i]:
            region = np.argwhere(candidates.network.labels == candidates.component[i])
        else:
            region = _blob_region(candidates.ratio, candidates.centres[i])
            region = region[labels[tuple(region.T)] == 0]
            if not len(region):  # wholly on a lesion already kept: the same lesion
                continue
        kept.append(i)
        labels[tuple(region.T)] = len(kept)
        centroids.append(region.mean(axis=0))
        n_voxels.append(len(region))
        peaks.append(float(np.asarray(probability)[tuple(region.T)].max()))
    lesions = Lesions(labels, np.asarray(centroids, float).reshape(-1, 3), np.asarray(n_voxels, np.int64),
                      np.asarray(peaks, float))
    return Detections(lesions, scores[np.asarray(kept, dtype=int)], candidates.n)


def _sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_second_look(second_look: SecondLook, path: Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``second_look`` to ``path`` (joblib) with a JSON sidecar: settings, scores, versions, sha256."""
    import io

    import joblib
    import sklearn

    buffer = io.BytesIO()
    joblib.dump({"format": _FORMAT, "kind": second_look.kind, "estimator": second_look.estimator,
                 "image_estimator": second_look.image_estimator}, buffer)
    data = buffer.getvalue()
    write_atomically(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    write_json(_sidecar(path), {
        "format": _FORMAT, "kind": second_look.kind, "features": list(FEATURES),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(second_look.settings).items()},
        "merge_distance": second_look.merge_distance, "threshold": second_look.threshold,
        "validation": dict(second_look.validation),
        "scikit_learn": sklearn.__version__, "sha256": hashlib.sha256(data).hexdigest(),
        **({"provenance": dict(provenance)} if provenance else {}),
    })
    return Path(path)


def load_second_look(path: Path) -> SecondLook:
    """Read a second look written by :func:`save_second_look`; the file must match its sidecar's sha256.

    The estimator is a pickle (joblib), so it is loaded only when its bytes are the ones its sidecar names.

    Raises:
        InputError: a missing or altered file, another format, or features the package no longer computes.
    """
    import io

    import joblib
    import sklearn

    path = Path(path)
    if not path.is_file() or not _sidecar(path).is_file():
        raise InputError(f"second look {path} (and its {_sidecar(path).name}) not found: retrain the run, "
                         "or detect with --single-stage")
    info = json.loads(_sidecar(path).read_text())
    data = path.read_bytes()
    if info.get("format") != _FORMAT or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise InputError(f"second look {path} does not match its {_sidecar(path).name} (another format, or the file "
                         "was altered): regenerate it")
    if tuple(info.get("features", ())) != FEATURES:
        raise InputError(f"second look {path} was trained on other features than this version computes: regenerate it")
    if info.get("scikit_learn") != sklearn.__version__:
        warnings.warn(f"second look {path} was written with scikit-learn {info.get('scikit_learn')}, this is "
                      f"{sklearn.__version__}: regenerate it if its scores look wrong", stacklevel=2)
    try:
        stored = joblib.load(io.BytesIO(data))
        settings = SecondLookConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                                       for k, v in info["settings"].items()})
        monitoring = info.get("monitoring", {}).get("threshold")
        return SecondLook(stored["kind"], stored["estimator"], stored["image_estimator"], settings,
                          float(info["merge_distance"]), float(info["threshold"]), info.get("validation", {}),
                          None if monitoring is None else float(monitoring))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"second look {path} lacks {exc} or holds it in another form: regenerate it") from exc
