"""Volumetric Table 2 baselines: SHIVA-CMB 3D U-Net (Tsuchida 2024) and the two-stage 3D CNN (Dou 2016)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from cmbstudy.config import ModelConfig, load_profile
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.inference.sliding_window import predict_volume
from cmbstudy.models.baselines.dou2016 import (
    DISCRIMINATOR_PATCH,
    NEGATIVE_LOGIT,
    Dou2016,
)
from cmbstudy.models.baselines.tsuchida2024 import ShivaUNet
from cmbstudy.models.layers import is_volumetric
from cmbstudy.models.registry import model_fields, model_from_config
from cmbstudy.training.loop import fit

WIDTHS = (4, 8, 8, 16)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 8, 16, 16, generator=gen)
    y = torch.zeros_like(x)
    y[0, 0, 3:5, 6:8, 6:8] = 1.0
    y[1, 0, 5, 10, 12] = 1.0
    x[y > 0] = -4.0
    return x, y


def test_registry_fields_and_volumetric_flag() -> None:
    for name in ("tsuchida2024_shiva", "dou2016_cnn3d"):
        assert {"widths", "spacing_mm"} <= set(model_fields(name))
        model = model_from_config(ModelConfig(name=name, widths=WIDTHS, spacing_mm=2.0))
        assert is_volumetric(model) and model.spacing_mm == 2.0
    with pytest.raises(ConfigError, match="widths"):
        ShivaUNet(widths=(8,))
    with pytest.raises(ConfigError, match="four widths"):
        Dou2016(widths=(8, 16))


def test_shiva_shapes_loss_and_backward() -> None:
    torch.manual_seed(0)
    model = ShivaUNet(WIDTHS, spacing_mm=1.0)
    x, y = _batch()
    assert model(x).shape == x.shape
    loss = model.training_loss(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == x.shape
    with pytest.raises(InputError, match="multiples of 8"):
        model(torch.zeros(1, 1, 8, 12, 16))


def test_dou_shapes_loss_and_backward() -> None:
    torch.manual_seed(0)
    model = Dou2016(WIDTHS)
    x, y = _batch()
    assert model(x).shape == x.shape  # train mode: screening logits
    loss = model.training_loss(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    # both stages learn: the discriminator saw lesion and hard-negative sub-patches
    assert model.screen[0][0].weight.grad.abs().sum() > 0
    assert model.discriminator[-1].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    with pytest.raises(InputError, match="shape of the input"):
        model.training_loss(x, y[:, :, :4])


class PeakScreen(nn.Module):
    """A screening stand-in: logit +5 at one voxel per patch, -10 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(x, -10.0)
        out[:, :, 4, 8, 9] = 5.0
        return out


def test_dou_eval_scores_candidates_with_the_discriminator_only() -> None:
    torch.manual_seed(1)
    model = Dou2016(WIDTHS).eval()
    model.screen = PeakScreen()
    x, _ = _batch()
    with torch.no_grad():
        out = model(x)
        expected = model.discriminate(x, torch.tensor([[0, 4, 8, 9], [1, 4, 8, 9]]))
    # the candidate voxel carries the discriminator's logit of its sub-patch
    torch.testing.assert_close(out[:, 0, 4, 8, 9], expected)
    # every voxel below the screening threshold is strongly negative
    below = torch.ones_like(out, dtype=torch.bool)
    below[:, :, 4, 8, 9] = False
    assert (out[below] == NEGATIVE_LOGIT).all()
    assert DISCRIMINATOR_PATCH == (6, 16, 16)
    # a blank screening map gives no candidates at all
    model.screen = nn.Sequential(nn.Conv3d(1, 1, 1))
    nn.init.zeros_(model.screen[0].weight)
    nn.init.constant_(model.screen[0].bias, -10.0)
    with torch.no_grad():
        assert (model(x) == NEGATIVE_LOGIT).all()
    assert np.isclose(torch.sigmoid(torch.tensor(NEGATIVE_LOGIT)).item(), 0.0, atol=1e-8)


class FakeGeometry:
    output_voxel_mm = (3.0, 1.5, 1.5)


class FakeVolume:
    """Preprocessed-volume stand-in whose input grid is the preprocessed grid itself."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.subject_id = f"{seed:03d}"
        self.image = rng.normal(0.0, 0.3, size=(6, 20, 22)).astype(np.float32)
        self.mask = np.zeros(self.image.shape, np.uint8)
        self.mask[3, 8:10, 10:12] = 1
        self.image[self.mask > 0] = -4.0
        self.brain = np.ones(self.image.shape, bool)
        self.geometry = FakeGeometry()

    def restore(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        return np.asarray(array)

    def input_brain(self) -> np.ndarray:
        return self.brain


@pytest.mark.parametrize("name, spacing", [("tsuchida2024_shiva", 2.0), ("dou2016_cnn3d", 0.0)])
def test_fit_and_predict_a_volumetric_baseline(tmp_path: Path, name: str, spacing: float) -> None:
    profile = load_profile("smoke", {})
    profile = dataclasses.replace(
        profile,
        model=dataclasses.replace(profile.model, name=name, widths=WIDTHS, spacing_mm=spacing),
        train=dataclasses.replace(profile.train, epochs=1, slices_per_epoch=2, batch_size=2, patch_size=(8, 16, 16)),
    )
    torch.manual_seed(0)
    model = model_from_config(profile.model)
    volumes = [FakeVolume(1), FakeVolume(2)]
    result = fit(model, volumes[:1], volumes[1:], [volumes[1].mask], profile, tmp_path, progress=False)
    assert result.epochs == 1 and result.model == name and (tmp_path / "checkpoint_best.pt").is_file()
    assert np.isfinite(result.best_val["loss"])
    prob = predict_volume(model, volumes[1], 4, "cpu", (8, 16, 16))
    assert prob.shape == volumes[1].image.shape and prob.min() >= 0.0 and prob.max() <= 1.0
