"""Training: learning-rate schedule, validation scores, best-checkpoint rule, resume equivalence."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml

from cmbstudy.config import EvalConfig, Profile, TrainConfig, profile_to_dict
from cmbstudy.errors import ConfigError, InputError, OutputError
from cmbstudy.training.loop import _better, fit, validate
from cmbstudy.training.run import train_fold
from cmbstudy.training.schedule import make_scheduler


@dataclass
class FakeVolume:
    """Preprocessed-volume stand-in whose "input grid" is the (S, S, Z) transpose."""

    subject_id: str
    image: np.ndarray  # (Z, S, S)
    brain: np.ndarray  # (Z, S, S)
    mask: np.ndarray | None  # (Z, S, S)

    def restore(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        return np.transpose(array, (1, 2, 0))

    def input_brain(self) -> np.ndarray:
        return self.restore(self.brain.astype(np.uint8), 0) > 0


class TinyNet(nn.Module):
    """Follows the models contract: train mode -> [final, aux at 1/2], eval mode -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Dropout(0.3))
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        final = self.head(self.body(x))
        if self.training:
            return [final, nn.functional.avg_pool2d(final, 2)]
        return final


class DarkOracle(nn.Module):
    """Logit +10 where the centre channel is below -2 (the dark CMB), else -10."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, 1:2] < -2.0, 10.0, -10.0)


def _volume(seed: int, centres: list[tuple[int, int, int]], z: int = 8, s: int = 24) -> FakeVolume:
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.3, size=(z, s, s)).astype(np.float32)
    zz, yy, xx = np.mgrid[:z, :s, :s]
    mask = np.zeros((z, s, s), dtype=np.uint8)
    for cz, cy, cx in centres:
        blob = (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= 1.5**2
        image[blob] = -4.0
        mask[blob] = 1
    return FakeVolume(f"{seed:03d}", image, np.ones((z, s, s), dtype=bool), mask)


def _profile(epochs: int) -> Profile:
    train = TrainConfig(
        epochs=epochs, batch_size=2, warmup_epochs=1, restart_epochs=2, slices_per_epoch=6,
        crop_size=16, val_batch_size=4, deep_supervision_weights=(0.6, 0.4),
    )
    return Profile(name="unit", seed=3, train=train, evaluation=EvalConfig())


def _lrs(cfg: TrainConfig, epochs: int) -> list[float]:
    """The learning rate of every epoch under make_scheduler (stepped once per epoch)."""
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(opt, cfg)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_schedule_values() -> None:
    # the paper's schedule, computed by hand: linear warm-up, then cosine with warm restarts
    cfg = TrainConfig(lr=1e-4, warmup_start_lr=1e-7, warmup_epochs=10, restart_epochs=20)
    lrs = _lrs(cfg, 31)
    assert lrs[0] == pytest.approx(1e-7)
    assert lrs[5] == pytest.approx(1e-7 + 0.5 * (1e-4 - 1e-7))
    assert lrs[10] == pytest.approx(1e-4)
    assert lrs[20] == pytest.approx(5e-5)  # half a period: cos(pi/2)
    assert lrs[25] == pytest.approx(1e-4 * (1 + math.cos(math.pi * 0.75)) / 2)
    assert lrs[30] == pytest.approx(1e-4)  # warm restart
    doubling = _lrs(TrainConfig(warmup_epochs=0, restart_epochs=4, restart_mult=2, lr=1.0, min_lr=0.0), 9)
    assert doubling[4] == pytest.approx(1.0)  # restart after 4
    assert doubling[8] == pytest.approx(0.5)  # half of the 8-epoch second period


def test_scheduler_matches_torch_cosine_warm_restarts_after_the_warm_up() -> None:
    cfg = TrainConfig(lr=1e-3, warmup_start_lr=1e-6, warmup_epochs=3, restart_epochs=5, restart_mult=2)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(ref_opt, T_0=5, T_mult=2, eta_min=0.0)
    for epoch, lr in enumerate(_lrs(cfg, 30)):
        if epoch < cfg.warmup_epochs:
            assert lr == pytest.approx(1e-6 + (1e-3 - 1e-6) * epoch / 3, rel=1e-9)
        else:
            assert lr == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-6)
            ref_opt.step()
            ref.step()
    with pytest.raises(ConfigError, match="warmup_start_lr"):
        make_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), TrainConfig(lr=1.0, warmup_start_lr=2.0))


def test_better_rule() -> None:
    best = {"f1": 0.5, "loss": 0.4}
    assert _better(0.6, 9.0, best)
    assert not _better(0.4, 0.1, best)
    assert _better(0.5, 0.3, best)  # tie on F1: lower loss wins
    assert not _better(0.5, 0.4, best)  # full tie: the earlier epoch stays
    assert not _better(float("nan"), 0.1, best)
    assert _better(0.0, 0.1, {"f1": float("nan"), "loss": 0.2})
    assert _better(float("nan"), float("nan"), None)


def test_validate_with_an_oracle_and_a_blind_model() -> None:
    volumes = [_volume(1, [(2, 5, 6), (5, 17, 18)]), _volume(2, [(4, 12, 7)])]
    references = [v.restore(v.mask) for v in volumes]
    profile = _profile(1)
    perfect = validate(DarkOracle(), volumes, references, profile, torch.device("cpu"))
    assert perfect["precision"] == 1.0 and perfect["recall"] == 1.0 and perfect["f1"] == 1.0
    assert perfect["fp_per_subject"] == 0.0
    # a false positive: a dark spot far from any reference lesion in the second volume
    volumes[1].image[1, 20, 20] = -4.0
    one_fp = validate(DarkOracle(), volumes, references, profile, torch.device("cpu"))
    assert one_fp["precision"] == pytest.approx(3 / 4)
    assert one_fp["fp_per_subject"] == pytest.approx(0.5)
    assert one_fp["f1"] == pytest.approx(2 * 0.75 / 1.75)


def _fit(out: Path, epochs: int, resume: bool = False) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    train = [_volume(1, [(2, 5, 6), (5, 17, 18)]), _volume(2, [(4, 12, 7)])]
    val = [_volume(3, [(3, 9, 9)])]
    fit(model, train, val, [v.restore(v.mask) for v in val], _profile(epochs), out,
        fold=0, device="cpu", resume=resume, progress=False)


def test_resume_gives_the_uninterrupted_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _fit(tmp_path / "a", epochs=2)
    _fit(tmp_path / "b", epochs=1)
    _fit(tmp_path / "b", epochs=2, resume=True)
    a = torch.load(tmp_path / "a" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0)
    ha = pd.read_csv(tmp_path / "a" / "history.csv").filter(regex=r"^(?!.*seconds$)")
    hb = pd.read_csv(tmp_path / "b" / "history.csv").filter(regex=r"^(?!.*seconds$)")
    pd.testing.assert_frame_equal(ha, hb)
    assert ha["lr"].tolist() == pytest.approx([1e-7, 1e-4])
    assert list(ha.columns) == ["epoch", "lr", "train_loss", "val_loss", "val_precision",
                                "val_recall", "val_f1", "val_fp_per_subject", "crops_lesion", "crops_hard",
                                "crops_edge", "crops_other", "hard_pool"]
    for name in ("checkpoint_best.pt", "checkpoint_last.pt", "history.csv", "result.json"):
        assert (tmp_path / "a" / name).is_file()
    # a different seed gives different weights, so the comparison above can fail
    torch.manual_seed(1)
    assert not torch.equal(TinyNet().head.weight, a["model"]["head.weight"])


def test_train_fold_refuses_existing_run_and_missing_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text("epoch\n")
    with pytest.raises(OutputError, match="already holds results"):
        train_fold(_profile(1), tmp_path, 0, run, progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train_fold(_profile(1), tmp_path, 0, run, resume=True, progress=False)
    (run / "profile.yaml").write_text(yaml.safe_dump(profile_to_dict(_profile(1))))
    (run / "checkpoint_last.pt").write_bytes(b"")
    changed = dataclasses.replace(_profile(1), train=dataclasses.replace(_profile(1).train, lr=1e-3))
    with pytest.raises(ConfigError, match=r"differs .* in \['train.lr'\]; only train.epochs may change"):
        train_fold(changed, tmp_path, 0, run, resume=True, progress=False)
    with pytest.raises(ConfigError, match="train.epochs=0"):
        fit(TinyNet(), [], [], [], _profile(0), run, device="cpu", progress=False)
