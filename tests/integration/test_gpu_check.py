"""benchmarks/gpu_check.sh --cpu: the GPU check's every step at tiny sizes, writing its JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_on_a_cpu_and_writes_every_number(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["mode"] == "cpu" and result["device"] == "cpu"
    eager = result["inference"]["eager"]
    assert eager["seconds_per_subject"] == pytest.approx(eager["network_seconds"] + eager["post_seconds"])
    assert eager["network_seconds"] > 0 and "compile" not in result["inference"]
    step = result["training_step"]
    assert step["tflops"] > 0 and step["forward_gflop_per_slice"] > 0 and step["share_of_peak"] is None
    fold = result["fold0"]
    assert "error" not in fold, fold.get("traceback")
    assert 0.0 <= fold["one_look"]["f1"] <= 1.0 or math.isnan(fold["one_look"]["f1"])
    assert set(fold["phases"]) >= {"cohorts", "preprocessing", "epochs", "calibration", "test_inference", "scoring"}
    assert result["total_seconds"] > 0


def test_the_gpu_check_refuses_a_machine_without_a_gpu_unless_asked_for_the_cpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--skip-fold"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no CUDA device" in done.stderr and "--cpu" in done.stderr


def test_the_gpu_check_runs_the_parts_asked_for_and_names_the_parts_it_has(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    script = str(REPO / "benchmarks" / "gpu_check.sh")
    done = subprocess.run(["bash", script, "--cpu", "--parts", "training_step"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert "training_step" in result and "inference" not in result and "fold0" not in result
    done = subprocess.run(["bash", script, "--cpu", "--parts", "training_step,fold1"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "fold1" in done.stderr and "inference, training_step, fold0" in done.stderr
