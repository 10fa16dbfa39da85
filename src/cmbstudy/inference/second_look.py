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
gradient boosting takes as such. Beside the named features, each candidate
carries its patch of the scan and of the phase (:data:`PATCH_COLUMNS` columns
after them, :mod:`cmbstudy.models.patch_net`), which a small 3D CNN scores.
Two models (:mod:`cmbstudy.training.second_look` trains them) turn these into a
score in [0, 1]: an image model on the image alone (gradient boosting on the
image features, and the patch CNN, their logits averaged), trained on the blobs
of the run's training subjects (no network is involved, so none of them is
in-sample), and a combiner of its score with the network's features, trained on
the run's validation subjects, which the network never saw. The gradient
boosting costs microseconds per candidate, the patch CNN far more, so the
boosting screens first (:func:`screened`): a blob that it gives less than
``second_look.screen_probability`` (0.001) is dropped and scores 0, and the
patch CNN and the combiner look at the rest, a few dozen of a volume's
hundreds, with the network's candidates. Candidates at or
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
import torch
from scipy import ndimage

from ..config import SecondLookConfig
from ..data.outputs import write_atomically, write_json
from ..errors import ConfigError, InputError
from ..evaluation.lesions import Lesions
from ..evaluation.operating_point import OperatingPoint, apply_operating_point
from ..models.patch_net import PatchNet
from .candidates import Candidates, find_candidates, keep_best
from .features import (FEATURES, IMAGE_COLUMNS, IMAGE_FEATURES, N_COLUMNS, NETWORK_FEATURES, PATCH_COLUMNS,
                       candidate_features, candidate_patches)

__all__ = ["FEATURES", "NETWORK_FEATURES", "IMAGE_FEATURES", "IMAGE_COLUMNS", "PATCH_COLUMNS", "N_COLUMNS",
           "stack_scores", "candidate_patches", "boosted_scores", "screened", "image_scores", "patch_logits",
           "SecondLook", "Detections", "candidate_features", "score_candidates", "find_detections", "keep_candidates",
           "save_second_look", "load_second_look", "THRESHOLDS"]

#: The second look's score thresholds that its operating points are chosen from (for one scan, and for monitoring).
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.025), 3)


def stack_scores(image_score: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(n, 4) the combiner's inputs: the image model's score (logit) and the network's features (volume as log)."""
    p = np.clip(np.asarray(image_score, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.column_stack([np.log(p / (1 - p)), features[:, 0], np.log1p(features[:, 1]), features[:, 2]])


_FORMAT = "cmbstudy second look 4"  # 4: with the patch CNN
_FORMATS = ("cmbstudy second look 3", _FORMAT)  # files of format 3 have no patch CNN and score as they did


def patch_logits(model: PatchNet, features: np.ndarray) -> np.ndarray:
    """(n,) the patch CNN's logits, averaged over the patch turned by 0, 90, 180 and 270 degrees in-plane (a CMB
    has no direction), on a CPU in batches."""
    patches = candidate_patches(features)
    if not len(patches):
        return np.zeros(0)
    model.eval()
    with torch.inference_mode():
        turns = [torch.cat([model(torch.rot90(part, k, (2, 3))) for part in torch.split(patches, 2048)])
                 for k in range(4)]
    return torch.stack(turns).mean(dim=0).double().numpy()


def boosted_scores(image_estimator: Any, features: np.ndarray) -> np.ndarray:
    """(n,) the image model's gradient boosting's probability of a CMB, on the image features of (n, :data:`N_COLUMNS`)
    candidates."""
    features = np.asarray(features, dtype=np.float64).reshape(-1, N_COLUMNS)
    if not len(features):
        return np.zeros(0)
    return image_estimator.predict_proba(features[:, IMAGE_COLUMNS])[:, 1]


def screened(features: np.ndarray, boosted: np.ndarray, screen_probability: float) -> np.ndarray:
    """(n,) bool: the candidates looked at twice, the network's and the blobs that the gradient boosting of the
    image features (``boosted``) gives at least ``screen_probability``.

    The screen is the cascade's cheap step: a volume's blob detector proposes hundreds of dark dots so that
    hardly a CMB is missed, and the boosting drops those that are plainly not one (about 5 microseconds per
    candidate on one CPU thread, against 0.4 ms for the patch CNN with its four turns); the patch CNN and the
    combiner then look at the rest. A component of the network's map always
    passes: the network has already looked at it.
    """
    features = np.asarray(features, dtype=np.float64).reshape(-1, N_COLUMNS)
    return (features[:, FEATURES.index("from_network")] > 0) | (np.asarray(boosted) >= screen_probability)


def image_scores(image_estimator: Any, patch_model: PatchNet | None, features: np.ndarray,
                 boosted: np.ndarray | None = None) -> np.ndarray:
    """(n,) the image model's probability of a CMB for (n, :data:`N_COLUMNS`) candidates: gradient boosting on the
    image features (``boosted``, where already computed), its logit averaged with the patch CNN's where there is
    one."""
    features = np.asarray(features, dtype=np.float64).reshape(-1, N_COLUMNS)
    if not len(features):
        return np.zeros(0)
    if boosted is None:
        boosted = boosted_scores(image_estimator, features)
    if patch_model is None:
        return boosted
    p = np.clip(boosted, 1e-6, 1 - 1e-6)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + patch_logits(patch_model, features)) / 2))


@dataclass(frozen=True)
class SecondLook:
    """A trained second look: its classifier and how its candidates are found.

    Attributes:
        kind: the combiner ("boosting" or "logistic"); estimator: the fitted scikit-learn combiner.
        image_estimator: the image model's gradient boosting (scikit-learn), on :data:`IMAGE_FEATURES`.
        settings: the candidates' settings it was trained with (:class:`~cmbstudy.config.SecondLookConfig`).
        merge_distance: voxels within which two kept candidates are one lesion (the match distance).
        threshold: the score at or above which a candidate is a CMB, chosen on validation subjects.
        validation: its out-of-fold validation scores, as training reported them.
        monitoring_threshold: the threshold ``monitor`` detects both scans of a pair with, where one was chosen
            on development pairs (:func:`record_monitoring_threshold`); None: ``threshold``.
        patch_model: the image model's patch CNN (:class:`~cmbstudy.models.patch_net.PatchNet`), or None (a second
            look without one, as before format 4: the image features alone).
    """

    kind: str
    estimator: Any
    image_estimator: Any
    settings: SecondLookConfig
    merge_distance: float
    threshold: float
    validation: Mapping[str, Any]
    monitoring_threshold: float | None = None
    patch_model: PatchNet | None = None

    def _past_the_screen(self, features: np.ndarray, combine: bool) -> np.ndarray:
        """(n,) the image model's score (``combine``: the combiner's of it) of each candidate that passes the screen
        (:func:`screened`), kept above 0, and 0 for each blob that it drops."""
        features = np.asarray(features, dtype=np.float64).reshape(-1, N_COLUMNS)
        scores = np.zeros(len(features))
        boosted = boosted_scores(self.image_estimator, features)
        looked = screened(features, boosted, self.settings.screen_probability)
        if looked.any():
            image = image_scores(self.image_estimator, self.patch_model, features[looked], boosted[looked])
            if combine:
                image = self.estimator.predict_proba(stack_scores(image, features[looked]))[:, 1]
            scores[looked] = np.maximum(image, np.finfo(np.float64).tiny)  # > 0: looked at
        return scores

    def image_score(self, features: np.ndarray) -> np.ndarray:
        """(n,) the image model's probability of a CMB for (n, :data:`N_COLUMNS`) candidates (:func:`image_scores`);
        0 for a blob that the screen drops (:func:`screened`)."""
        return self._past_the_screen(features, combine=False)

    def looked_at(self, features: np.ndarray) -> np.ndarray:
        """(n,) bool: the candidates that pass the screen (:func:`screened`) and are looked at twice."""
        return screened(features, boosted_scores(self.image_estimator, features), self.settings.screen_probability)

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n,) probability of a CMB for (n, :data:`N_COLUMNS`) candidates: the combiner of the image model's score;
        0 for a blob that the screen drops (:func:`screened`), and above 0 for every candidate looked at."""
        return self._past_the_screen(features, combine=True)


@dataclass(frozen=True)
class Detections:
    """The lesions of one volume and how they were found."""

    lesions: Lesions  # the detected CMBs (labels, centroids, sizes, the network's peak probability)
    scores: np.ndarray  # (n,) the second look's score of each lesion (the network's peak for one stage)
    n_candidates: int  # candidates looked at twice, past the screen (scored above 0; 0 for one stage)


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
    return Detections(lesions, scores[np.asarray(kept, dtype=int)], int(np.count_nonzero(np.asarray(scores) > 0)))


def _sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_second_look(second_look: SecondLook, path: Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``second_look`` to ``path`` (joblib) with a JSON sidecar: settings, scores, versions, sha256."""
    import io

    import joblib
    import sklearn

    buffer = io.BytesIO()
    patch_state = (None if second_look.patch_model is None else
                   {k: v.detach().cpu().numpy() for k, v in second_look.patch_model.state_dict().items()})
    joblib.dump({"format": _FORMAT, "kind": second_look.kind, "estimator": second_look.estimator,
                 "image_estimator": second_look.image_estimator, "patch_model": patch_state}, buffer)
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
    if info.get("format") not in _FORMATS or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise InputError(f"second look {path} does not match its {_sidecar(path).name} (another format, or the file "
                         "was altered): regenerate it")
    if tuple(info.get("features", ())) != FEATURES:
        raise InputError(f"second look {path} was trained on other features than this version computes: regenerate it")
    if info.get("scikit_learn") != sklearn.__version__:
        warnings.warn(f"second look {path} was written with scikit-learn {info.get('scikit_learn')}, this is "
                      f"{sklearn.__version__}: regenerate it if its scores look wrong", stacklevel=2)
    try:
        stored = joblib.load(io.BytesIO(data))
        # a second look written before the screen looked at every candidate, and scores so
        settings = SecondLookConfig(**{"screen_probability": 0.0, **{k: (tuple(v) if isinstance(v, list) else v)
                                                                      for k, v in info["settings"].items()}})
        monitoring = info.get("monitoring", {}).get("threshold")
        patch_model = None
        if stored.get("patch_model") is not None:
            patch_model = PatchNet()
            patch_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in stored["patch_model"].items()})
            patch_model.eval()
        return SecondLook(stored["kind"], stored["estimator"], stored["image_estimator"], settings,
                          float(info["merge_distance"]), float(info["threshold"]), info.get("validation", {}),
                          None if monitoring is None else float(monitoring), patch_model)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"second look {path} lacks {exc} or holds it in another form: regenerate it") from exc
