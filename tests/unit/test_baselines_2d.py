"""Tests of the 2.5D/2D Table 2 baselines: fan2022_unet, nnunet_dynunet, wei2022_mmoc.

Smoke widths (8, 16, 32, 64) and uneven slices (48 x 52) keep each test to
about a second on a CPU and make height/width mix-ups fail.
"""

from __future__ import annotations

import math

import pytest
import torch

from cmbstudy.config import load_profile, resolve_variant
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.models.baselines.dynunet import DEEP_SUPR_NUM
from cmbstudy.models.layers import FOREGROUND_PRIOR
from cmbstudy.models.registry import get_model, model_fields, model_from_config

VARIANTS = {"fan2022": "fan2022_unet", "nnunet": "nnunet_dynunet", "wei2022": "wei2022_mmoc"}
#: Outputs in train mode: fan one tensor, nnU-Net final + 3 auxiliary, MMOC refined + proposal.
TRAIN_OUTPUTS = {"fan2022_unet": 1, "nnunet_dynunet": 1 + DEEP_SUPR_NUM, "wei2022_mmoc": 2}
SMOKE_WIDTHS = (8, 16, 32, 64)
H, W = 48, 52


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def smoke_model(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return model_from_config(resolve_variant(load_profile("smoke"), variant).model)


def as_list(out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_builds_registered_network(variant: str) -> None:
    profile = resolve_variant(load_profile("smoke"), variant)
    assert profile.model.name == VARIANTS[variant]
    assert "widths" in model_fields(VARIANTS[variant])
    model = smoke_model(variant)
    same = get_model(VARIANTS[variant], widths=SMOKE_WIDTHS)
    assert n_params(model) == n_params(same)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_output_shapes_in_train_and_eval_modes(variant: str) -> None:
    model = smoke_model(variant)
    x = torch.randn(2, 3, H, W)
    outputs = as_list(model.train()(x))
    assert len(outputs) == TRAIN_OUTPUTS[VARIANTS[variant]]
    assert [tuple(o.shape) for o in outputs] == [(2, 1, H, W)] * len(outputs)
    with torch.no_grad():
        out = model.eval()(x)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 1, H, W)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_initial_foreground_probability_is_small(variant: str) -> None:
    with torch.no_grad():
        prob = torch.sigmoid(smoke_model(variant).eval()(torch.randn(1, 3, H, W))).mean().item()
    # the output bias starts at logit(FOREGROUND_PRIOR); features shift it only a little
    assert prob < 5 * FOREGROUND_PRIOR


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradient_reaches_first_layer(variant: str) -> None:
    model = smoke_model(variant).train()
    loss = sum(o.mean() for o in as_list(model(torch.randn(2, 3, H, W))))
    loss.backward()
    first = next(p for p in model.parameters() if p.ndim == 4)  # first convolution weight
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(VARIANTS.values()))
def test_parameter_count_grows_with_widths(name: str) -> None:
    small = n_params(get_model(name, widths=SMOKE_WIDTHS))
    quick = n_params(get_model(name, widths=(16, 32, 64, 128)))
    # 3 x 3 convolutions dominate: doubling every width about quadruples the count
    assert 3.5 < quick / small < 4.1


@pytest.mark.parametrize("name", sorted(VARIANTS.values()))
def test_unknown_setting_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        get_model(name, bogus=1)


@pytest.mark.parametrize("name", ["fan2022_unet", "wei2022_mmoc"])
def test_bad_widths_are_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="model.widths"):
        get_model(name, widths=(8, 16, 32))


def test_dynunet_without_deep_supervision_returns_one_tensor() -> None:
    model = get_model("nnunet_dynunet", widths=SMOKE_WIDTHS, deep_supervision=False).train()
    out = model(torch.randn(1, 3, H, W))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, 1, H, W)


def test_wei2022_training_loss_decreases_on_a_blob() -> None:
    torch.manual_seed(0)
    model = get_model("wei2022_mmoc", widths=SMOKE_WIDTHS).train()
    x = 0.1 * torch.randn(2, 3, 32, 36)
    y = torch.zeros(2, 1, 32, 36)
    y[0, :, 12:16, 20:24] = 1
    y[1, :, 5:8, 28:31] = 1
    x = x - 2.0 * y  # a hypointense blob, as a CMB
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        loss = model.training_loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_wei2022_training_loss_rejects_mismatched_target() -> None:
    model = get_model("wei2022_mmoc", widths=SMOKE_WIDTHS)
    with pytest.raises(InputError, match="loss target"):
        model.training_loss(torch.randn(1, 3, H, W), torch.zeros(1, 1, H, W + 1))
