"""`torchrun --nproc_per_node=2 -m cmbstudy train` on the CPU (gloo), against the same run in one process.

Tolerance: the two runs take the same steps on the same samples, so the training
and validation losses agree to 1e-6 (relative) and the validation scores are
equal. Weights agree to within the learning rate summed over the steps: AdamW's
step is at most about ``lr`` per weight, and a weight whose gradient is within
rounding of zero (a sum taken in another order) may step the other way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_train_predict import _make_dataset

from cmbstudy.cli import main
from cmbstudy.config import load_profile
from cmbstudy.data.run_folder import RUN_FILES
from cmbstudy.errors import ConfigError
from cmbstudy.training.distributed import Distributed, ShareSampler

SETTINGS = ["--set", "train.slices_per_epoch=8", "--set", "train.batch_size=2"]


def _torchrun(args: list[str], env: dict[str, str], n: int = 2) -> subprocess.CompletedProcess:
    """``torchrun -m cmbstudy ARGS`` in ``n`` processes; fails the test with every rank's last words.

    A rank killed by a signal leaves no Python traceback: the Python stacks that
    ``PYTHONFAULTHANDLER`` prints then, and torchrun's root-cause summary, are in the
    lines without a rank prefix.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "cmbstudy", *args]
    done = subprocess.run(command, env={**env, "PYTHONFAULTHANDLER": "1"}, capture_output=True, text=True,
                          timeout=600)
    if done.returncode:
        lines = done.stderr.splitlines()
        ranks = [line for line in lines if line.startswith("[rank")][-40:]
        others = [line for line in lines if not line.startswith("[rank")]
        if len(others) > 60:
            others = [*others[:40], "...", *others[-20:]]
        pytest.fail(f"torchrun exited with {done.returncode}:\n" + "\n".join(ranks + others))
    return done


def _smoke_training(tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """A torchrun's environment (its own cache, one thread a rank) and the smoke training arguments on a tiny set."""
    data = tmp_path / "data"
    _make_dataset(data)
    env = {**os.environ, "CMBSTUDY_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("CMBSTUDY_DATA", None)
    args = ["train", "--profile", "smoke", "--data", str(data), "--fold", "0", "--device", "cpu", "--quiet", *SETTINGS]
    return env, args


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint_last.pt", map_location="cpu", weights_only=True)["model"]


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def test_share_sampler_splits_each_global_batch_in_rank_order() -> None:
    shares = [list(ShareSampler(9, 4, Distributed(rank=r, world=2))) for r in range(2)]
    assert shares == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]  # the ninth sample, an incomplete batch, is dropped
    assert list(ShareSampler(9, 4, Distributed())) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    with pytest.raises(ConfigError, match="multiple of the 3 processes"):
        ShareSampler(9, 4, Distributed(rank=0, world=3))


def _gather_in_rank(rank: int, init: str, results: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        share = torch.full((2, 3), float(rank + 1), requires_grad=True)
        place = Distributed(rank=rank, world=2)
        gathered = place.gather_batch(share, grad=True)
        labels = place.gather_batch(torch.tensor([rank, rank]), grad=False)
        (gathered * torch.arange(1.0, 5.0)[:, None]).sum().backward()  # the same loss on both ranks
        results[rank] = (type(gathered), gathered.detach().clone(), labels.clone(), share.grad.clone())
    finally:
        dist.destroy_process_group()


def test_gather_batch_is_complete_on_return_and_sends_gradients_back(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_gather_in_rank, args=(f"file://{tmp_path / 'rendezvous'}", results), nprocs=2)
        results = dict(results)
    for rank in (0, 1):
        kind, gathered, labels, grad = results[rank]
        assert kind is torch.Tensor  # waited for, not an AsyncCollectiveTensor still in flight
        assert gathered.tolist() == [[1.0] * 3] * 2 + [[2.0] * 3] * 2
        assert labels.tolist() == [0, 0, 1, 1]
        # each rank's share receives the sum over the ranks of the loss's gradient at its rows
        weights = torch.arange(1.0, 5.0)[2 * rank: 2 * rank + 2, None].expand(2, 3)
        assert torch.equal(grad, 2 * weights)


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMBSTUDY_CACHE", str(tmp_path / "cache"))
    env, common = _smoke_training(tmp_path)
    common += ["--set", "model.drop_path=0"]  # stochastic depth draws differ per rank

    single, multi = tmp_path / "runs" / "single", tmp_path / "runs" / "multi"
    torch.set_num_threads(1)
    assert main([*common, "--out", str(single)]) == 0
    done = _torchrun([*common, "--out", str(multi)], env)
    assert done.stdout.count("fold 0: rlk_unet_cbam") == 1  # rank 0 reports, once

    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["multi", "single"]
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in single.iterdir())
    assert set(RUN_FILES) <= {p.name for p in multi.iterdir()}
    one, two = (pd.read_csv(run / "history.csv") for run in (single, multi))
    assert one["epoch"].tolist() == two["epoch"].tolist() == [0, 1]
    for column in ("train_loss", "val_loss"):
        np.testing.assert_allclose(two[column], one[column], rtol=1e-6)
    for column in ("val_recall", "val_f1", "val_fp_per_subject", "crops_lesion", "crops_other", "hard_pool"):
        assert two[column].tolist() == one[column].tolist(), column
    assert json.loads((multi / "operating_point.json").read_text()) == \
        json.loads((single / "operating_point.json").read_text())
    profile = load_profile("smoke")
    steps = 2 * 8 // 2
    assert _max_difference(single, multi) <= steps * profile.train.lr


@pytest.mark.slow
def test_two_processes_resume_as_if_uninterrupted(tmp_path: Path) -> None:
    env, common = _smoke_training(tmp_path)  # with stochastic depth: every rank's random state is saved and restored
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    _torchrun([*common, "--out", str(whole)], env)
    _torchrun([*common, "--out", str(parts), "--set", "train.epochs=1"], env)
    _torchrun([*common, "--out", str(parts), "--resume"], env)
    pd.testing.assert_frame_equal(pd.read_csv(parts / "history.csv").filter(regex=r"^(?!.*seconds$)"),
                                  pd.read_csv(whole / "history.csv").filter(regex=r"^(?!.*seconds$)"))
    assert _max_difference(whole, parts) == 0.0

    refused = subprocess.run([sys.executable, "-m", "cmbstudy", *common, "--out", str(parts), "--resume"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert "written by a run in 2 process(es); resume it with as many" in refused.stderr
