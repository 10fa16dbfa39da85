"""The synthetic cohort: subjects, burden categories, sites, and the files on disk.

Layout (the BIDS-like layout :mod:`cmbstudy.data.datasets` reads): ``dataset_description.json``,
``participants.tsv`` and per subject ``anat/`` with the magnitude image, the
high-pass phase, the CMB mask, the brain mask, the mimic label map and
``lesions.tsv``.  Same cmbstudy version + profile + seed give byte-identical
files: every draw comes from ``numpy.random.SeedSequence(seed)`` children (one
per subject) and NIfTI gzip streams are written with mtime 0 and no file name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import __version__, available_cores
from ..config import Profile, SynthConfig, load_profile, profile_to_dict
from ..data.aria_h import ARIA_H_CATEGORIES, aria_h_category
from ..data.datasets import SMALL_DIAMETER_MM, load_participants, load_subjects
from ..data.io import atomic_output_dir, check_output_dir, save_nifti
from ..errors import ConfigError
from ..workers import run_each
from .acquisition import SITES, Site, make_geometry
from .anatomy import load_template_space
from .phantom import SubjectScan, simulate_subject

__all__ = ["PAPER_TEST_CATEGORY_COUNTS", "TEST_LABEL_PREFIX", "CohortSummary", "cohort_tables",
           "allocate_categories", "draw_cmb_count", "validate_synth_config", "make_subject", "WORKER_START_SECONDS",
           "simulate_each", "make_cohort", "make_test_cohort"]

#: Label prefix of the test cohort's subjects (``sub-test001``, ...).
TEST_LABEL_PREFIX = "test"
# the ARIA-H spread of the paper's 72-subject test set (the row sums of its Table 6)
PAPER_TEST_CATEGORY_COUNTS: dict[str, int] = {"0": 8, "1-4": 50, "5-9": 9, ">=10": 5}
SLAB_CENTER_MM: tuple[float, float, float] = (0.0, -18.0, 14.0)  # scan centre in subject mm (MNI-like)


@dataclass(frozen=True)
class CohortSummary:
    """What :func:`make_cohort` wrote."""

    root: Path
    n_subjects: int
    categories: dict[str, int]  # ARIA-H category -> subjects
    n_cmb: int  # CMBs in the whole cohort
    sites: dict[str, int] = field(default_factory=dict)  # site -> subjects
    seconds: float = 0.0

    @property
    def subjects_per_second(self) -> float:
        return self.n_subjects / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        cats = ", ".join(f"{k}: {v}" for k, v in self.categories.items())
        sites = ", ".join(f"{k}: {v}" for k, v in self.sites.items())
        return (f"synthetic cohort {self.root}\n  subjects: {self.n_subjects} ({self.n_cmb} CMBs)\n"
                f"  ARIA-H categories: {cats}\n  sites: {sites}\n"
                f"  {self.seconds:.1f} s, {self.subjects_per_second:.2f} subjects/s")


def allocate_categories(n: int, rng: np.random.Generator) -> list[str]:
    """ARIA-H categories for ``n`` subjects in the paper's test-set proportions (largest remainder), shuffled."""
    total = sum(PAPER_TEST_CATEGORY_COUNTS.values())
    quota = np.array([n * c / total for c in PAPER_TEST_CATEGORY_COUNTS.values()])
    counts = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    cats = [c for c, k in zip(ARIA_H_CATEGORIES, counts) for _ in range(k)]
    return [cats[i] for i in rng.permutation(n)]


def draw_cmb_count(category: str, rng: np.random.Generator) -> int:
    """CMB count of a subject in ``category``: 0; 1-4, 5-9 uniform; >=10: 10-18."""
    lo, hi = {"0": (0, 0), "1-4": (1, 4), "5-9": (5, 9), ">=10": (10, 18)}[category]
    return int(rng.integers(lo, hi + 1))


def validate_synth_config(cfg: SynthConfig, n_subjects: int) -> None:
    """Raise :class:`ConfigError` naming the first bad synthesis parameter."""
    checks = [
        (n_subjects >= 1, f"n_subjects {n_subjects} must be at least 1"),
        (len(cfg.matrix) == 2 and min(cfg.matrix) >= 8, f"synth.matrix {cfg.matrix} must be two sizes >= 8"),
        (cfg.voxel_mm > 0, f"synth.voxel_mm {cfg.voxel_mm} must be > 0"),
        (cfg.slab_mm > 0, f"synth.slab_mm {cfg.slab_mm} must be > 0"),
        (cfg.supersample >= 1, f"synth.supersample {cfg.supersample} must be >= 1"),
        (0.0 <= cfg.swi_fraction <= 1.0, f"synth.swi_fraction {cfg.swi_fraction} must be in [0, 1]"),
        (cfg.template_resolution in (1, 2), f"synth.template_resolution {cfg.template_resolution} must be 1 or 2"),
        (cfg.mimic_scale >= 0, f"synth.mimic_scale {cfg.mimic_scale} must be >= 0"),
        (cfg.snr_scale > 0, f"synth.snr_scale {cfg.snr_scale} must be > 0"),
        (cfg.cmb_chi_scale > 0, f"synth.cmb_chi_scale {cfg.cmb_chi_scale} must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message + ": fix the profile or the command-line value")


def _sites_for(n: int, swi_fraction: float, rng: np.random.Generator) -> list[Site]:
    gre = [s for s in SITES if s.modality == "gre"]
    swi = [s for s in SITES if s.modality == "swi"]
    n_swi = int(round(n * swi_fraction))
    is_swi = np.zeros(n, bool)
    is_swi[rng.permutation(n)[:n_swi]] = True
    return [swi[int(rng.integers(len(swi)))] if f else gre[int(rng.integers(len(gre)))] for f in is_swi]


def make_subject(cfg: SynthConfig, site: Site, n_cmb: int, seed: np.random.SeedSequence) -> SubjectScan:
    """Simulate one subject of the cohort at ``site`` with ``n_cmb`` CMBs."""
    geom = make_geometry(cfg.matrix, cfg.voxel_mm * site.inplane_factor, site.slice_mm, cfg.slab_mm,
                         SLAB_CENTER_MM, cfg.supersample)
    return simulate_subject(load_template_space(cfg.template_resolution), geom, site, n_cmb,
                            np.random.default_rng(seed), cfg.mimic_scale, cfg.snr_scale, cfg.cmb_chi_scale)


def _lesion_table(scan: SubjectScan) -> pd.DataFrame:
    grid = scan.geometry.scan
    rows = []
    for i, src in enumerate(scan.cmbs, start=1):
        vox = grid.to_index(np.array(src.center_mm)[None])[0]
        rows.append({"lesion_id": i, "x_vox": vox[0], "y_vox": vox[1], "z_vox": vox[2],
                     "x_mm": src.center_mm[0], "y_mm": src.center_mm[1], "z_mm": src.center_mm[2],
                     "diameter_mm": src.diameter_mm, "chi_ppm": src.chi_ppm, "location": src.location,
                     "small": src.diameter_mm <= SMALL_DIAMETER_MM})
    cols = ["lesion_id", "x_vox", "y_vox", "z_vox", "x_mm", "y_mm", "z_mm", "diameter_mm", "chi_ppm", "location", "small"]
    return pd.DataFrame(rows, columns=cols)


def _write_subject(root: Path, label: str, site: Site, scan: SubjectScan, session: str | None = None) -> None:
    """One subject's files (``session``: under ``ses-<session>/``, the BIDS layout of a longitudinal study)."""
    anat = root / f"sub-{label}" / (f"ses-{session}" if session else "") / "anat"
    suffix = "T2starw" if site.modality == "gre" else "swi"
    base = anat / (f"sub-{label}_ses-{session}" if session else f"sub-{label}")
    aff = scan.geometry.scan.affine
    save_nifti(scan.magnitude, aff, f"{base}_{suffix}.nii.gz", np.float32)
    save_nifti(scan.phase, aff, f"{base}_part-phase_{suffix}.nii.gz", np.float32)
    save_nifti(scan.cmb_mask, aff, f"{base}_label-CMB_mask.nii.gz", np.uint8)
    save_nifti(scan.brain, aff, f"{base}_label-brain_mask.nii.gz", np.uint8)
    save_nifti(scan.mimic, aff, f"{base}_label-mimic_dseg.nii.gz", np.uint8)
    _lesion_table(scan).to_csv(f"{base}_lesions.tsv", sep="\t", index=False, float_format="%.4f")


def _simulate_and_write(root: Path, label: str, cfg: SynthConfig, site: Site, n_cmbs: int,
                        seed: np.random.SeedSequence) -> dict:
    """One subject simulated and written under ``root``; its row of ``participants.tsv`` (run in a worker)."""
    scan = make_subject(cfg, site, n_cmbs, seed)
    _write_subject(root, label, site, scan)
    sx, sy, sz = scan.geometry.scan.spacing
    return {"participant_id": f"sub-{label}", "modality": site.modality, "site": site.name,
            "b0_tesla": site.b0_tesla, "te_ms": site.te_ms, "voxel_x_mm": sx, "voxel_y_mm": sy,
            "slice_thickness_mm": sz, "cmb_count": len(scan.cmbs), "aria_h_category": aria_h_category(len(scan.cmbs))}


#: CPU seconds a spawned worker of the generator costs before its first subject (it imports the package and
#: derives the template's regions): about 5 s each on a 2-core laptop. The rest of a cohort goes to workers only
#: when it would take longer than that, alone, than split among them.
WORKER_START_SECONDS = 6.0


def simulate_each(work: Callable[..., dict], jobs: Sequence[tuple], workers: int, bar: tqdm) -> list[dict]:
    """``work(*job)`` for every job, in order: the first two here (the first also loads what every job shares),
    then the rest here as well, or over up to ``workers`` processes when the second took long enough that they
    pay for their start (:data:`WORKER_START_SECONDS`). Each job draws from its own seed, so the files are the
    same either way."""
    rows: list[dict] = []
    each = 0.0
    for job in jobs[:2]:
        start = time.perf_counter()
        rows.append(work(*job))
        each = time.perf_counter() - start
        bar.update()
    rest = list(jobs[2:])
    workers = min(workers, len(rest))
    alone = each * len(rest)
    if workers > 1 and alone - alone / workers <= WORKER_START_SECONDS:
        workers = 1  # the rest is done here sooner than workers would start
    return rows + run_each(work, rest, workers, bar)


def make_cohort(
    out: str | Path, profile: Profile | str = "quick", n_subjects: int | None = None, seed: int | None = None,
    overwrite: bool = False, progress: bool = True, label_prefix: str = "", workers: int | None = None,
) -> CohortSummary:
    """Generate the synthetic cohort into ``out`` (created atomically).

    Args:
        out: folder to create (must be absent or empty unless ``overwrite``).
        profile: a :class:`Profile` or a profile name/path; its ``synth`` section is used.
        n_subjects: subjects to simulate (None: ``profile.synth.n_subjects``).
        seed: master seed (None: ``profile.seed``).
        overwrite: replace an existing non-empty ``out``.
        progress: show a progress bar over subjects.
        label_prefix: letters before each subject's number (``"test"``: ``sub-test001``), so that
            subjects of two cohorts never share a label.
        workers: processes simulating subjects at once at most (None: this machine's cores), used only when
            the cohort is large enough to pay for their start (:func:`simulate_each`); the files are the
            same for any number.

    Raises:
        ConfigError: unknown profile or a bad parameter (nothing is written).
        OutputError: ``out`` holds results and ``overwrite`` is false, or cannot be written.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    cfg = profile.synth
    n = cfg.n_subjects if n_subjects is None else int(n_subjects)
    seed = profile.seed if seed is None else int(seed)
    validate_synth_config(cfg, n)
    if seed < 0:
        raise ConfigError(f"seed {seed} must be >= 0")
    if not label_prefix.isalnum() and label_prefix:
        raise ConfigError(f"label_prefix {label_prefix!r} must be letters and digits only (a BIDS label)")
    out = check_output_dir(Path(out), overwrite)
    start = time.perf_counter()
    master = np.random.SeedSequence(seed)
    plan_seed, *subject_seeds = master.spawn(n + 1)
    plan_rng = np.random.default_rng(plan_seed)
    categories = allocate_categories(n, plan_rng)
    counts = [draw_cmb_count(c, plan_rng) for c in categories]
    sites = _sites_for(n, cfg.swi_fraction, plan_rng)
    width = max(3, len(str(n)))
    labels = [f"{label_prefix}{i + 1:0{width}d}" for i in range(n)]
    workers = available_cores() if workers is None else max(1, int(workers))
    with atomic_output_dir(out, overwrite) as tmp:
        bar = tqdm(total=n, desc="synth", unit="subject", disable=not progress)
        jobs = [(tmp, label, cfg, site, n_cmbs, subject_seed)
                for label, site, n_cmbs, subject_seed in zip(labels, sites, counts, subject_seeds)]
        rows = simulate_each(_simulate_and_write, jobs, workers, bar)
        bar.close()
        table = pd.DataFrame(rows)
        table.to_csv(tmp / "participants.tsv", sep="\t", index=False, float_format="%.4f")
        description = {
            "Name": "cmbstudy synthetic cerebral microbleed cohort", "BIDSVersion": "1.9.0", "DatasetType": "raw",
            "GeneratedBy": [{"Name": "cmbstudy.synth", "Version": __version__}],
            "cmbstudy": {"dataset": "synthetic", "profile": profile.name, "seed": seed, "n_subjects": n,
                         "role": "test" if label_prefix == TEST_LABEL_PREFIX else "training",
                         "synth": profile_to_dict(profile)["synth"]},
        }
        (tmp / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
    seconds = time.perf_counter() - start
    cat_counts = {c: int((table["aria_h_category"] == c).sum()) for c in ARIA_H_CATEGORIES}
    return CohortSummary(out, n, cat_counts, int(table["cmb_count"].sum()),
                         {k: int(v) for k, v in table["site"].value_counts().sort_index().items()}, seconds)


def make_test_cohort(out: str | Path, profile: Profile | str = "quick", overwrite: bool = False,
                     progress: bool = True, workers: int | None = None) -> CohortSummary:
    """Generate the profile's separate test cohort into ``out``: the paper's design (section 3.1).

    ``synth.n_test_subjects`` subjects (72, the paper's test set, by default) from
    the master seed ``synth.test_seed``, with the training cohort's acquisition
    settings and the same spread over ARIA-H categories, modalities and sites;
    labels ``sub-test001``... No choice of the study (checkpoint, threshold,
    tuning) ever sees these subjects.

    Raises:
        ConfigError: ``synth.test_seed`` equals the profile's seed (the two cohorts would be the same scans).
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    if profile.synth.test_seed == profile.seed:
        raise ConfigError(
            f"synth.test_seed={profile.synth.test_seed} equals the profile seed: the test cohort would repeat "
            "the training cohort's scans; give it another seed, e.g. --set synth.test_seed="
            f"{profile.seed + 1}"
        )
    return make_cohort(out, profile, n_subjects=profile.synth.n_test_subjects, seed=profile.synth.test_seed,
                       overwrite=overwrite, progress=progress, label_prefix=TEST_LABEL_PREFIX, workers=workers)


def cohort_tables(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(subjects per ARIA-H category against the paper's test set, lesions of all subjects)."""
    root = Path(root)
    participants = load_participants(root)
    counts = participants["aria_h_category"].astype(str).value_counts()
    n = len(participants)
    total = sum(PAPER_TEST_CATEGORY_COUNTS.values())
    cats = pd.DataFrame({
        "subjects": [int(counts.get(c, 0)) for c in ARIA_H_CATEGORIES],
        "paper_test_set": [PAPER_TEST_CATEGORY_COUNTS[c] for c in ARIA_H_CATEGORIES],
        "expected_here": [round(n * PAPER_TEST_CATEGORY_COUNTS[c] / total, 1) for c in ARIA_H_CATEGORIES],
    }, index=pd.Index(ARIA_H_CATEGORIES, name="aria_h_category"))
    frames = []
    for sub in load_subjects(root):
        if "lesions" in sub.extra_paths:
            table = pd.read_csv(sub.extra_paths["lesions"], sep="\t")
            frames.append(table.assign(subject_id=sub.subject_id, site=sub.site, modality=sub.modality))
    lesions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return cats, lesions
