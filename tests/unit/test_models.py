"""Tests of the RLK-UNet with CBAM network, its blocks and the model registry.

Tiny widths (4, 8, 16, 32) and uneven inputs such as (2, 3, 37, 45) keep every
test to about a second on a CPU and make height/width mix-ups fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.visualize import GradCAM

from cmbstudy.config import ModelConfig, load_profile
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.explain.cbam_maps import compute_cbam_maps
from cmbstudy.models.cbam import CBAM, ChannelAttention, SpatialAttention
from cmbstudy.models.registry import get_model, list_models, model_from_config
from cmbstudy.models.rlk import RLKBlock

TINY = dict(widths=(4, 8, 16, 32), blocks_per_stage=1)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("rlk_unet_cbam", **{**TINY, **kw})


# ---------------------------------------------------------------- shapes
def test_train_outputs_with_deep_supervision_on_uneven_size() -> None:
    model = tiny().train()
    out = model(torch.randn(2, 3, 37, 45))
    # padded to 40 x 48; aux outputs cropped to ceil(37/2**s) x ceil(45/2**s)
    shapes = [tuple(o.shape) for o in out]
    assert shapes == [(2, 1, 37, 45), (2, 1, 19, 23), (2, 1, 10, 12), (2, 1, 5, 6)]


def test_train_output_without_deep_supervision_is_one_element_list() -> None:
    model = tiny(deep_supervision=False).train()
    out = model(torch.randn(2, 3, 37, 45))
    assert isinstance(out, list) and len(out) == 1 and out[0].shape == (2, 1, 37, 45)


def test_eval_output_is_a_tensor_of_input_size() -> None:
    model = tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 31))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 33, 31)


def test_output_ignores_padding_when_size_is_a_multiple_of_8() -> None:
    model = tiny().eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        full = model(x)
        cropped = model(x[..., :37, :45])
    assert full.shape == (1, 1, 40, 48) and cropped.shape == (1, 1, 37, 45)
    assert not torch.allclose(full[..., :37, :45], cropped)  # zero padding changed the context


def test_wrong_input_channels_raise_input_error() -> None:
    with pytest.raises(InputError, match=r"\(B, 3, H, W\).*\(2, 1, 32, 32\)"):
        tiny()(torch.randn(2, 1, 32, 32))


def test_initial_output_bias_gives_the_foreground_prior() -> None:
    model = tiny()
    assert model.head.conv.bias.item() == pytest.approx(-math.log(99.0))


# ---------------------------------------------------------------- parameter counts
# Exact counts for widths (4, 8, 16, 32), 1 block per stage, kernel 13, small 5, mlp 4, r 16.
EXPECTED_PARAMS = {
    (0, False): 41976,
    (0, True): 42419,
    (1, False): 42123,
    (1, True): 42566,
    (2, False): 42246,
    (2, True): 42689,
    (3, False): 42357,
    (3, True): 42800,
}


def cbam_params(c: int, r: int = 16) -> int:
    hidden = max(1, c // r)
    return (c * hidden + hidden) + (hidden * c + c) + 2 * 7 * 7  # shared MLP + 7x7 conv (no bias)


def gate_params(c: int) -> int:
    f = c // 2
    # W_g and W_x: 1x1 conv + BatchNorm each; psi: 1x1 conv to 1 channel + BatchNorm
    return 2 * (c * f + f + 2 * f) + (f + 1 + 2)


@pytest.mark.parametrize("skips,gate", sorted(EXPECTED_PARAMS))
def test_parameter_count_regression(skips: int, gate: bool) -> None:
    assert n_params(tiny(cbam_skips=skips, attention_gate=gate)) == EXPECTED_PARAMS[(skips, gate)]


def test_parameter_counts_differ_by_the_hand_computed_modules() -> None:
    base = EXPECTED_PARAMS[(0, False)]
    # CBAM is added from the deepest skip (16 channels) upward (8, then 4 channels).
    assert EXPECTED_PARAMS[(1, False)] - base == cbam_params(16) == 147
    assert EXPECTED_PARAMS[(2, False)] - EXPECTED_PARAMS[(1, False)] == cbam_params(8)
    assert EXPECTED_PARAMS[(3, False)] - EXPECTED_PARAMS[(2, False)] == cbam_params(4)
    for skips in range(4):
        delta = EXPECTED_PARAMS[(skips, True)] - EXPECTED_PARAMS[(skips, False)]
        assert delta == gate_params(4) + gate_params(8) + gate_params(16) == 443


def test_deep_supervision_heads_are_counted() -> None:
    heads = sum(2 * c + c + 1 for c in (8, 16, 32))  # GroupNorm + 1x1 conv per auxiliary head
    assert EXPECTED_PARAMS[(3, True)] - n_params(tiny(deep_supervision=False)) == heads


# ---------------------------------------------------------------- CBAM
def test_channel_attention_is_in_unit_interval_and_constant_over_space() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 8, 11, 13)
    weights = ChannelAttention(8, reduction=4)(x)
    assert weights.shape == (2, 8, 1, 1)
    assert torch.all((weights > 0) & (weights < 1))
    cbam = CBAM(8, reduction=4)
    torch.nn.init.zeros_(cbam.spatial.conv.weight)  # spatial map 0.5 everywhere
    ratio = cbam(x) / x
    expected = cbam.channel(x) * 0.5
    assert torch.allclose(ratio, expected.expand_as(ratio), atol=1e-5)


def test_spatial_attention_map_shape_and_range() -> None:
    torch.manual_seed(2)
    s_map = SpatialAttention(7)(torch.randn(3, 5, 9, 14))
    assert s_map.shape == (3, 1, 9, 14)
    assert torch.all((s_map > 0) & (s_map < 1))


def test_cbam_with_zero_weights_halves_twice() -> None:
    cbam = CBAM(6, reduction=2)
    for p in cbam.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(2, 6, 10, 7)
    assert torch.allclose(cbam(x), x * 0.5 * 0.5)
    assert torch.allclose(cbam.spatial(x * 0.5), torch.full((2, 1, 10, 7), 0.5))
    assert not any(isinstance(v, torch.Tensor) for v in vars(cbam).values())  # no map kept on the module


def test_cbam_on_a_constant_input() -> None:
    torch.manual_seed(3)
    cbam = CBAM(4, reduction=2)
    values = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    x = values.expand(1, 4, 15, 17).clone()
    # avg pool == max pool == the constant, so M_c = sigmoid(2 MLP(c))
    expected_channel = torch.sigmoid(2 * cbam.channel.mlp(values))
    assert torch.allclose(cbam.channel(x), expected_channel, atol=1e-6)
    out = cbam(x)
    s_map = cbam.spatial(x * expected_channel)[0, 0]
    interior = s_map[3:-3, 3:-3]  # beyond the 7x7 conv's zero padding
    assert torch.allclose(interior, interior[0, 0].expand_as(interior))
    assert not torch.allclose(s_map[0, 0], interior[0, 0])  # the border sees the zero padding
    assert torch.allclose(out, x * expected_channel * s_map, atol=1e-6)


@pytest.mark.parametrize(
    "skips,names",
    [(0, set()), (1, {"skip3"}), (2, {"skip3", "skip2"}), (3, {"skip1", "skip2", "skip3"})],
)
def test_cbam_modules_follow_cbam_skips(skips: int, names: set[str]) -> None:
    model = tiny(cbam_skips=skips).eval()
    modules = model.cbam_modules()
    assert set(modules) == names
    factors = {"skip1": 1, "skip2": 2, "skip3": 4}
    assert {name: factor for name, (_, factor) in modules.items()} == {n: factors[n] for n in names}
    maps = compute_cbam_maps(model, torch.randn(2, 3, 37, 45))  # read by forward hooks, at input size
    assert set(maps) == names
    for s_map in maps.values():
        assert s_map.shape == (2, 1, 37, 45)
        assert np.all((s_map > 0) & (s_map < 1))
    assert all(not cbam.spatial._forward_hooks for cbam, _ in modules.values())  # hooks removed


# ---------------------------------------------------------------- RLK block and large kernel
def test_rlk_block_rejects_even_kernel() -> None:
    with pytest.raises(ConfigError, match="kernel_size must be odd.*12"):
        RLKBlock(8, kernel_size=12)


def test_drop_path_rises_with_depth_and_mirrors_in_decoder() -> None:
    model = tiny(drop_path=0.3)
    enc = [stage[0].drop_path.drop_prob for stage in model.encoders]
    assert enc == pytest.approx([0.0, 0.1, 0.2, 0.3])
    dec = [level.blocks[0].drop_path.drop_prob for level in model.decoders]  # 1/4, 1/2, 1/1
    assert dec == pytest.approx([0.2, 0.1, 0.0])


def test_large_kernel_weights_get_gradient_from_the_final_output() -> None:
    model = tiny().eval()
    x = torch.randn(1, 3, 112, 104)  # bottleneck 14 x 13: every 13x13 tap sees real pixels
    model(x).sum().backward()
    blocks = [m for m in model.modules() if isinstance(m, RLKBlock)]
    assert len(blocks) == 7  # 4 encoder stages + 3 decoder levels, 1 block each
    for block in blocks:
        grad = block.dw_large.weight.grad
        assert grad is not None and grad.shape[-2:] == (13, 13)
        ring = [grad[..., 0, :], grad[..., -1, :], grad[..., :, 0], grad[..., :, -1]]
        outer = torch.cat(ring, dim=-1)
        assert torch.all(outer.abs().sum(dim=-1) > 0)  # the outermost ring of every channel is used


def test_gradcam_on_the_final_decoder_block() -> None:
    model = tiny().eval()
    assert model.gradcam_layer in dict(model.named_modules())
    cam = GradCAM(nn_module=model, target_layers=model.gradcam_layer)
    result = cam(torch.randn(2, 3, 37, 45), class_idx=0)
    assert result.shape == (2, 1, 37, 45)
    assert float(result.min()) >= 0.0 and float(result.max()) <= 1.0


def test_tiny_model_overfits_one_batch() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small kernels: one thread avoids contention on a shared CPU
    try:
        _overfit()
    finally:
        torch.set_num_threads(threads)


def _overfit() -> None:
    from monai.losses import DiceLoss

    from cmbstudy.config import TrainConfig
    from cmbstudy.models.losses import make_loss

    torch.manual_seed(0)
    model = tiny(drop_path=0.0).train()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    target = torch.zeros(2, 1, 32, 32)
    target[0, 0] = ((yy - 10) ** 2 + (xx - 20) ** 2 <= 9).float()
    target[1, 0] = ((yy - 22) ** 2 + (xx - 8) ** 2 <= 6).float()
    x = torch.randn(2, 3, 32, 32) * 0.3 - 2.0 * target  # dark blobs, like CMBs
    loss_fn = make_loss(TrainConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    dice = DiceLoss(sigmoid=True, batch=True)
    with torch.no_grad():
        start = float(dice(model(x)[0], target))
    for _ in range(60):
        optimizer.zero_grad()
        loss_fn(model(x), target).backward()
        optimizer.step()
    with torch.no_grad():
        end = float(dice(model(x)[0], target))
    # measured: 0.99 before, 0.06-0.12 after 60 steps (seeds 0, 1); 4-9 s on one core
    assert start > 0.9 and end < 0.25


# ---------------------------------------------------------------- registry
def test_registry_lists_both_models() -> None:
    assert {"rlk_unet", "rlk_unet_cbam"} <= set(list_models())


def test_unknown_model_names_the_model_and_the_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"'unet_xl'.*rlk_unet, rlk_unet_cbam"):
        get_model("unet_xl")


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*'kernal_size'"):
        get_model("rlk_unet_cbam", kernal_size=13)


def test_invalid_cbam_skips_raises() -> None:
    with pytest.raises(ConfigError, match=r"cbam_skips must lie in 0\.\.3.*got 4"):
        tiny(cbam_skips=4)


def test_rlk_unet_is_the_same_class_without_cbam() -> None:
    plain = get_model("rlk_unet", **TINY, cbam_skips=3)
    assert type(plain) is type(tiny())
    assert n_params(plain) == EXPECTED_PARAMS[(0, True)]
    assert plain.cbam_modules() == {}
    assert compute_cbam_maps(plain, torch.randn(1, 3, 16, 16)) == {}


def test_model_from_config_and_profiles() -> None:
    model = model_from_config(ModelConfig(widths=(4, 8, 16, 32), blocks_per_stage=1, cbam_skips=2))
    assert n_params(model) == EXPECTED_PARAMS[(2, True)]
    smoke = model_from_config(load_profile("smoke").model)
    assert smoke.encoders[0][0].dw_large.kernel_size == (13, 13)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_from_config(ModelConfig(name="nope"))
