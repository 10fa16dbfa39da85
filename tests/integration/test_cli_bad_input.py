"""Every `cmbstudy` entry point on bad input: exit code, one-line message, nothing left behind.

Each case calls ``cli.main`` and asserts exit status 2 (1 for the validation
table of ``data check``), a single stderr line ``cmbstudy <command>: error: ...``
naming the offending file and saying what to do, and that no output folder was
left. Oblique, anisotropic scans must work. Cases that need a model share one
tiny run trained once per module (1 epoch, smoke profile, tiny widths).
"""

from __future__ import annotations

import gzip
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # shared test helpers

from datasets_helpers import SHAPE, make_synthetic_root, phantom, write  # noqa: E402

from cmbstudy.cli import main  # noqa: E402

pytestmark = pytest.mark.slow

TINY = ["--set", "train.epochs=1", "--set", "model.widths=[4,8,8,8]", "--set", "preprocess.size=32",
        "--set", "preprocess.n4=false", "--set", "train.slices_per_epoch=4", "--set", "train.crop_size=0"]
IMAGE = "sub-001/anat/sub-001_T2starw.nii.gz"
CMB_MASK = "sub-001/anat/sub-001_label-CMB_mask.nii.gz"
BRAIN_MASK = "sub-001/anat/sub-001_label-brain_mask.nii.gz"


# ---- bad files: each writer makes ``path`` bad in one way; the pattern is the message's gist + advice

def _truncate(path: Path) -> None:
    write(path, phantom()[0])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


IMAGE_CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "text named .nii.gz": (lambda p: p.write_text("not an image\n" * 20),
                           r"is named \.nii\.gz but is not gzip-compressed: check that it is a NIfTI"),
    "gzipped text": (lambda p: p.write_bytes(gzip.compress(b"not an image\n" * 50)),
                     r"cannot be read as NIfTI .*: check the file"),
    "truncated gzip": (_truncate, r"is truncated or its gzip stream is corrupt .*: copy or export it again"),
    "4D volume": (lambda p: write(p, np.ones(SHAPE + (3,), np.float32)),
                  r"is 4D with shape \(21, 24, 9, 3\); a 3D volume is needed: extract one volume"),
    "2D image": (lambda p: write(p, np.ones(SHAPE[:2], np.float32)),
                 r"has shape \(21, 24\); a 3D volume is needed, not a 2D image"),
    "NaN voxels in the brain": (lambda p: write(p, np.where(phantom()[1], np.nan, 1.0).astype(np.float32)),
                                r"\d+ of its \d+ NaN/Inf voxels lie inside the brain mask: the scan is damaged"),
    "Inf voxels in the brain": (lambda p: write(p, np.where(phantom()[1], np.inf, 1.0).astype(np.float32)),
                                r"\d+ of its \d+ NaN/Inf voxels lie inside the brain mask: the scan is damaged"),
    "all-zero image": (lambda p: write(p, np.zeros(SHAPE, np.float32)),
                       r"is all zero: check that the right file was exported"),
}
MASK_CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "mask values 0/1/2": (lambda p: write(p, (phantom()[1] * 2).astype(np.uint8)),
                          r"holds values \{0, 2\}; a mask must hold only 0 and 1: binarise it"),
    "mask other shape": (lambda p: write(p, np.ones((21, 24, 8), np.uint8)),
                         r"has shape \(21, 24, 8\) but image has \(21, 24, 9\): .*resample the mask"),
    "mask other affine": (lambda p: write(p, phantom()[1].astype(np.uint8), np.diag([1.0, 1.0, 3.0, 1.0])),
                          r"has a different affine than image .*same voxel grid"),
}


def _oblique_affine() -> np.ndarray:
    t = np.deg2rad(25.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]]) @ np.diag(
        [0.7, 1.1, 3.5])
    affine[:3, 3] = (30.0, -10.0, 5.0)
    return affine


def _error_line(capsys: pytest.CaptureFixture[str], command: str, pattern: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"cmbstudy {command}: error: "), err[0]
    assert re.search(pattern, err[0]), err[0]
    return err[0]


# ---- shared data and model

@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def dataset(module_dir: Path) -> Path:
    root = make_synthetic_root(module_dir / "data", n_subjects=4)
    return root


@pytest.fixture(scope="module")
def run(module_dir: Path, dataset: Path) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setenv("CMBSTUDY_CACHE", str(module_dir / "cache"))
    try:
        assert main(["train", "--profile", "smoke", "--data", str(dataset), "--fold", "0",
                     "--out", str(module_dir / "run"), "--quiet", *TINY]) == 0
    finally:
        mp.undo()
    return module_dir / "run"


@pytest.fixture(scope="module")
def pred(module_dir: Path, dataset: Path, run: Path) -> Path:
    out = module_dir / "pred"
    assert main(["predict", "--run", str(run), "--data", str(dataset), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def data_copy(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CMBSTUDY_CACHE", str(tmp_path / "cache"))
    return Path(shutil.copytree(dataset, tmp_path / "data"))


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """An output path under a regular file: not writable even as root."""
    (tmp_path / "a_file").write_text("x")
    return tmp_path / "a_file" / "out"


# ---- detect

@pytest.mark.parametrize("case", ["missing", "not NIfTI", *IMAGE_CASES])
def test_detect_bad_scan(case: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scan = tmp_path / ("scan.txt" if case == "not NIfTI" else "scan.nii.gz")
    if case == "not NIfTI":
        scan.write_text("a report, not an image")
        pattern = r"scan\.txt is not a NIfTI file \(\.nii or \.nii\.gz\): convert it first"
    elif case == "missing":
        pattern = r"scan\.nii\.gz does not exist: check the path"
    else:
        writer, pattern = IMAGE_CASES[case]
        writer(scan)
    out = tmp_path / "out"
    assert main(["detect", str(scan), "--model", str(run), "--out", str(out), "--quiet"]) == 2
    line = _error_line(capsys, "detect", pattern)
    assert "scan.txt" in line or "scan.nii.gz" in line
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("case", list(MASK_CASES))
def test_detect_bad_brain_mask(case: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scan = write(tmp_path / "scan.nii.gz", phantom()[0])
    mask = tmp_path / "brain.nii.gz"
    writer, pattern = MASK_CASES[case]
    writer(mask)
    out = tmp_path / "out"
    assert main(["detect", str(scan), "--model", str(run), "--brain-mask", str(mask), "--out", str(out),
                 "--quiet"]) == 2
    assert "brain.nii.gz" in _error_line(capsys, "detect", pattern)
    assert not out.exists()


def test_detect_oblique_anisotropic_works(run: Path, tmp_path: Path) -> None:
    affine = _oblique_affine()
    scan = write(tmp_path / "sub-9_T2starw.nii.gz", phantom()[0], affine)
    out = tmp_path / "out"
    assert main(["detect", str(scan), "--model", str(run), "--out", str(out), "--quiet", "--threshold", "0.01"]) == 0
    for kind in ("dseg", "probseg"):
        img = nib.load(out / "sub-9" / "anat" / f"sub-9_desc-cmb_{kind}.nii.gz")
        assert img.shape == SHAPE
        np.testing.assert_allclose(img.affine, affine, atol=1e-5)


def test_detect_outputs(run: Path, tmp_path: Path, blocked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scan = write(tmp_path / "scan.nii.gz", phantom()[0])
    assert main(["detect", str(scan), "--model", str(run), "--out", str(blocked), "--quiet"]) == 2
    _error_line(capsys, "detect", r"output folder .*a_file/out cannot be created: .*a_file is a file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("results")
    assert main(["detect", str(scan), "--model", str(run), "--out", str(out), "--quiet"]) == 2
    _error_line(capsys, "detect", r"output folder .*out already holds results: .*pass --overwrite")
    assert (out / "previous.txt").is_file()
    assert main(["detect", str(scan), "--model", str(run), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert not (out / "previous.txt").exists()


def test_detect_missing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    scan = write(tmp_path / "scan.nii.gz", phantom()[0])
    monkeypatch.setattr("cmbstudy.inference.model_store.packaged_model_path", lambda: None)
    assert main(["detect", str(scan), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    _error_line(capsys, "detect", r"no model given and no packaged model found: pass --model RUN")
    assert main(["detect", str(scan), "--model", str(tmp_path / "norun"), "--out", str(tmp_path / "out")]) == 2
    _error_line(capsys, "detect", r"model .*norun does not exist: give a run folder")
    assert not (tmp_path / "out").exists()


# ---- data check

@pytest.mark.parametrize("case", [*IMAGE_CASES, *MASK_CASES])
def test_data_check_bad_file(case: str, data_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {**IMAGE_CASES, **MASK_CASES}
    target = data_copy / (CMB_MASK if case in MASK_CASES else IMAGE)
    cases[case][0](target)
    assert main(["data", "check", str(data_copy)]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if target.name in line and " error " in line)
    assert row.split()[0] == "001"
    assert out.splitlines()[-1].startswith("FAILED")


def test_data_check_oblique_works(data_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    affine = _oblique_affine()
    for name in (IMAGE, CMB_MASK, BRAIN_MASK, "sub-001/anat/sub-001_part-phase_T2starw.nii.gz"):
        img = nib.load(data_copy / name)
        write(data_copy / name, np.asarray(img.dataobj), affine)
    assert main(["data", "check", str(data_copy)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK")


def test_data_check_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    _error_line(capsys, "data check", r"dataset root .*nowhere does not exist: check the path")


# ---- train / predict / evaluate on a dataset with one bad file

def _command(entry: str, data: Path, out: Path, run: Path) -> list[str]:
    if entry == "train":
        return ["train", "--profile", "smoke", "--data", str(data), "--fold", "0", "--out", str(out), "--quiet", *TINY]
    return ["predict", "--run", str(run), "--data", str(data), "--out", str(out), "--quiet"]


@pytest.mark.parametrize("entry", ["train", "predict"])
@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c != "gzipped text"] + list(MASK_CASES))
def test_bad_file_in_dataset(entry: str, case: str, data_copy: Path, run: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    cases = {**IMAGE_CASES, **MASK_CASES}
    target = data_copy / (CMB_MASK if case in MASK_CASES else IMAGE)
    writer, pattern = cases[case]
    writer(target)
    out = tmp_path / "out"
    assert main(_command(entry, data_copy, out, run)) == 2
    assert target.name in _error_line(capsys, entry, pattern)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_predict_oblique_anisotropic_works(data_copy: Path, run: Path, tmp_path: Path) -> None:
    affine = _oblique_affine()
    for name in (IMAGE, CMB_MASK, BRAIN_MASK):
        write(data_copy / name, np.asarray(nib.load(data_copy / name).dataobj), affine)
    out = tmp_path / "out"
    assert main(_command("predict", data_copy, out, run)) == 0
    prob = nib.load(out / "sub-001" / "sub-001_desc-cmb_probseg.nii.gz")
    assert prob.shape == SHAPE
    np.testing.assert_allclose(prob.affine, affine, atol=1e-5)


@pytest.mark.parametrize("entry", ["train", "predict", "evaluate"])
def test_missing_dataset_root(entry: str, run: Path, pred: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    base = {"train": ["train", "--fold", "0", "--out", str(out), "--quiet"],
            "predict": ["predict", "--run", str(run), "--out", str(out), "--quiet"],
            "evaluate": ["evaluate", "--pred", str(pred)]}[entry]
    flag = "--ref" if entry == "evaluate" else "--data"
    assert main(base) == 2  # CMBSTUDY_DATA is unset by conftest
    _error_line(capsys, entry, r"no dataset root given: pass --data ROOT or set CMBSTUDY_DATA=ROOT")
    assert main([*base, flag, str(tmp_path / "nowhere")]) == 2
    _error_line(capsys, entry, r"dataset root .*nowhere is not a folder: check --data or \$CMBSTUDY_DATA")
    assert not out.exists()


@pytest.mark.parametrize("entry", ["train", "predict", "synth", "study"])
def test_output_not_writable(entry: str, dataset: Path, run: Path, blocked: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    args = {"synth": ["synth", "--profile", "smoke", "--out", str(blocked), "--quiet"],
            "study": ["study", "--profile", "smoke", "--out", str(blocked), "--no-book", "--quiet"]}
    command = args.get(entry) or _command(entry, dataset, blocked, run)
    assert main(command) == 2
    _error_line(capsys, entry, r"a_file/out cannot be created: .*a_file is a file, not a folder")
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.mark.parametrize("entry", ["train", "predict", "synth"])
def test_output_holds_results(entry: str, dataset: Path, run: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("results")
    command = ["synth", "--profile", "smoke", "--out", str(out), "--quiet"] if entry == "synth" else _command(
        entry, dataset, out, run)
    assert main(command) == 2
    _error_line(capsys, entry, r"output folder .*out already holds results: choose another --out or pass --overwrite")
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


def test_evaluate_bad_inputs(dataset: Path, pred: Path, data_copy: Path, tmp_path: Path, blocked: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--pred", str(tmp_path / "nopred"), "--ref", str(dataset)]) == 2
    _error_line(capsys, "evaluate", r"prediction folder .*nopred does not exist: run `cmbstudy predict")
    MASK_CASES["mask values 0/1/2"][0](data_copy / CMB_MASK)
    assert main(["evaluate", "--pred", str(pred), "--ref", str(data_copy), "--quiet"]) == 2
    _error_line(capsys, "evaluate", r"sub-001_label-CMB_mask\.nii\.gz holds values \{0, 2\}.*binarise it")
    write(data_copy / CMB_MASK, np.zeros((21, 24, 8), np.uint8))
    assert main(["evaluate", "--pred", str(pred), "--ref", str(data_copy), "--quiet"]) == 2
    _error_line(capsys, "evaluate", r"prediction .*sub-001_desc-cmb_probseg\.nii\.gz.* has shape \(21, 24, 9\)")
    assert main(["evaluate", "--pred", str(pred), "--ref", str(dataset), "--json", str(blocked), "--quiet"]) == 2
    _error_line(capsys, "evaluate", r"JSON output .*a_file/out cannot be written .*: choose another location")


def test_study_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert main(["study", "--profile", "smoke", "--data", str(tmp_path / "nowhere"), "--out", str(out),
                 "--no-book"]) == 2
    _error_line(capsys, "study", r"dataset root .*nowhere is not a folder: check --data")
    assert not out.exists()
