"""`cmbstudy data check` through cli.main: exit codes and what is printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import make_synthetic_root, write

from cmbstudy.cli import main


def test_valid_dataset_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["subject", "file", "status", "problem"]
    assert "sub-003/anat/sub-003_label-CMB_mask.nii.gz" in out
    assert out.splitlines()[-1].startswith("OK: synthetic at ")


def test_deleted_mask_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    (root / "sub-002" / "anat" / "sub-002_label-CMB_mask.nii.gz").unlink()
    assert main(["data", "check", str(root), "--dataset", "synthetic"]) == 1
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if "error" in l.split())
    assert line.split()[:3] == ["002", "sub-002/anat/sub-002_label-CMB_mask.nii.gz", "error"]
    assert "CMB mask is missing: restore sub-002_label-CMB_mask.nii.gz or remove sub-002" in line
    assert out.splitlines()[-1].startswith("FAILED: synthetic")
    assert "1 errors" in out.splitlines()[-1]


def test_4d_image_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    write(root / "sub-001" / "anat" / "sub-001_T2starw.nii.gz", np.ones((21, 24, 9, 3), np.float32))
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "is 4D with shape (21, 24, 9, 3); a 3D volume is needed" in out
    assert out.splitlines()[-1].startswith("FAILED")


def test_missing_root_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cmbstudy data check: error: dataset root ")
    assert "nowhere does not exist" in lines[0]


def test_unknown_dataset_name_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=1)
    assert main(["data", "check", str(root), "--dataset", "adni"]) == 2
    assert "unknown dataset 'adni'" in capsys.readouterr().err


def test_notes_are_written_between_the_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import tqdm

    from cmbstudy import cli

    written = []
    monkeypatch.setattr(tqdm.tqdm, "write", classmethod(lambda cls, text, file=None, **kwargs: written.append(text)))
    log = logging.getLogger("cmbstudy.inference.detect")
    try:
        cli._log_to_stderr("detect", quiet=False)
        log.info("scan 1: brain extraction given")
        cli._log_to_stderr("detect", quiet=True)  # replaces the handler: notes are left out, warnings are not
        log.info("scan 2: brain extraction given")
        log.warning("scan 3 is oblique")
    finally:
        for handler in [h for h in logging.getLogger("cmbstudy").handlers if getattr(h, "_cmbstudy_cli", False)]:
            logging.getLogger("cmbstudy").removeHandler(handler)
    assert written == ["cmbstudy detect: INFO: scan 1: brain extraction given",
                       "cmbstudy detect: WARNING: scan 3 is oblique"]
