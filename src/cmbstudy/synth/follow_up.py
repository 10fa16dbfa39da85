"""Follow-up sessions: the same synthetic brain scanned twice, months apart (ARIA-H monitoring).

On anti-amyloid therapy, ARIA-H severity counts the microhaemorrhages that are
**new** on a follow-up MRI against the baseline (Cummings et al. 2023: mild
1-4 new, moderate 5-9, severe 10 or more). This module writes such pairs: for
each subject a baseline session and a follow-up of the same brain (the same
anatomy, veins, calcifications, iron and baseline CMBs), in which a drawn
number of new CMBs has appeared and the scan differs as a real follow-up does:
a small rigid head motion, new noise, and for some subjects another site of
the same modality (another field strength, echo time and resolution).

Layout (BIDS sessions)::

    participants.tsv                      one row per subject: sites, motion, counts, severity
    sub-<id>/ses-baseline/anat/sub-<id>_ses-baseline_<suffix>.nii.gz (+ phase, masks, lesions.tsv)
    sub-<id>/ses-followup/anat/sub-<id>_ses-followup_<suffix>.nii.gz (+ phase, masks, lesions.tsv)

The follow-up's ``lesions.tsv`` has a column ``new`` (1 for a CMB absent at
baseline) and ``baseline_lesion_id`` (the same CMB's row at baseline, 0 for a
new one). Same version, profile and seed give byte-identical files, for any
number of worker processes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import __version__, available_cores
from ..config import Profile, SynthConfig, load_profile, profile_to_dict
from ..data.io import atomic_output_dir, check_output_dir
from ..errors import ConfigError
from .acquisition import SITES, Site, make_geometry
from .anatomy import SubjectTransform, TemplateSpace, load_template_space, random_transform
from .cohort import (SLAB_CENTER_MM, _lesion_table, _sites_for, _write_subject, allocate_categories, draw_cmb_count,
                     simulate_each)
from .phantom import SubjectScan, scan_subject, slab_z_range
from .susceptibility import AirSphere, FocalSource, Tube, make_venous_tree, place_air, place_calcifications, place_cmbs

__all__ = ["SESSIONS", "SEVERITIES", "SEVERITY_RULE", "severity_of", "HeadMotion", "FollowUpSettings", "simulate_pair",
           "make_follow_up_cohort"]

#: The two sessions of a pair, in time order (BIDS ``ses-`` labels).
SESSIONS: tuple[str, str] = ("baseline", "followup")
#: Radiographic ARIA-H severity of the new microhaemorrhages on a follow-up (Cummings et al. 2023).
SEVERITIES: tuple[str, ...] = ("none", "mild", "moderate", "severe")
#: The rule in words, for the book and the reports.
SEVERITY_RULE = "none 0, mild 1–4, moderate 5–9, severe ≥ 10 new microhaemorrhages"


def severity_of(new_count: int) -> str:
    """ARIA-H severity of ``new_count`` new microhaemorrhages: none (0), mild (1-4), moderate (5-9), severe (>= 10).

    Raises:
        ValueError: a negative or non-integer count.
    """
    if isinstance(new_count, bool) or int(new_count) != new_count or new_count < 0:
        raise ValueError(f"new CMB count {new_count!r} must be a non-negative integer")
    return "none" if new_count == 0 else "mild" if new_count <= 4 else "moderate" if new_count <= 9 else "severe"


@dataclass(frozen=True)
class FollowUpSettings:
    """How follow-ups differ from their baseline."""

    severity_shares: tuple[float, float, float, float] = (0.3, 0.4, 0.2, 0.1)  # none, mild, moderate, severe
    max_rotation_deg: float = 4.0  # each axis uniform in +-this
    max_translation_mm: float = 4.0  # each axis uniform in +-this
    site_change: float = 0.25  # share of subjects scanned at another site of the same modality

    def __post_init__(self) -> None:
        if len(self.severity_shares) != 4 or min(self.severity_shares) < 0 or sum(self.severity_shares) <= 0:
            raise ConfigError(f"severity shares {self.severity_shares}: give four non-negative shares "
                              "(none, mild, moderate, severe)")
        if self.max_rotation_deg < 0 or self.max_translation_mm < 0:
            raise ConfigError("head motion limits must be >= 0")
        if not 0.0 <= self.site_change <= 1.0:
            raise ConfigError(f"site_change {self.site_change} must lie in [0, 1]")


@dataclass(frozen=True)
class HeadMotion:
    """The subject transform of a head moved rigidly in the scanner: ``x -> R (x - c) + c + t`` in subject mm.

    Wraps a :class:`~cmbstudy.synth.anatomy.SubjectTransform` (which maps scanner mm to template mm) so that
    the tissue maps of the moved head are warped exactly; :meth:`move` moves the drawn sources with it.
    """

    base: SubjectTransform
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,) mm
    center: np.ndarray  # (3,) mm, the rotation's centre

    @property
    def atrophy(self) -> float:
        return self.base.atrophy

    def move(self, points_mm: np.ndarray) -> np.ndarray:
        """Where (N, 3) points of the head at baseline lie after the motion."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return (p - self.center) @ self.rotation.T + self.center + self.translation

    def __call__(self, points_mm: np.ndarray) -> np.ndarray:
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return self.base((p - self.center - self.translation) @ self.rotation + self.center)

    def inverse(self, points_mm: np.ndarray) -> np.ndarray:
        return self.move(self.base.inverse(points_mm))

    @property
    def rotation_deg(self) -> float:
        """The rotation's angle in degrees."""
        return float(np.degrees(np.arccos(np.clip((np.trace(self.rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(np.radians(angles_deg))
    sx, sy, sz = np.sin(np.radians(angles_deg))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _moved_sources(motion: HeadMotion, sources: list[FocalSource]) -> list[FocalSource]:
    return [dataclasses.replace(s, center_mm=tuple(float(v) for v in motion.move(np.array(s.center_mm))[0]))
            for s in sources]


@dataclass
class PairScans:
    """One subject's two sessions and which follow-up CMBs are new."""

    baseline: SubjectScan
    followup: SubjectScan
    new: list[bool]  # per follow-up CMB, in its lesion table's order
    motion: HeadMotion


def simulate_pair(
    template: TemplateSpace, cfg: SynthConfig, sites: tuple[Site, Site], n_baseline: int, n_new: int,
    seed: np.random.SeedSequence, settings: FollowUpSettings = FollowUpSettings(),
    motion: tuple[Sequence[float], Sequence[float]] | None = None,
) -> PairScans:
    """Draw one brain with ``n_baseline`` CMBs, scan it at ``sites[0]``, add ``n_new`` CMBs, move the head and
    scan it again at ``sites[1]`` with new noise.

    ``motion``: the head's rotation about x, y, z (degrees) and translation (mm); default drawn within
    ``settings``' limits.
    """
    anatomy_seed, iron_seed, base_noise, follow_noise, new_seed, motion_seed = seed.spawn(6)
    rng = np.random.default_rng(anatomy_seed)
    geoms = [make_geometry(cfg.matrix, cfg.voxel_mm * s.inplane_factor, s.slice_mm, cfg.slab_mm, SLAB_CENTER_MM,
                           cfg.supersample) for s in sites]
    transform = random_transform(rng)
    veins = make_venous_tree(template, transform, rng, int(round(40 * cfg.mimic_scale)),
                             int(round(150 * cfg.mimic_scale)))
    # both slabs cover these lesions, with a margin for the head's motion
    lo = max(slab_z_range(g)[0] for g in geoms) + settings.max_translation_mm + 2.0
    hi = min(slab_z_range(g)[1] for g in geoms) - settings.max_translation_mm - 2.0
    cmbs = place_cmbs(template, transform, rng, n_baseline, (lo, hi), veins, cfg.cmb_chi_scale)
    calcs = place_calcifications(template, transform, rng, int(rng.poisson(1.0 * cfg.mimic_scale)), (lo, hi), cmbs)
    air = place_air(template, transform, rng)
    new = place_cmbs(template, transform, np.random.default_rng(new_seed), n_new, (lo, hi), veins,
                     cfg.cmb_chi_scale, avoid=cmbs + calcs)
    baseline = scan_subject(template, transform, geoms[0], sites[0], veins, cmbs, calcs, air,
                            np.random.default_rng(iron_seed), np.random.default_rng(base_noise), cfg.snr_scale)
    motion_rng = np.random.default_rng(motion_seed)
    angles = motion_rng.uniform(-1, 1, 3) * settings.max_rotation_deg
    shift = motion_rng.uniform(-1, 1, 3) * settings.max_translation_mm
    if motion is not None:
        angles, shift = np.asarray(motion[0], dtype=float), np.asarray(motion[1], dtype=float)
    head = HeadMotion(transform, _rotation(angles), shift, np.array(SLAB_CENTER_MM))
    moved_veins = [Tube(head.move(v.points), v.radii) for v in veins]
    moved_air = [AirSphere(tuple(float(c) for c in head.move(np.array(a.center_mm))[0]), a.radius_mm) for a in air]
    followup = scan_subject(template, head, geoms[1], sites[1], moved_veins, _moved_sources(head, cmbs + new),
                            _moved_sources(head, calcs), moved_air, np.random.default_rng(iron_seed),
                            np.random.default_rng(follow_noise), cfg.snr_scale)
    return PairScans(baseline, followup, [False] * len(cmbs) + [True] * len(new), head)


def _draw_new_count(severity: str, rng: np.random.Generator) -> int:
    lo, hi = {"none": (0, 0), "mild": (1, 4), "moderate": (5, 9), "severe": (10, 14)}[severity]
    return int(rng.integers(lo, hi + 1))


def _other_site(site: Site, rng: np.random.Generator) -> Site:
    others = [s for s in SITES if s.modality == site.modality and s.name != site.name]
    return others[int(rng.integers(len(others)))] if others else site


def _simulate_and_write_pair(root: Path, label: str, cfg: SynthConfig, sites: tuple[Site, Site], n_baseline: int,
                             n_new: int, seed: np.random.SeedSequence, settings: FollowUpSettings) -> dict:
    pair = simulate_pair(load_template_space(cfg.template_resolution), cfg, sites, n_baseline, n_new, seed, settings)
    for session, site, scan in zip(SESSIONS, sites, (pair.baseline, pair.followup)):
        _write_subject(root, label, site, scan, session)
    # which follow-up CMB is which: the lesion table of the follow-up gains `new` and `baseline_lesion_id`
    table_path = root / f"sub-{label}" / f"ses-{SESSIONS[1]}" / "anat" / f"sub-{label}_ses-{SESSIONS[1]}_lesions.tsv"
    table = _lesion_table(pair.followup)
    n_base = len(pair.baseline.cmbs)
    table["new"] = [int(flag) for flag in pair.new]
    table["baseline_lesion_id"] = [0 if flag else i + 1 for i, flag in enumerate(pair.new)]
    table.to_csv(table_path, sep="\t", index=False, float_format="%.4f")
    n_new_placed = int(sum(pair.new))
    return {"participant_id": f"sub-{label}", "modality": sites[0].modality, "site_baseline": sites[0].name,
            "site_followup": sites[1].name, "te_ms_baseline": sites[0].te_ms, "te_ms_followup": sites[1].te_ms,
            "rotation_deg": round(pair.motion.rotation_deg, 3),
            "translation_mm": round(float(np.linalg.norm(pair.motion.translation)), 3),
            "cmb_count_baseline": n_base, "new_count": n_new_placed, "severity": severity_of(n_new_placed)}


def make_follow_up_cohort(
    out: str | Path, profile: Profile | str = "quick", n_subjects: int | None = None, seed: int | None = None,
    overwrite: bool = False, progress: bool = True, workers: int | None = None,
    settings: FollowUpSettings = FollowUpSettings(),
) -> pd.DataFrame:
    """Write ``n_subjects`` baseline/follow-up pairs into ``out`` (created atomically); returns participants.tsv.

    Baseline counts follow the cohort's ARIA-H spread (:func:`~cmbstudy.synth.cohort.allocate_categories`);
    the new counts follow ``settings.severity_shares``. Defaults: ``synth.n_follow_up_pairs`` subjects from the
    seed ``synth.test_seed + 1`` (a cohort of its own, never trained on).

    Raises:
        ConfigError: a bad count, seed or setting (nothing written). OutputError: ``out`` holds files and
            ``overwrite`` is false.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    cfg = profile.synth
    n = cfg.n_follow_up_pairs if n_subjects is None else int(n_subjects)
    seed = cfg.test_seed + 1 if seed is None else int(seed)
    if n < 1 or seed < 0:
        raise ConfigError(f"follow-up cohort: {n} subjects and seed {seed}; give at least 1 subject and a seed >= 0")
    out = check_output_dir(Path(out), overwrite)
    plan_seed, *subject_seeds = np.random.SeedSequence(seed).spawn(n + 1)
    plan = np.random.default_rng(plan_seed)
    baseline_counts = [draw_cmb_count(c, plan) for c in allocate_categories(n, plan)]
    severities = [SEVERITIES[int(i)] for i in plan.choice(4, size=n, p=np.divide(settings.severity_shares,
                                                                             sum(settings.severity_shares)))]
    new_counts = [_draw_new_count(s, plan) for s in severities]
    first_sites = _sites_for(n, cfg.swi_fraction, plan)
    pairs = [(site, _other_site(site, plan) if plan.random() < settings.site_change else site) for site in first_sites]
    labels = [f"{i + 1:0{max(3, len(str(n)))}d}" for i in range(n)]
    workers = max(1, available_cores() if workers is None else int(workers))
    jobs = list(zip(labels, pairs, baseline_counts, new_counts, subject_seeds))
    with atomic_output_dir(out, overwrite) as tmp:
        bar = tqdm(total=n, desc="follow-up pairs", unit="pair", disable=not progress)
        rows = simulate_each(_simulate_and_write_pair, [(tmp, label, cfg, sites, nb, nn, s, settings)
                                                        for label, sites, nb, nn, s in jobs], workers, bar)
        bar.close()
        table = pd.DataFrame(rows)
        table.to_csv(tmp / "participants.tsv", sep="\t", index=False, float_format="%.4f")
        description = {
            "Name": "cmbstudy synthetic follow-up pairs (ARIA-H monitoring)", "BIDSVersion": "1.9.0",
            "DatasetType": "raw", "GeneratedBy": [{"Name": "cmbstudy.synth", "Version": __version__}],
            "cmbstudy": {"dataset": "synthetic-follow-up", "profile": profile.name, "seed": seed, "n_subjects": n,
                         "sessions": list(SESSIONS), "follow_up": dataclasses.asdict(settings),
                         "synth": profile_to_dict(profile)["synth"]},
        }
        (tmp / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
    return table
