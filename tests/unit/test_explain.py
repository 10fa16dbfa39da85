"""Grad-CAM (region-restricted score through MONAI) and CBAM attention maps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cmbstudy.errors import ConfigError, InputError
from cmbstudy.explain.cbam_maps import compute_cbam_maps
from cmbstudy.explain.gradcam import compute_gradcam
from cmbstudy.figures.explain import plot_cbam_maps, plot_gradcam_comparison

H, W = 14, 17  # uneven, not a multiple of 2


class Attention(nn.Module):
    """A CBAM-like module: its ``spatial`` submodule gives the (B, 1, h, w) map the hooks read."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, 3, padding=1), nn.Sigmoid())


class TinyNet(nn.Module):
    """Follows the model contract: eval forward -> (B, 1, H, W) logits, gradcam_layer, cbam_modules()."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.attn = Attention()
        self.head = nn.Conv2d(4, 1, 1)
        self.gradcam_layer = "body"
        self.divisor = 2

    def cbam_modules(self) -> dict[str, tuple[nn.Module, int]]:
        return {"skip2": (self.attn, 2)}

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 2, 0, (-h) % 2))
        feat = torch.relu(self.body(torch.relu(self.stem(x))))
        pooled = F.avg_pool2d(feat, 2)  # (B, 4, h/2, w/2)
        stats = torch.cat([pooled.mean(1, keepdim=True), pooled.amax(1, keepdim=True)], 1)
        spatial = self.attn.spatial(stats)
        out = self.head(feat * F.interpolate(spatial, scale_factor=2))[..., :h, :w]
        return out if not self.training else [out]


class LinearNet(nn.Module):
    """A = body(x) = (x0, x1); logits = A0 - 2 A1: Grad-CAM is ReLU(x0 - 2 x1) up to a positive factor."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 2, 1, bias=False)
        self.head = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.body.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.head.weight.copy_(torch.tensor([1.0, -2.0]).view(1, 2, 1, 1))
        self.gradcam_layer = "body"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(7)
    return TinyNet()


def test_gradcam_matches_hand_computed_linear_case() -> None:
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    expected = torch.relu(x[:, 0] - 2 * x[:, 1]).numpy()
    expected = expected / expected.max()
    cam = compute_gradcam(LinearNet(), x)
    assert cam.shape == (1, 1, H, W)
    np.testing.assert_allclose(cam[:, 0], expected, atol=1e-5)  # high where the logit is high, not flipped


def test_gradcam_region_shape_range_and_batch(tiny: TinyNet) -> None:
    x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(2))
    whole = compute_gradcam(tiny, x)
    assert whole.shape == (2, 1, H, W) and whole.dtype == np.float32
    assert whole.min() >= 0 and whole.max(axis=(1, 2, 3)) == pytest.approx([1.0, 1.0])
    quadrant = torch.zeros(2, 1, H, W, dtype=torch.bool)
    quadrant[:, :, : H // 2, : W // 2] = True
    local = compute_gradcam(tiny, x, quadrant)
    assert local.shape == (2, 1, H, W) and 0 <= local.min() and local.max() <= 1
    assert np.abs(local - whole).max() > 1e-3
    # samples are independent: the batch gives each sample's own map
    single = compute_gradcam(tiny, x[1:], quadrant[1:])
    np.testing.assert_allclose(local[1:], single, atol=1e-5)
    # a numpy region works as well
    np.testing.assert_allclose(compute_gradcam(tiny, x, quadrant.numpy()), local, atol=1e-6)


def test_gradcam_leaves_model_untouched(tiny: TinyNet) -> None:
    tiny.train()
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    compute_gradcam(tiny, torch.randn(1, 3, H, W))
    assert tiny.training
    assert not tiny.body._forward_hooks and not tiny.body._backward_hooks
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


def test_gradcam_errors(tiny: TinyNet) -> None:
    x = torch.randn(2, 3, H, W)
    empty = torch.zeros(2, 1, H, W, dtype=torch.bool)
    empty[0, 0, 3, 3] = True
    with pytest.raises(InputError, match=r"empty for sample\(s\) \[1\]"):
        compute_gradcam(tiny, x, empty)
    with pytest.raises(InputError, match="region must have shape"):
        compute_gradcam(tiny, x, empty[:, :, :-1])
    with pytest.raises(ConfigError, match="'decoder' is not a module"):
        compute_gradcam(tiny, x, layer="decoder")
    with pytest.raises(InputError, match="B, C, H, W"):
        compute_gradcam(tiny, x[0])


class Fixed(nn.Module):
    """A spatial-attention stand-in that returns a given map."""

    def __init__(self, m: torch.Tensor) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m


class FixedMaps(nn.Module):
    """Reports a given (1, 1, 3, 3) attention map at scale 1/2 for a (1, 3, 6, 5) input."""

    def __init__(self, m: torch.Tensor) -> None:
        super().__init__()
        self.attention = nn.Module()
        self.attention.spatial = Fixed(m)

    def cbam_modules(self) -> dict[str, tuple[nn.Module, int]]:
        return {"skip2": (self.attention, 2)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.attention.spatial(x)
        return x[:, :1]


def test_cbam_upsampling_alignment_hand_computed() -> None:
    m = torch.tensor([[0.1, 0.2, 0.6], [0.3, 0.4, 0.8], [0.5, 0.7, 0.9]]).view(1, 1, 3, 3)
    up = compute_cbam_maps(FixedMaps(m), torch.zeros(1, 3, 6, 5))["skip2"]
    assert up.shape == (1, 1, 6, 5)
    # scale 2, half-pixel centres: output column 4 samples coarse column 1.75 (= 0.25 * c1 + 0.75 * c2),
    # output row 0 lies before the first coarse centre (edge value)
    assert up[0, 0, 0, 0] == pytest.approx(0.1)
    assert up[0, 0, 0, 4] == pytest.approx(0.25 * 0.2 + 0.75 * 0.6)
    assert up[0, 0, 5, 0] == pytest.approx(0.5)


def test_cbam_maps_size_and_range(tiny: TinyNet) -> None:
    tiny.train()
    maps = compute_cbam_maps(tiny, torch.randn(2, 3, H, W))
    assert list(maps) == ["skip2"]
    assert maps["skip2"].shape == (2, 1, H, W)
    assert 0 < maps["skip2"].min() and maps["skip2"].max() < 1
    assert tiny.training  # mode restored
    with pytest.raises(ConfigError, match="cbam_modules"):
        compute_cbam_maps(nn.Conv2d(3, 1, 1), torch.randn(1, 3, H, W))


def test_real_model_gradcam_and_cbam() -> None:
    from cmbstudy.models.registry import get_model

    torch.manual_seed(0)
    settings = dict(widths=(4, 8, 16, 32), kernel_size=5, blocks_per_stage=1, small_kernel=3,
                    mlp_ratio=1.0, norm_groups=2, drop_path=0.0)
    model = get_model("rlk_unet_cbam", **settings)
    x = torch.randn(1, 3, 30, 34)  # not a multiple of 8: padded inside the network
    region = torch.zeros(1, 1, 30, 34, dtype=torch.bool)
    region[..., 10:13, 20:23] = True
    cam = compute_gradcam(model, x, region)
    assert cam.shape == (1, 1, 30, 34) and 0 <= cam.min() and cam.max() == pytest.approx(1.0)
    maps = compute_cbam_maps(model, x)
    assert list(maps) == ["skip1", "skip2", "skip3", "skip4"]
    assert all(v.shape == (1, 1, 30, 34) and 0 < v.min() and v.max() < 1 for v in maps.values())
    assert compute_cbam_maps(get_model("rlk_unet_cbam", **settings, cbam_skips=0), x) == {}


def test_gradcam_and_cbam_figures(rng: np.random.Generator) -> None:
    image = rng.normal(size=(H, W))
    cams = {"without CBAM": rng.random((1, 1, H, W)), "with CBAM": rng.random((H, W))}
    fig = plot_gradcam_comparison(image, cams, lesion_centroids=[[4, 5]], zoom_box=(0, 8, 0, 6))
    assert len(fig.axes) == 4  # image, two maps, colour bar
    assert fig.axes[-1].get_ylabel() == "Grad-CAM activation"
    assert [a.get_title() for a in fig.axes[:3]] == ["image", "without CBAM", "with CBAM"]
    assert fig.axes[1].get_xlim() == pytest.approx((-0.5, 8.5))
    assert [p.center for p in fig.axes[2].patches] == [(5.0, 4.0)]  # (column, row)
    fig = plot_cbam_maps(image, {"skip1": rng.random((H, W)), "skip2": rng.random((H, W)), "skip3": rng.random((H, W))})
    assert len(fig.axes) == 5
    with pytest.raises(InputError, match="differ in shape"):
        plot_gradcam_comparison(image, {"a": rng.random((H, W + 1))})
    with pytest.raises(InputError, match="no map"):
        plot_cbam_maps(image, {})


def test_cam_mass_fraction_by_hand() -> None:
    from cmbstudy.explain.gradcam import compute_cam_mass_fraction

    lesions = np.zeros((5, 11), dtype=bool)
    lesions[2, 5] = True
    # 13 pixels lie within 2 of (2, 5) (dx^2 + dy^2 <= 4), all inside the 5 x 11 slice
    assert compute_cam_mass_fraction(np.ones((5, 11)), lesions, radius=2) == pytest.approx(13 / 55)
    cam = np.zeros((1, 1, 5, 11))
    cam[0, 0, 2, 5], cam[0, 0, 0, 0] = 3.0, 1.0
    assert compute_cam_mass_fraction(cam, lesions, radius=2) == pytest.approx(0.75)
    assert np.isnan(compute_cam_mass_fraction(np.zeros((5, 11)), lesions))
    with pytest.raises(InputError, match="differ in shape"):
        compute_cam_mass_fraction(np.ones((5, 10)), lesions)


def test_slice_explanations_and_focus_table(tiny: TinyNet) -> None:
    from types import SimpleNamespace

    from cmbstudy.explain.gradcam import (
        compute_gradcam_focus,
        compute_slice_explanations,
    )

    rng = np.random.default_rng(3)
    mask = np.zeros((4, H, W), dtype=np.uint8)
    mask[1, 6, 9] = mask[1, 6, 10] = mask[3, 2, 2] = 1  # (Z, X, Y) as preprocessed volumes
    volume = SimpleNamespace(subject_id="007", image=rng.normal(size=(4, H, W)).astype(np.float32), mask=mask,
                             brain=np.ones((4, H, W), dtype=bool))
    ex = compute_slice_explanations({"a": tiny, "b": tiny}, volume, 1, zoom_half_width=3)
    assert ex.image.shape == (W, H) and ex.cams["a"].shape == (W, H)  # display: transposed
    np.testing.assert_allclose(ex.cams["a"], ex.cams["b"])
    assert list(ex.cbam) == ["skip2"] and ex.cbam["skip2"].shape == (W, H)
    assert ex.lesion_centroids.tolist() == [[9.5, 6.0]]  # (row = Y, column = X)
    assert ex.zoom_box == (3.0, 9.0, 6.5, 12.5)
    with pytest.raises(InputError, match="holds no reference lesion"):
        compute_slice_explanations({"a": tiny}, volume, 0)
    focus = compute_gradcam_focus(tiny, [volume, SimpleNamespace(mask=None)], radius=1)
    assert focus[["subject_id", "z", "lesion_pixels"]].values.tolist() == [["007", 1, 2], ["007", 3, 1]]
    assert focus["chance"].tolist() == pytest.approx([8 / (H * W), 5 / (H * W)])  # pixels and 4-neighbours
    assert ((focus["cam_mass_fraction"] >= 0) & (focus["cam_mass_fraction"] <= 1)).all()


def test_gradcam_share_of_a_fixed_tiny_model_on_a_fixed_slice_is_pinned() -> None:
    """The Grad-CAM share near a lesion, of a seeded tiny RLK-UNet + CBAM on a slice drawn by formula: the same
    number on any machine and thread count, to a tolerance far above CPU kernels' last bits and far below what
    a change to the Grad-CAM computation (layer, score, weights, normalisation) moves it."""
    from cmbstudy.explain.gradcam import compute_cam_mass_fraction
    from cmbstudy.models.registry import get_model

    torch.manual_seed(0)
    model = get_model("rlk_unet_cbam", widths=(4, 8, 16, 32), kernel_size=5, blocks_per_stage=1, small_kernel=3,
                      mlp_ratio=1.0, norm_groups=2, drop_path=0.0).eval()
    yy, xx = np.mgrid[:48, :48]
    tissue = (1.0 + 0.2 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
    lesion = (yy - 20) ** 2 + (xx - 28) ** 2 <= 4
    x = torch.from_numpy(np.stack([tissue, np.where(lesion, -2.0, tissue).astype(np.float32), tissue]))[None]
    cam = compute_gradcam(model, x, torch.from_numpy(lesion)[None, None])
    assert compute_cam_mass_fraction(cam[0, 0], lesion, 5.0) == pytest.approx(0.061284, abs=5e-5)
    assert float(cam.sum()) == pytest.approx(482.10, abs=0.05)
