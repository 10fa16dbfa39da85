"""MARS location of the true CMBs of a synthetic cohort: agreement with the generator and seconds per scan.

Usage::

    python benchmarks/location_agreement.py                    # makes a quick cohort of 40 (seed 11)
    python benchmarks/location_agreement.py --subjects 12 --seed 3
    python benchmarks/location_agreement.py --cohort /path/to/synthetic/cohort

Every subject's TRUE lesion centroids (``x_vox, y_vox, z_vox`` of its ``lesions.tsv``) are
located with :func:`cmbstudy.inference.location.assign_locations` from the image and its
brain mask (``--otsu``: also without the mask, on the Otsu fallback) and compared with the
table's ``location``. Printed and written to ``--out``: agreement overall, per true class and
per modality, the 3 x 3 confusion (rows: truth), and seconds per scan (registration included).

Two references: ``header`` takes the scanner mm as MNI mm without registration (the synthetic
scans are MNI-like; real scans are not); ``best affine`` (cohorts this script makes only) is
the least-squares affine fit of the true subject transform over the brain, the ceiling of any
affine registration. It re-draws each subject's transform as :func:`cmbstudy.synth.make_cohort`
does (one seed per subject, the transform drawn first) and is skipped, with the reason, when
the re-drawn transform does not reproduce the table's locations.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from cmbstudy.data.datasets import load_subjects
from cmbstudy.inference.location import (
    MARS_REGIONS,
    UNKNOWN,
    assign_locations,
    compute_mars_regions,
)
from cmbstudy.synth import make_cohort
from cmbstudy.synth.anatomy import random_transform

__all__ = ["measure", "markdown_report", "main"]


def _best_affine(transform, brain: np.ndarray, affine: np.ndarray):
    """Least-squares affine (scan mm -> template mm) of the true transform over brain voxels."""
    ijk = np.argwhere(brain)[::20]
    mm = ijk @ affine[:3, :3].T + affine[:3, 3]
    coef, *_ = np.linalg.lstsq(np.c_[mm, np.ones(len(mm))], transform(mm), rcond=None)
    return lambda p: np.c_[p, np.ones(len(p))] @ coef


def measure(cohort: Path, otsu: bool = False, seed: int | None = None) -> tuple[pd.DataFrame, list[float]]:
    """One row per true lesion (subject, modality, truth, one column per method) and seconds per scan."""
    subjects = load_subjects(cohort)
    seeds = np.random.SeedSequence(seed).spawn(len(subjects) + 1)[1:] if seed is not None else None
    frames, seconds = [], []
    for i, subject in enumerate(subjects):
        table = pd.read_csv(subject.extra_paths["lesions"], sep="\t")
        image = nib.load(subject.image_path)
        brain = np.asarray(nib.load(subject.brain_mask_path).dataobj) > 0
        centroids = table[["x_vox", "y_vox", "z_vox"]].to_numpy(dtype=np.float64)
        start = time.perf_counter()
        found = assign_locations(image, centroids, brain)
        seconds.append(time.perf_counter() - start)
        scan_mm = centroids @ image.affine[:3, :3].T + image.affine[:3, 3]
        row = {"subject": subject.subject_id, "modality": subject.modality, "truth": table["location"].to_numpy(),
               "registered": np.array(found.labels, dtype=object), "header": compute_mars_regions(scan_mm)}
        if otsu:
            row["registered (otsu mask)"] = np.array(assign_locations(image, centroids).labels, dtype=object)
        if seeds is not None:
            transform = random_transform(np.random.default_rng(seeds[i]))
            if compute_mars_regions(transform(scan_mm)).tolist() != table["location"].tolist():
                print(f"best affine skipped: the re-drawn transform of sub-{subject.subject_id} does not "
                      "reproduce its locations (has make_cohort's seeding changed?)")
                seeds = None
            else:
                row["best affine"] = compute_mars_regions(_best_affine(transform, brain, image.affine)(scan_mm))
        frames.append(pd.DataFrame(row))
    rows = pd.concat(frames, ignore_index=True)
    return rows.dropna(axis=1), seconds  # a skipped reference leaves gaps: its column goes


def markdown_report(rows: pd.DataFrame, seconds: list[float], source: str) -> str:
    methods = [c for c in rows.columns if c not in ("subject", "modality", "truth")]
    n_scans = rows["subject"].nunique()
    lines = [f"# MARS location of the true CMBs: {source}", "",
             f"{len(rows)} CMBs in {n_scans} scans with lesions "
             f"({', '.join(f'{m.upper()}: {k}' for m, k in rows.groupby('modality')['subject'].nunique().items())}); "
             f"{len(seconds)} scans registered, {statistics.mean(seconds):.2f} s per scan "
             f"(median {statistics.median(seconds):.2f}, max {max(seconds):.2f}).", "",
             "| method | overall | " + " | ".join(MARS_REGIONS) + " | GRE | SWI |",
             "|---" * (4 + len(MARS_REGIONS)) + "|"]
    for method in methods:
        ok = rows[method] == rows["truth"]
        cells = [f"{ok.mean():.3f} ({ok.sum()}/{len(ok)})"]
        for key, values in [*((r, rows["truth"] == r) for r in MARS_REGIONS),
                            *((m.upper(), rows["modality"] == m) for m in ("gre", "swi"))]:
            cells.append(f"{ok[values].mean():.3f} ({ok[values].sum()}/{values.sum()})" if values.any() else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    columns = [*MARS_REGIONS, UNKNOWN]
    lines += ["", "Confusion of `registered` (rows: true location, columns: assigned):", "",
              "| true \\ assigned | " + " | ".join(columns) + " |", "|---" * (1 + len(columns)) + "|"]
    confusion = pd.crosstab(rows["truth"], rows["registered"]).reindex(index=list(MARS_REGIONS), columns=columns,
                                                                        fill_value=0)
    for region, counts in confusion.iterrows():
        lines.append(f"| {region} | " + " | ".join(str(int(v)) for v in counts) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, help="a synthetic cohort folder (default: make one)")
    parser.add_argument("--profile", default="quick", help="profile of the cohort made (default quick)")
    parser.add_argument("--subjects", type=int, default=40, help="subjects of the cohort made (default 40)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the cohort made (default 11)")
    parser.add_argument("--otsu", action="store_true", help="also locate without the brain mask (Otsu fallback)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/location_agreement.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.cohort is None:
            cohort, source = Path(tmp) / "cohort", f"{args.profile} cohort of {args.subjects}, seed {args.seed}"
            make_cohort(cohort, profile=args.profile, n_subjects=args.subjects, seed=args.seed, progress=False)
            rows, seconds = measure(cohort, args.otsu, args.seed)
        else:
            source = str(args.cohort)
            rows, seconds = measure(args.cohort, args.otsu)
    report = markdown_report(rows, seconds, source)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
