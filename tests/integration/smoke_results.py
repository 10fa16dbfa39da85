"""The smoke study's numbers as one flat table, to check that a change of code leaves them as they were.

``python tests/integration/smoke_results.py RESULTS OUT.tsv`` writes the table of a results folder
made by ``cmbstudy study --profile smoke`` (regenerate ``data/smoke_results.tsv`` so when a change
is meant to change the numbers, and say why in the commit). The table reads files only and imports
nothing of cmbstudy, so it reads the results of any version of the package.

What it holds, per key: every number glued into a notebook; every run's test-set evaluation (pooled
and per-subject counts, scores, intervals, FROC sensitivities, under both rules where both were
made), its operating point, epochs and parameters; its training loss and samples of each kind per
epoch; the mean and maximum of its predicted probabilities; and per subject of both synthetic
cohorts its CMB count and the mean and SD of its image. Floats are kept to 6 significant digits, the
values that come straight out of training (losses, operating points, the mean probability) to 4, and
a run's largest probability to 3: the same seed gives the same numbers on one machine, while other
CPUs round their kernels differently in the last bits, and a network trained on them ends with
slightly other weights. So two tables are compared by :func:`agrees`: a number agrees with its
stored value when they differ by at most one unit in the last digit kept (a value that lies near a
half of that digit is kept on either side of it on two machines of one kind: a tsuchida2024 run's
largest probability 0.89735, kept to 4 digits then, was 0.8973 on one and 0.8974 on another), and a
count only when it is equal. The largest probability is the one voxel where the network is surest,
the value that the weights' last bits move most: with torch and oneDNN held to AVX2 kernels
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``) on a machine with AVX-512, every other key
agreed within one unit of its 4th or 6th digit, and the nnunet run's largest probability was 0.09454
against 0.09452, two units of the 4th; held to its 3rd digit, it agrees.

Left out: times and devices, glued objects (styled tables, whose text is a repr with a memory
address; the numbers in them are glued or stored on their own), and the Grad-CAM focus of notebook 10. The smoke networks train for
two epochs, so their Grad-CAM maps sit near zero and flip sign under weight differences of 1e-11,
which two identical runs can show; at the quick profile the focus is a result, at smoke it is noise.

Verdicts are held by the numbers they come from. Each claim of ``results/claims/`` is a key with its
verdict, estimate and interval, except the Grad-CAM claim, whose interval is drawn from that noise
(on one machine of this kind it touched zero, on another not, and its verdict flipped). The
abstract's verdict counts, and the sentence of its text that gives them, are counts of those
verdicts: they are not stored, and :func:`verdict_counts` lets a test check that the abstract
counts exactly the claims it was given.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

# glued values that measure time, name the machine, or are the Grad-CAM focus of a 2-epoch network
_VOLATILE = ("second", "minute", "device", "time", "focus_with", "focus_without")
# a glued object (a styled table) has no text of its own, only its repr with a memory address
_OBJECT_REPR = re.compile(r"^<.* at 0x[0-9a-f]+>$")
# claim files whose numbers are noise at the smoke profile (the Grad-CAM focus, above)
_VOLATILE_CLAIMS = ("gradcam",)
# the abstract's glued verdict counts are counts of the claim files' verdicts (checked by verdict_counts)
_VERDICT_COUNTS = ("n_replicates", "n_not", "n_cannot")
_COUNTS_SENTENCE = re.compile(r" Of \d+ claims? of the paper, [^.]*\.")
_DIGITS = 6
_TRAINED_DIGITS = 4
# the keys of values straight out of training, which :func:`collect` keeps to _TRAINED_DIGITS
_TRAINED_KEY = re.compile(r"\.operating_point\.|\.history\.\d+\.train_loss$|\.probability\.mean$")
_PEAK_DIGITS = 3
# a run's largest predicted probability, kept to _PEAK_DIGITS (the module docstring)
_PEAK_KEY = re.compile(r"\.probability\.max$")
_INTEGER = re.compile(r"^-?\d+$")


def _number(value: object, digits: int = _DIGITS) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _kept_digits(key: str) -> int:
    """The significant digits kept of a run's value under ``key`` (the module docstring)."""
    if _PEAK_KEY.search(key):
        return _PEAK_DIGITS
    return _TRAINED_DIGITS if _TRAINED_KEY.search(key) else _DIGITS


def _glued_number(text: str) -> str:
    try:
        return _number(float(text))
    except ValueError:
        return text


def _flatten(prefix: str, value: object, rows: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(f"{prefix}.{key}", value[key], rows)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(f"{prefix}[{i}]", item, rows)
    else:
        rows[prefix] = _number(value, _kept_digits(prefix))


def _glued(path: Path) -> dict[str, str]:
    nb = json.loads(path.read_text())
    out = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook", {})
            name = meta.get("name")
            if name and not any(word in name for word in _VOLATILE):
                text = "".join(output["data"].get(meta.get("mime_prefix", "") + "text/plain", ""))
                if not _OBJECT_REPR.match(text):
                    out[name] = _glued_number(text)
    return out


def _abstract(glued: dict[str, str]) -> dict[str, str]:
    out = {k: v for k, v in glued.items() if k not in _VERDICT_COUNTS}
    if "abstract_text" in out:
        out["abstract_text"] = _COUNTS_SENTENCE.sub("", out["abstract_text"])
    return out


def _claims(results: Path, rows: dict[str, str]) -> None:
    for path in sorted((results / "claims").glob("*.json")):
        if path.stem in _VOLATILE_CLAIMS:
            continue
        for i, claim in enumerate(json.loads(path.read_text())):
            for key in ("verdict", "estimate", "ci_low", "ci_high"):
                rows[f"claim.{path.stem}[{i}].{key}"] = _number(claim[key])


def verdict_counts(results: Path) -> tuple[dict[str, int], dict[str, int]]:
    """The abstract's glued verdict counts, and the counts of the verdicts in ``results/claims/``."""
    glued = _glued(Path(results) / "notebooks" / "14_abstract.ipynb")
    verdicts = [claim["verdict"] for path in sorted((Path(results) / "claims").glob("*.json"))
                for claim in json.loads(path.read_text())]
    counted = {"n_replicates": verdicts.count("replicates"), "n_not": verdicts.count("does not replicate"),
               "n_cannot": verdicts.count("cannot tell")}
    return {k: int(glued[k]) for k in _VERDICT_COUNTS}, counted


def _evaluation(path: Path) -> dict:
    data = json.loads(path.read_text())
    per_subject = {row["subject_id"]: {k: row[k] for k in ("n_ref", "n_pred", "n_tp", "n_fp", "n_fn")}
                   for row in data["per_subject"]}
    return {"summary": data["summary"], "per_subject": per_subject}


def _probabilities(pred_dir: Path) -> dict[str, float]:
    total, peak, voxels = 0.0, 0.0, 0
    for path in sorted(pred_dir.glob("sub-*/sub-*_desc-cmb_probseg.nii.gz")):
        data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
        total, peak, voxels = total + float(data.sum()), max(peak, float(data.max())), voxels + data.size
    return {"mean": total / voxels if voxels else float("nan"), "max": peak}


def _cohort(root: Path, rows: dict[str, str]) -> None:
    # the monitoring chapter's development pairs have the same subject names as its pairs
    prefix = "cohort.development" if root.name.endswith("-development") else "cohort"
    with open(root / "participants.tsv") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            for key in ("cmb_count", "cmb_count_baseline", "new_count"):  # the follow-up pairs have the last two
                if key in row:
                    rows[f"{prefix}.{row['participant_id']}.{key}"] = row[key]
    scans = [p for pattern in ("sub-*/anat/sub-*_T2starw.nii.gz", "sub-*/anat/sub-*_swi.nii.gz",
                               "sub-*/ses-*/anat/sub-*_T2starw.nii.gz", "sub-*/ses-*/anat/sub-*_swi.nii.gz")
             for p in sorted(root.glob(pattern))]
    for path in scans:
        data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
        name = path.name.split(".")[0]
        rows[f"{prefix}.{name}.mean"] = _number(float(data.mean()))
        rows[f"{prefix}.{name}.sd"] = _number(float(data.std()))


def collect(results: Path) -> dict[str, str]:
    """key -> value text of the numbers of a smoke study's results folder (see the module docstring)."""
    results = Path(results)
    rows: dict[str, str] = {}
    for cohort in sorted((results / "data").glob("synthetic-*")):  # the training pool, the test cohort, the pairs
        _cohort(cohort, rows)
    notebooks = sorted((results / "notebooks").glob("*.ipynb")) + sorted((results / "notebooks").glob("*/*.ipynb"))
    for path in notebooks:
        if not path.name.endswith(".failed.ipynb"):
            name = path.relative_to(results / "notebooks").with_suffix("").as_posix()
            glued = _glued(path)
            if name == "14_abstract":
                glued = _abstract(glued)
            rows.update({f"glue.{name}.{key}": value for key, value in glued.items()})
    _claims(results, rows)
    for run in sorted(p for p in (results / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in ("eval-test.json", "eval-test-valdo.json", "eval-test-2stage.json"):
            if (run / file).is_file():
                _flatten(f"run.{run.name}.{file}", _evaluation(run / file), rows)
        point = json.loads((run / "operating_point.json").read_text())
        _flatten(f"run.{run.name}.operating_point", point, rows)
        result = json.loads((run / "result.json").read_text())
        _flatten(f"run.{run.name}.result", {k: result[k] for k in ("epochs", "best_epoch", "n_params")}, rows)
        with open(run / "history.csv") as handle:
            for row in csv.DictReader(handle):
                key = f"run.{run.name}.history.{row['epoch']}.train_loss"
                rows[key] = _number(float(row["train_loss"]), _kept_digits(key))
                for column in ("crops_lesion", "crops_hard", "crops_edge", "crops_other", "hard_pool"):
                    rows[f"run.{run.name}.history.{row['epoch']}.{column}"] = row.get(column, "")
        for folder in ("pred-test",):
            if (run / folder).is_dir():
                _flatten(f"run.{run.name}.{folder}.probability", _probabilities(run / folder), rows)
    return rows


def agrees(key: str, stored: str, now: str) -> bool:
    """Whether the value ``now`` of ``key`` agrees with its ``stored`` value (the module docstring): equal text,
    or two numbers, not both integers, that differ by at most one unit in the last significant digit kept for the
    key (6; 4 for values straight out of training, 3 for a run's largest probability)."""
    if stored == now:
        return True
    if _INTEGER.match(stored) and _INTEGER.match(now):
        return False
    try:
        a, b = float(stored), float(now)
    except ValueError:
        return False
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    digits = _kept_digits(key)
    largest = max(abs(a), abs(b))
    unit = 10.0 ** (math.floor(math.log10(largest)) - digits + 1) if largest > 0 else 0.0
    return abs(a - b) <= unit * (1 + 1e-9)


def write_table(rows: dict[str, str], path: Path) -> None:
    """Write ``rows`` as a two-column TSV, sorted by key."""
    lines = ["key\tvalue"] + [f"{key}\t{value}" for key, value in sorted(rows.items())]
    Path(path).write_text("\n".join(lines) + "\n")


def read_table(path: Path) -> dict[str, str]:
    """The rows :func:`write_table` wrote."""
    lines = Path(path).read_text().splitlines()[1:]
    return dict(line.split("\t", 1) for line in lines if line)


if __name__ == "__main__":
    write_table(collect(Path(sys.argv[1])), Path(sys.argv[2]))
