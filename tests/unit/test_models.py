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
from cmbstudy.models.gate import SkipRefinement
from cmbstudy.models.registry import get_model, list_models, model_from_config
from cmbstudy.models.rlk import RLKBlock, inference_copy

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
    # padded to 48 x 48; aux outputs cropped to ceil(37/2**s) x ceil(45/2**s)
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


def test_output_ignores_padding_when_size_is_a_multiple_of_16() -> None:
    model = tiny().eval()
    assert model.divisor == 16  # four halvings down to the bottleneck
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        full = model(x)
        cropped = model(x[..., :37, :45])
    assert full.shape == (1, 1, 48, 48) and cropped.shape == (1, 1, 37, 45)
    assert not torch.allclose(full[..., :37, :45], cropped)  # zero padding changed the context


def test_wrong_input_channels_raise_input_error() -> None:
    with pytest.raises(InputError, match=r"\(B, 3, H, W\).*\(2, 1, 32, 32\)"):
        tiny()(torch.randn(2, 1, 32, 32))


def test_initial_output_bias_gives_the_foreground_prior() -> None:
    model = tiny()
    assert model.head.conv.bias.item() == pytest.approx(-math.log(99.0))


# ---------------------------------------------------------------- parameter counts
# Exact counts for widths (4, 8, 16, 32) (bottleneck 64), 1 block per stage, kernel 13, small 5, mlp 4,
# r 16, CBAM hidden width at least 8: (CBAM skips, attention gate) -> parameters.
EXPECTED_PARAMS = {
    (0, False): 131992,
    (0, True): 133566,
    (1, False): 132642,
    (1, True): 134216,
    (2, False): 133020,
    (2, True): 134594,
    (3, False): 133262,
    (3, True): 134836,
    (4, False): 133400,
    (4, True): 134974,
}


def cbam_params(c: int, r: int = 16, floor: int = 8) -> int:
    hidden = min(c, max(floor, c // r))
    return (c * hidden + hidden) + (hidden * c + c) + 2 * 7 * 7  # shared MLP + 7x7 conv (no bias)


def gate_params(c: int) -> int:
    f = c // 2
    # W_g and W_x: 1x1 conv + GroupNorm each; psi: 1x1 conv to 1 channel (no norm)
    return 2 * (c * f + f + 2 * f) + (f + 1)


@pytest.mark.parametrize("skips,gate", sorted(EXPECTED_PARAMS))
def test_parameter_count_regression(skips: int, gate: bool) -> None:
    assert n_params(tiny(cbam_skips=skips, attention_gate=gate)) == EXPECTED_PARAMS[(skips, gate)]
    if skips == 4:
        assert n_params(tiny(cbam_skips=-1, attention_gate=gate)) == EXPECTED_PARAMS[(4, gate)]  # -1: all


def test_parameter_counts_differ_by_the_hand_computed_modules() -> None:
    # CBAM is added from the deepest skip (32 channels) upward (16, 8, then 4 channels)
    for skips, channels in ((1, 32), (2, 16), (3, 8), (4, 4)):
        assert EXPECTED_PARAMS[(skips, False)] - EXPECTED_PARAMS[(skips - 1, False)] == cbam_params(channels)
    for skips in range(5):
        delta = EXPECTED_PARAMS[(skips, True)] - EXPECTED_PARAMS[(skips, False)]
        assert delta == sum(gate_params(c) for c in (4, 8, 16, 32)) == 1574


def test_deep_supervision_heads_are_counted() -> None:
    heads = sum(2 * c + c + 1 for c in (8, 16, 32))  # GroupNorm + 1x1 conv per auxiliary head
    assert EXPECTED_PARAMS[(4, True)] - n_params(tiny(deep_supervision=False)) == heads


# ---------------------------------------------------------------- the paper's network (section 2.2)
def test_cbam_and_gate_run_in_parallel_on_the_same_skip_feature() -> None:
    model = tiny().eval()
    seen: dict[str, list[torch.Tensor]] = {"cbam": [], "gate": []}
    for decoder in model.decoders:
        decoder.skip.cbam.register_forward_pre_hook(lambda m, args: seen["cbam"].append(args[0]))
        decoder.skip.gate.register_forward_pre_hook(lambda m, args, kw: seen["gate"].append(kw["x"]),
                                                    with_kwargs=True)
    with torch.no_grad():
        model(torch.randn(2, 3, 37, 45))
    assert len(seen["cbam"]) == len(seen["gate"]) == 4
    for from_cbam, from_gate in zip(seen["cbam"], seen["gate"]):
        assert from_cbam is from_gate  # the encoder's skip feature itself, not CBAM's output


@pytest.mark.parametrize("fusion", ["mean", "sum"])
def test_skip_refinement_fuses_the_two_attentions(fusion: str) -> None:
    torch.manual_seed(4)
    refine = SkipRefinement(8, use_cbam=True, use_gate=True, fusion=fusion).eval()
    skip, up = torch.randn(2, 8, 9, 11), torch.randn(2, 8, 9, 11)
    both = refine.cbam(skip) + refine.gate(g=up, x=skip)
    assert torch.allclose(refine(skip, up), both / 2 if fusion == "mean" else both)
    gate_only = SkipRefinement(8, use_cbam=False, use_gate=True).eval()
    assert torch.allclose(gate_only(skip, up), gate_only.gate(g=up, x=skip))
    assert torch.equal(SkipRefinement(8, use_cbam=False, use_gate=False)(skip, up), skip)
    with pytest.raises(ConfigError, match="skip_fusion 'concat'"):
        SkipRefinement(8, True, True, fusion="concat")


def test_auxiliary_outputs_come_from_decoder_stages_at_half_quarter_and_eighth() -> None:
    model = tiny().train()
    decoded, head_inputs = {}, []
    for level, decoder in enumerate(model.decoders):
        decoder.register_forward_hook(lambda m, args, out, level=level: decoded.__setitem__(level, out))
    for head in model.aux_heads:
        head.register_forward_pre_hook(lambda m, args: head_inputs.append(args[0]))
    out = model(torch.randn(2, 3, 48, 64))
    assert [tuple(o.shape[-2:]) for o in out] == [(48, 64), (24, 32), (12, 16), (6, 8)]
    # decoders run 1/8, 1/4, 1/2, 1/1; the heads read those at 1/2, 1/4 and 1/8, not the bottleneck
    assert [tuple(decoded[k].shape[-2:]) for k in range(4)] == [(6, 8), (12, 16), (24, 32), (48, 64)]
    assert [x is decoded[k] for x, k in zip(head_inputs, (2, 1, 0))] == [True, True, True]


def test_no_batch_norm_anywhere_in_the_network() -> None:
    for profile in ("smoke", "quick", "paper"):
        model = model_from_config(load_profile(profile).model)
        assert not [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)], profile


def test_cbam_channel_mlp_keeps_at_least_eight_units() -> None:
    assert ChannelAttention(16, reduction=16).hidden == 8  # 16 // 16 would be one unit
    assert ChannelAttention(256, reduction=16).hidden == 16
    assert ChannelAttention(4, reduction=16).hidden == 4  # never wider than the channels
    assert ChannelAttention(16, reduction=16, min_hidden=1).hidden == 1
    with pytest.raises(ConfigError, match="cbam_min_hidden"):
        ChannelAttention(16, min_hidden=0)


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
    [(0, set()), (1, {"skip4"}), (2, {"skip4", "skip3"}), (-1, {"skip1", "skip2", "skip3", "skip4"})],
)
def test_cbam_modules_follow_cbam_skips(skips: int, names: set[str]) -> None:
    model = tiny(cbam_skips=skips).eval()
    modules = model.cbam_modules()
    assert set(modules) == names
    factors = {"skip1": 1, "skip2": 2, "skip3": 4, "skip4": 8}
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


def test_the_borrowed_parts_of_the_rlk_block_switch_off() -> None:
    # the paper's block: 13x13 kernel, GroupNorm, GELU, residual; the 5x5 branch and the 1x1
    # feed-forward step come from Son et al. (2023) / RepLKNet and are profile fields
    full, bare = RLKBlock(8), RLKBlock(8, small_kernel=0, mlp_ratio=0)
    assert full.dw_small is not None and full.mlp is not None
    assert bare.dw_small is None and bare.mlp is None
    x = torch.randn(2, 8, 9, 11)
    assert bare(x).shape == x.shape
    lean = model_from_config(load_profile("smoke", ["model.small_kernel=0", "model.mlp_ratio=0"]).model)
    assert not [m for m in lean.modules() if isinstance(m, RLKBlock) and (m.dw_small or m.mlp)]


def test_the_block_s_inference_rewrites_keep_its_output() -> None:
    """The small kernel folded into the large one, and the feed-forward in bands of rows (never in training)."""
    torch.manual_seed(0)
    block = RLKBlock(8, kernel_size=13, small_kernel=5, norm_groups=4).eval()
    x = torch.randn(2, 8, 21, 16)
    with torch.inference_mode():
        expected = block(x)
        block.fold_small_kernel()
        assert block.dw_small is None
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
        block.fold_small_kernel()  # nothing left to fold: unchanged
        assert block.dw_small is None
        folded = block(x)
        for band in (2 * 32 * 16 * 4, 1, 10 ** 9):  # 4 rows (the last band shorter), 1 row, the whole map
            block.band_elements = band
            torch.testing.assert_close(block(x), folded, rtol=1e-6, atol=1e-6)
    block.train()  # training ignores the bands: the gradient flows as through the whole map
    x.requires_grad_(True)
    block(x).sum().backward()
    assert x.grad is not None and block.mlp[1].weight.grad is not None


def test_inference_copy_keeps_the_outputs_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = get_model("rlk_unet_cbam", widths=(8, 16), norm_groups=4).train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    copied = inference_copy(model)
    assert model.training and not copied.training
    assert all(b.dw_small is not None for b in model.modules() if isinstance(b, RLKBlock))
    assert all(b.dw_small is None for b in copied.modules() if isinstance(b, RLKBlock))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(copied(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    assert inference_copy(model) is copied  # the same weights: the same copy
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # a training step: a new copy, of the new weights
        renewed = inference_copy(model)
        assert renewed is not copied
        torch.testing.assert_close(renewed(x), model(x), rtol=1e-4, atol=1e-4)


def test_drop_path_rises_with_depth_in_the_encoder_only() -> None:
    model = tiny(drop_path=0.4)
    enc = [stage[0].drop_path.drop_prob for stage in model.encoders]  # 4 stages, then the bottleneck
    assert enc == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert [stage.blocks[0].drop_path.drop_prob for stage in model.decoders] == [0.0] * 4


def test_large_kernel_weights_get_gradient_from_the_final_output() -> None:
    model = tiny().eval()
    x = torch.randn(1, 3, 224, 208)  # bottleneck 14 x 13: every 13x13 tap sees real pixels
    model(x).sum().backward()
    blocks = [m for m in model.modules() if isinstance(m, RLKBlock)]
    assert len(blocks) == 9  # 4 encoder stages, the bottleneck, 4 decoder stages, 1 block each
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


@pytest.mark.parametrize("seed", [1, 2])
def test_tiny_model_overfits_one_batch(seed: int) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small kernels: one thread avoids contention on a shared CPU
    try:
        start, end = _overfit(seed)
    finally:
        torch.set_num_threads(threads)
    # measured (batch Dice after 60 steps): 0.07 (seed 1), 0.06 (seed 2), 0.06 (seed 3); 4-9 s on one core.
    # The initialisation of seed 0 sits on a plateau for about 50 steps (0.45 after 60, 0.05 after 80).
    assert start > 0.9 and end < 0.25


def _overfit(seed: int) -> tuple[float, float]:
    from monai.losses import DiceLoss

    from cmbstudy.config import TrainConfig
    from cmbstudy.models.losses import make_loss

    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    target = torch.zeros(2, 1, 32, 32)
    target[0, 0] = ((yy - 10) ** 2 + (xx - 20) ** 2 <= 9).float()
    target[1, 0] = ((yy - 22) ** 2 + (xx - 8) ** 2 <= 6).float()
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = noise * 0.3 - 2.0 * target  # dark blobs, like CMBs; the same batch for every initialisation
    torch.manual_seed(seed)
    model = get_model("rlk_unet_cbam", **TINY, drop_path=0.0).train()
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
    return start, end


# ---------------------------------------------------------------- registry
def test_one_network_and_one_switch_for_cbam() -> None:
    assert "rlk_unet_cbam" in list_models() and "rlk_unet" not in list_models()
    plain = tiny(cbam_skips=0)
    assert type(plain) is type(tiny()) and plain.cbam_modules() == {}
    assert compute_cbam_maps(plain, torch.randn(1, 3, 16, 16)) == {}


def test_unknown_model_names_the_model_and_the_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"'unet_xl'.*rlk_unet_cbam"):
        get_model("unet_xl")


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*'kernal_size'"):
        get_model("rlk_unet_cbam", kernal_size=13)


def test_invalid_cbam_skips_raises() -> None:
    with pytest.raises(ConfigError, match=r"cbam_skips must lie in -1\.\.4.*got 5"):
        tiny(cbam_skips=5)


def test_model_from_config_and_profiles() -> None:
    model = model_from_config(ModelConfig(widths=(4, 8, 16, 32), blocks_per_stage=1, cbam_skips=2))
    assert n_params(model) == EXPECTED_PARAMS[(2, True)]
    smoke = model_from_config(load_profile("smoke").model)
    assert smoke.encoders[0][0].dw_large.kernel_size == (13, 13)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_from_config(ModelConfig(name="nope"))
