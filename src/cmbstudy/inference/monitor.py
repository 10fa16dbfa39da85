"""ARIA-H monitoring: which microbleeds of a follow-up scan are new against the baseline.

``cmbstudy monitor BASELINE FOLLOWUP --out DIR``. The follow-up is registered
rigidly to the baseline (SimpleITK: Euler 3D transform, the brains' outlines
then Mattes mutual information, three resolutions); the registration is
refused when the two
scans do not look like one head afterwards (their brains overlap less than
:data:`MIN_BRAIN_DICE`, e.g. two different people).
Both scans go through the detector exactly as ``detect`` runs it
(:func:`cmbstudy.inference.detect.find_cmbs`: the same lesion rule and second
look). Then, in the baseline's space:

- a follow-up CMB with a baseline CMB within :data:`PAIR_DISTANCE_MM` is
  **persistent**;
- a follow-up CMB that the baseline's detector did not find is looked at again
  on the baseline scan at the registered place (the *paired decision*): when
  the baseline shows a dark focus there at least :data:`DARKNESS_RATIO` times
  as dark as the follow-up's (:func:`focal_darkness`), and darker than the
  baseline's own background (:func:`background_darkness`: what the measure
  gives at :data:`BACKGROUND_PERCENTILE` % of places in its brain), the CMB was
  there and the baseline's detector missed it: **persistent**; otherwise **new**;
- a baseline CMB that the follow-up's detector did not find is **persistent**
  when the follow-up shows the dark focus at that place by the same rule, else
  **not seen**.

The naive decision (new = detected on the follow-up and not on the baseline)
is kept beside it (``new_naive``), so that the study can compare the two. The
severity counts the new CMBs: none (0), mild (1-4), moderate (5-9), severe
(>= 10) (Cummings et al. 2023). The pairing and the darkness measure are
written here because no library does this; registration and resampling come
from SimpleITK (:mod:`cmbstudy.inference.rigid`), the assignment from SciPy.
Files in and out: :mod:`cmbstudy.inference.monitor_files`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from scipy import ndimage

from ..errors import ConfigError, InputError
from ..evaluation.lesions import centroids_to_mm
from ..evaluation.matching import match_paper
from ..evaluation.operating_point import OperatingPoint
from ..synth.follow_up import severity_of
from .detect import ScanDetection, find_cmbs, modality_from_name
from .model_store import DetectionModel
from .rigid import Registration, register_follow_up, to_sitk
from .second_look import keep_candidates, score_candidates

__all__ = ["PAIR_DISTANCE_MM", "DARKNESS_RATIO", "BACKGROUND_PERCENTILE", "STATUSES", "PairResult",
           "focal_darkness", "background_darkness", "pair_backgrounds", "pair_lesions",
           "monitor_pair", "pair_tables_by_threshold", "check_pair_inputs"]

#: A follow-up CMB and a baseline CMB this close (mm, in the baseline's space) are one CMB.
PAIR_DISTANCE_MM = 4.0
#: A CMB missed by one scan's detector is there when that scan's focus is at least this share as dark as the other
#: scan's, and darker than the BACKGROUND_PERCENTILE-th percentile of that scan's background (the noise of a scan
#: alone makes foci about 0.2-0.3 dark, and a faint new CMB no darker than that was called persistent).
#: Both chosen on 16 development pairs of their own seeds (5 and 11, 8 each; the study's pairs come from
#: synth.test_seed + 1), monitored by the quick study's main network at fold 0 with its second look at 0.2: of
#: ratios 0.65, 0.8, 1 and 1.25 and percentiles none, 90, 95 and 99, the best F1 of new CMBs with no false "new"
#: on either set (0.8 with 90 or 95: F1 0.853; the earlier 0.65 with no background: 0.809); of the tied two, 95,
#: the stricter.
DARKNESS_RATIO = 0.8
#: The percentile of :func:`background_darkness` that a focus must exceed to show a CMB (see DARKNESS_RATIO).
BACKGROUND_PERCENTILE = 95.0
_BACKGROUND_STEP_MM = (6.0, 6.0, 3.0)  # the grid of background places, in-plane and across slices
#: Statuses of the lesion table: persistent, new (follow-up only) and not seen (baseline only).
STATUSES = ("persistent", "new", "not seen")

def focal_darkness(image: np.ndarray, voxel: np.ndarray, voxel_mm: np.ndarray, core_mm: float = 2.0,
                   ring_mm: tuple[float, float] = (4.0, 7.0)) -> float:
    """How dark a focus ``image`` holds at ``voxel`` (``(X, Y, Z)`` array; 0 none .. 1 black).

    One minus the darkest voxel within ``core_mm`` in-plane and one slice either side, over the median of the
    in-plane ring between ``ring_mm`` on the same slices. 0 where the ring's median is not positive.
    """
    centre = np.round(np.asarray(voxel, dtype=float)).astype(int)
    if np.any(centre < 0) or np.any(centre >= image.shape):
        return 0.0
    reach = int(np.ceil(ring_mm[1] / min(voxel_mm[0], voxel_mm[1])))
    lo = np.maximum(centre - [reach, reach, 1], 0)
    hi = np.minimum(centre + [reach, reach, 1] + 1, image.shape)
    patch = image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    ix, iy = np.meshgrid(np.arange(lo[0], hi[0]) - voxel[0], np.arange(lo[1], hi[1]) - voxel[1], indexing="ij")
    radius = np.hypot(ix * voxel_mm[0], iy * voxel_mm[1])
    core = patch[radius <= core_mm]
    ring = patch[(radius >= ring_mm[0]) & (radius <= ring_mm[1])]
    if core.size == 0 or ring.size == 0:
        return 0.0
    background = float(np.median(ring))
    if background <= 0:
        return 0.0
    return float(np.clip(1.0 - core.min() / background, 0.0, 1.0))


def background_darkness(image: np.ndarray, brain: np.ndarray, voxel_mm: np.ndarray, core_mm: float = 2.0,
                        ring_mm: tuple[float, float] = (4.0, 7.0)) -> float:
    """The darkness a scan shows without a CMB: the :data:`BACKGROUND_PERCENTILE`-th percentile of
    :func:`focal_darkness` at the voxels of a regular grid (:data:`_BACKGROUND_STEP_MM`) inside ``brain``, at
    least the outer ring's radius from its edge in-plane and with a slice on either side. 0 where no such voxel
    exists.

    Noise alone makes the darkest voxel of a focus darker than its surroundings; this is how dark, for this scan.
    The same measure as :func:`focal_darkness`, computed for all the grid's voxels at once.
    """
    image, voxel_mm = np.asarray(image, dtype=np.float32), np.asarray(voxel_mm, dtype=float)
    reach = int(np.ceil(ring_mm[1] / float(voxel_mm[:2].min())))
    in_plane = ndimage.generate_binary_structure(2, 1)[:, :, None]  # the ring lies in the focus's slices
    inner = ndimage.binary_erosion(np.asarray(brain, dtype=bool), in_plane, iterations=reach + 1)
    inner[:, :, 0] = inner[:, :, -1] = False
    step = np.maximum(1, np.round(np.asarray(_BACKGROUND_STEP_MM) / voxel_mm)).astype(int)
    grid = np.zeros_like(inner)
    grid[::step[0], ::step[1], ::step[2]] = True
    places = np.argwhere(inner & grid)
    if len(places) == 0:
        return 0.0
    ix, iy = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1), indexing="ij")
    radius = np.hypot(ix * voxel_mm[0], iy * voxel_mm[1]).ravel()
    offsets = np.stack([np.repeat(ix.ravel(), 3), np.repeat(iy.ravel(), 3),
                        np.tile([-1, 0, 1], ix.size)], axis=1)
    within = np.repeat(radius, 3)
    core, ring = offsets[within <= core_mm], offsets[(within >= ring_mm[0]) & (within <= ring_mm[1])]

    def values(shifts: np.ndarray) -> np.ndarray:
        where = places[:, None, :] + shifts[None]
        return image[where[..., 0], where[..., 1], where[..., 2]]

    background = np.median(values(ring), axis=1)
    darkness = np.where(background > 0, 1.0 - values(core).min(axis=1) / np.where(background > 0, background, 1.0),
                        0.0)
    return float(np.percentile(np.clip(darkness, 0.0, 1.0), BACKGROUND_PERCENTILE))


def _shows_cmb(darkness: float, other: float, background: float) -> bool:
    """Whether a scan's focus (``darkness``) shows the CMB that the other scan shows as ``other`` dark."""
    return other > 0 and darkness >= DARKNESS_RATIO * other and darkness > background


@dataclass(frozen=True)
class PairResult:
    """What :func:`monitor_pair` found."""

    lesions: pd.DataFrame  # one row per CMB (see :func:`pair_lesions`)
    new_count: int
    severity: str
    new_count_naive: int
    registration: Registration
    baseline: ScanDetection
    followup: ScanDetection
    followup_in_baseline: np.ndarray  # the registered follow-up on the baseline's grid
    seconds: dict[str, float]
    backgrounds: tuple[float, float] = (0.0, 0.0)  # background_darkness of the baseline and the registered follow-up


def _voxel_mm(image: nib.Nifti1Image) -> np.ndarray:
    return np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0)


def _to_baseline(points: np.ndarray, followup: sitk.Image, baseline: sitk.Image,
                 transform: sitk.Transform) -> np.ndarray:
    """Follow-up voxel coordinates (n, 3) -> the baseline's voxel coordinates, through the registration."""
    inverse = transform.GetInverse()
    out = [baseline.TransformPhysicalPointToContinuousIndex(
        inverse.TransformPoint(followup.TransformContinuousIndexToPhysicalPoint([float(v) for v in p])))
        for p in points]
    return np.asarray(out, dtype=float).reshape(-1, 3)


def pair_backgrounds(base: ScanDetection, follow_in_base: np.ndarray) -> tuple[float, float]:
    """:func:`background_darkness` of the baseline and of the follow-up registered onto it, in the baseline's
    brain; the follow-up's only where its field of view reaches, with a slice to spare (the registration fills
    the rest with 0, which would read as a black focus beside it)."""
    voxel_mm, brain = _voxel_mm(base.image), base.result.brain
    reached = ndimage.binary_erosion(follow_in_base > 0, np.ones((1, 1, 3), dtype=bool))
    return (background_darkness(np.asarray(base.image.dataobj, dtype=np.float32), brain, voxel_mm),
            background_darkness(follow_in_base, brain & reached, voxel_mm))


def pair_lesions(base: ScanDetection, follow: ScanDetection, follow_in_base: np.ndarray, followup_itk: sitk.Image,
                 baseline_itk: sitk.Image, transform: sitk.Transform,
                 backgrounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """The lesion table of a pair: one row per CMB with its status (:data:`STATUSES`) and the naive one.

    ``backgrounds``: :func:`background_darkness` of the baseline and of the registered follow-up, both inside the
    baseline's brain (default: measured here).

    Columns: lesion_id, status, new_naive, detected_baseline, detected_followup, baseline_lesion and
    followup_lesion (the CMB's label in each scan's detections, 0 where that scan's detector did not find it), the
    baseline's voxel and mm
    coordinates (x/y/z_vox, x/y/z_mm: the follow-up's CMBs mapped there), the follow-up's voxel coordinates
    (fx/fy/fz_vox; empty for a baseline CMB), darkness_baseline and darkness_followup at that place.
    """
    base_img, base_arr = base.image, np.asarray(base.image.dataobj, dtype=np.float32)
    voxel_mm = _voxel_mm(base_img)
    base_c = base.lesions.centroids.reshape(-1, 3)
    follow_c = follow.lesions.centroids.reshape(-1, 3)
    follow_in_b = _to_baseline(follow_c, followup_itk, baseline_itk, transform) if len(follow_c) else np.zeros((0, 3))
    if backgrounds is None:
        backgrounds = pair_backgrounds(base, follow_in_base)
    background_b, background_f = backgrounds
    # one-to-one within PAIR_DISTANCE_MM (in mm: voxel coordinates scaled by the voxel size)
    match = match_paper(follow_in_b * voxel_mm, base_c * voxel_mm, PAIR_DISTANCE_MM)
    matched_base = {int(j): int(i) for i, j in match.pairs}
    matched_follow = {i: j for j, i in matched_base.items()}
    rows = []
    for i, (place, own) in enumerate(zip(follow_in_b, follow_c)):
        dark_b = focal_darkness(base_arr, place, voxel_mm)
        dark_f = focal_darkness(follow_in_base, place, voxel_mm)
        if i in matched_follow:
            status = "persistent"
        else:
            status = "persistent" if _shows_cmb(dark_b, dark_f, background_b) else "new"
        rows.append({"status": status, "new_naive": i not in matched_follow, "detected_baseline": i in matched_follow,
                     "detected_followup": True, "baseline_lesion": matched_follow.get(i, -1) + 1,
                     "followup_lesion": i + 1, "place": place, "follow": own, "darkness_baseline": dark_b,
                     "darkness_followup": dark_f})
    for j, place in enumerate(base_c):
        if j in matched_base:
            continue
        dark_b = focal_darkness(base_arr, place, voxel_mm)
        dark_f = focal_darkness(follow_in_base, place, voxel_mm)
        status = "persistent" if _shows_cmb(dark_f, dark_b, background_f) else "not seen"
        rows.append({"status": status, "new_naive": False, "detected_baseline": True, "detected_followup": False,
                     "baseline_lesion": j + 1, "followup_lesion": 0, "place": place, "follow": np.full(3, np.nan),
                     "darkness_baseline": dark_b, "darkness_followup": dark_f})
    columns = ["lesion_id", "status", "new_naive", "detected_baseline", "detected_followup", "baseline_lesion",
               "followup_lesion", "x_vox", "y_vox", "z_vox", "x_mm", "y_mm", "z_mm", "fx_vox", "fy_vox", "fz_vox",
               "darkness_baseline", "darkness_followup"]
    if not rows:
        return pd.DataFrame(columns=columns)
    places = np.stack([r.pop("place") for r in rows])
    follows = np.stack([r.pop("follow") for r in rows])
    table = pd.DataFrame(rows)
    table.insert(0, "lesion_id", np.arange(1, len(table) + 1))
    mm = centroids_to_mm(places, np.asarray(base_img.affine))
    for axis, name in enumerate("xyz"):
        table[f"{name}_vox"] = places[:, axis]
        table[f"{name}_mm"] = mm[:, axis]
        table[f"f{name}_vox"] = follows[:, axis]
    return table[columns]


def check_pair_inputs(baseline: Path, followup: Path, baseline_date: date | None = None,
                      followup_date: date | None = None, modality: str | None = None) -> str:
    """The pair's modality, after the checks that need no reading of the images.

    Raises:
        InputError: the same file twice, a follow-up dated before its baseline, or two modalities.
    """
    if Path(baseline).resolve() == Path(followup).resolve():
        raise InputError(f"{baseline} is given as both the baseline and the follow-up: give two sessions")
    if baseline_date is not None and followup_date is not None and followup_date < baseline_date:
        raise InputError(f"the follow-up ({followup_date}) is dated before the baseline ({baseline_date}): "
                         "swap the two scans, or check the dates")
    if modality is not None:
        return modality
    kinds = modality_from_name(Path(baseline)), modality_from_name(Path(followup))
    if kinds[0] != kinds[1]:
        raise InputError(f"the baseline is {kinds[0].upper()} ({Path(baseline).name}) and the follow-up "
                         f"{kinds[1].upper()} ({Path(followup).name}): new CMBs are counted between scans of one "
                         "modality; give --modality to override the names")
    return kinds[0]


def _detect_and_register(baseline: Path, followup: Path, model: DetectionModel, point: OperatingPoint,
                         device: torch.device, baseline_mask: Path | None, followup_mask: Path | None,
                         brain_extraction: str) -> tuple[ScanDetection, ScanDetection, sitk.Image, sitk.Image,
                                                         Registration, float]:
    """Both scans through the detector under ``point``, then the follow-up registered onto the baseline."""
    start = time.perf_counter()
    base = find_cmbs(Path(baseline), model, point, device, baseline_mask, brain_extraction)
    follow = find_cmbs(Path(followup), model, point, device, followup_mask, brain_extraction)
    detected = time.perf_counter() - start
    base_itk, follow_itk = to_sitk(base.image), to_sitk(follow.image)
    registration = register_follow_up(base_itk, follow_itk, base.result.brain, follow.result.brain)
    return base, follow, base_itk, follow_itk, registration, detected


def monitor_pair(baseline: Path, followup: Path, model: DetectionModel, device: torch.device,
                 single_stage: bool = False, baseline_mask: Path | None = None,
                 followup_mask: Path | None = None, brain_extraction: str = "auto",
                 point: OperatingPoint | None = None) -> PairResult:
    """Register, detect on both scans and pair their CMBs (see the module docstring). Writes nothing.

    ``point``: the lesion rule of both scans (default the model's, or its single stage).

    Raises:
        InputError: an unreadable scan, or a pair refused by :func:`register_follow_up`.
    """
    start = time.perf_counter()
    point = point or model.point_for(None, single_stage)
    base, follow, base_itk, follow_itk, registration, detected = _detect_and_register(
        baseline, followup, model, point, device, baseline_mask, followup_mask, brain_extraction)
    follow_in_base = registration.registered
    backgrounds = pair_backgrounds(base, follow_in_base)
    table = pair_lesions(base, follow, follow_in_base, follow_itk, base_itk, registration.transform, backgrounds)
    new = int((table["status"] == "new").sum()) if len(table) else 0
    naive = int(table["new_naive"].sum()) if len(table) else 0
    seconds = {"detection": detected, "registration": registration.seconds,
               "total": time.perf_counter() - start}
    return PairResult(table, new, severity_of(new), naive, registration, base, follow, follow_in_base, seconds,
                      backgrounds)


def pair_tables_by_threshold(baseline: Path, followup: Path, model: DetectionModel, device: torch.device,
                             thresholds: Sequence[float], baseline_mask: Path | None = None,
                             followup_mask: Path | None = None, brain_extraction: str = "auto"
                             ) -> dict[float, pd.DataFrame]:
    """The pair's lesion table (:func:`pair_lesions`) with the model's second look at each of ``thresholds``.

    Both scans are detected and registered once and their candidates scored once; each threshold then keeps
    its candidates (:func:`~cmbstudy.inference.second_look.keep_candidates`), so the tables are those
    :func:`monitor_pair` would give at each. For choosing monitoring's threshold on development pairs.

    Raises:
        ConfigError: the model has no second look. InputError: as :func:`monitor_pair`.
    """
    if model.second_look is None:
        raise ConfigError(f"{model.source} has no second look: there is no threshold of it to choose")
    point = model.point_for()
    base, follow, base_itk, follow_itk, registration, _ = _detect_and_register(
        baseline, followup, model, point, device, baseline_mask, followup_mask, brain_extraction)
    scored = [(scan, *score_candidates(model.second_look, scan.result.probability,
                                       np.asarray(scan.image.dataobj, dtype=np.float32), scan.result.brain,
                                       scan.result.voxel_mm, point.connectivity, scan.phase))
              for scan in (base, follow)]
    tables, backgrounds = {}, pair_backgrounds(base, registration.registered)
    for threshold in thresholds:
        rule = dataclasses.replace(point, second_look=float(threshold))
        kept = [dataclasses.replace(scan, lesions=keep_candidates(candidates, scores, scan.result.probability, rule,
                                                                  model.second_look.merge_distance).lesions)
                for scan, candidates, scores in scored]
        tables[float(threshold)] = pair_lesions(kept[0], kept[1], registration.registered, follow_itk, base_itk,
                                                registration.transform, backgrounds)
    return tables
