"""Tests of the Dice + Focal deep-supervision loss (hand-computed values)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss

from cmbstudy.config import TrainConfig
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.models.losses import downsample_target, make_loss


def base_loss() -> DiceFocalLoss:
    return DiceFocalLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5, gamma=2.0)


@pytest.fixture
def batch() -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    target = (torch.rand(2, 1, 24, 40, generator=g) > 0.9).float()
    outputs = [torch.randn(2, 1, 24 // 2**k, 40 // 2**k, generator=g) for k in range(4)]
    return outputs, target


def test_hand_computed_value_at_probability_one_half() -> None:
    # logits 0 -> p = 0.5 everywhere; 2 x 1 x 5 x 7 = 70 voxels, 6 of them lesion.
    target = torch.zeros(2, 1, 5, 7)
    target[0, 0, 1, 1:4] = 1
    target[1, 0, 3, 2:5] = 1
    loss = make_loss(TrainConfig())([torch.zeros(2, 1, 5, 7)], target)
    eps = 1e-5
    dice = 1 - (2 * 0.5 * 6 + eps) / (0.5 * 70 + 6 + eps)  # batch Dice: sums over the batch
    focal = math.log(2) * 0.5**2  # BCE(0.5) * (1 - p_t)^gamma, mean over voxels, no alpha
    assert float(loss) == pytest.approx(dice + focal, rel=1e-5)


def test_single_output_gets_weight_one(batch) -> None:
    outputs, target = batch
    loss = make_loss(TrainConfig())([outputs[0]], target)
    assert float(loss) == pytest.approx(float(base_loss()(outputs[0], target)), rel=1e-6)


def test_identical_outputs_equal_one_output_since_weights_sum_to_one(batch) -> None:
    outputs, target = batch
    loss_fn = make_loss(TrainConfig())
    same = loss_fn([outputs[0]] * 4, target)
    assert float(same) == pytest.approx(float(loss_fn([outputs[0]], target)), rel=1e-6)


def test_weights_are_applied_final_first(batch) -> None:
    outputs, target = batch
    parts = [float(base_loss()(o, F.max_pool2d(target, 2**k) if k else target)) for k, o in enumerate(outputs)]
    assert len(set(round(p, 6) for p in parts)) == 4  # the four terms differ
    loss = float(make_loss(TrainConfig())(outputs, target))
    expected = 0.4 * parts[0] + 0.3 * parts[1] + 0.2 * parts[2] + 0.1 * parts[3]
    assert loss == pytest.approx(expected, rel=1e-5)
    reversed_cfg = TrainConfig(deep_supervision_weights=(0.1, 0.2, 0.3, 0.4))
    assert float(make_loss(reversed_cfg)(outputs, target)) != pytest.approx(loss, rel=1e-3)
    deepest_cfg = TrainConfig(deep_supervision_weights=(0.0, 0.0, 0.0, 1.0))
    only_deepest = float(make_loss(deepest_cfg)(outputs, target))
    assert only_deepest == pytest.approx(parts[3], rel=1e-6)


def test_perfect_prediction_has_near_zero_loss() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[0, 0, 5:8, 9:12] = 1
    logits = (target * 2 - 1) * 30.0
    assert float(make_loss(TrainConfig())([logits], target)) < 1e-6


def test_mismatched_number_of_outputs_raises(batch) -> None:
    outputs, target = batch
    with pytest.raises(ConfigError, match=r"3 outputs.*4 weights"):
        make_loss(TrainConfig())(outputs[:3], target)


def test_wrong_target_shape_raises(batch) -> None:
    outputs, target = batch
    with pytest.raises(InputError, match=r"\(B, 1, H, W\).*\(2, 24, 40\)"):
        make_loss(TrainConfig())(outputs, target[:, 0])


def test_negative_weight_raises() -> None:
    with pytest.raises(ConfigError, match="deep_supervision_weights"):
        make_loss(TrainConfig(deep_supervision_weights=(0.5, -0.1)))


def test_gradient_reaches_every_output(batch) -> None:
    outputs, target = batch
    outputs = [o.clone().requires_grad_(True) for o in outputs]
    make_loss(TrainConfig())(outputs, target).backward()
    assert all(float(o.grad.abs().sum()) > 0 for o in outputs)


@pytest.mark.parametrize("shape", [(32, 32), (37, 45)])
def test_coarse_targets_keep_a_two_voxel_lesion(shape: tuple[int, int]) -> None:
    # a 2-voxel CMB at an odd position; MONAI's nearest-exact resizing keeps 1 pixel in 64 at 1/8
    target = torch.zeros(1, 1, *shape)
    target[0, 0, 13, 21:23] = 1
    sizes = [(-(-shape[0] // k), -(-shape[1] // k)) for k in (2, 4, 8)]
    for k, size in zip((2, 4, 8), sizes):
        small = downsample_target(target, size)
        assert small.shape[-2:] == size and small.sum() >= 1, f"the lesion vanished at 1/{k}"
        assert small[0, 0, 13 // k, 21 // k] == 1  # on the cell of the padded grid that holds it
    assert not F.interpolate(target, size=sizes[-1], mode="nearest-exact").any()  # what MONAI would give


def test_deep_supervision_loss_scores_the_lesion_at_every_scale() -> None:
    seen = []

    class Record(torch.nn.Module):
        def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            seen.append(target.sum().item())
            return input.sum() * 0

    target = torch.zeros(2, 1, 37, 45)
    target[1, 0, 13, 21:23] = 1
    loss_fn = make_loss(TrainConfig())
    loss_fn.loss = Record()
    loss_fn([torch.zeros(2, 1, 37, 45), torch.zeros(2, 1, 19, 23), torch.zeros(2, 1, 10, 12),
             torch.zeros(2, 1, 5, 6)], target)
    assert seen[0] == 2 and all(s >= 1 for s in seen[1:])
