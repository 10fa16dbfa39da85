"""Inference: batched volume prediction, lesion table, device and run-folder errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from cmbstudy.data.run_folder import load_run_profile
from cmbstudy.device import resolve_device
from cmbstudy.errors import ConfigError, InputError, OutputError
from cmbstudy.evaluation.lesions import find_lesions
from cmbstudy.inference.predict import lesion_table, predict_dataset
from cmbstudy.inference.sliding_window import predict_logits, predict_volume
from cmbstudy.preprocessing.cache import default_cache_dir


@dataclass
class FakeVolume:
    subject_id: str
    image: np.ndarray  # (Z, S, S)


class NeighbourSum(nn.Module):
    """Logit = channel 0 + channel 2 - channel 1 (exposes the neighbour order), any batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] + x[:, 2] - x[:, 1])[:, None]


def test_predict_volume_shapes_neighbours_and_batching() -> None:
    # (5, 6, 7) volume whose slice z holds the value z
    image = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None], (5, 6, 7)).copy()
    logits = predict_logits(NeighbourSum(), image, batch_size=2, device="cpu")
    assert logits.shape == (5, 6, 7) and logits.dtype == np.float32
    # z (z-1) + (z+1) - z = z for inner slices; z=0: 0 + 1 - 0 = 1; z=4: 3 + 4 - 4 = 3 (edge repeated)
    np.testing.assert_allclose(logits[:, 0, 0], [1.0, 1.0, 2.0, 3.0, 3.0])
    prob = predict_volume(NeighbourSum(), FakeVolume("001", image), batch_size=3, device="cpu")
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    prob_one = predict_volume(NeighbourSum(), FakeVolume("001", image), batch_size=1, device="cpu")
    np.testing.assert_array_equal(prob, prob_one)
    with pytest.raises(ConfigError, match="batch size 0"):
        predict_logits(NeighbourSum(), image, batch_size=0, device="cpu")


def test_predict_volume_restores_train_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Dropout(0.5))
    model.train()
    predict_volume(model, FakeVolume("001", np.zeros((3, 8, 8), np.float32)), 2, "cpu")
    assert model.training


def test_predict_logits_of_the_rlk_unet_match_its_own_forward_pass() -> None:
    # the prediction runs a folded copy, in the layout and batch that suit the device; the logits are the model's
    from cmbstudy.models.registry import get_model
    from cmbstudy.preprocessing.stacks import volume_stacks

    torch.manual_seed(0)
    model = get_model("rlk_unet_cbam", widths=(8, 16), norm_groups=4).train()
    layout = [p.is_contiguous() for p in model.parameters()]
    image = np.random.default_rng(0).normal(size=(5, 32, 32)).astype(np.float32)
    logits = predict_logits(model, image, batch_size=8, device="cpu")
    assert model.training and [p.is_contiguous() for p in model.parameters()] == layout
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(volume_stacks(image)))[:, 0].numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_lesion_table_hand_computed() -> None:
    volume = np.zeros((9, 10, 11), dtype=np.float32)
    volume[1:3, 2, 3] = 0.9  # 2 voxels, centroid (1.5, 2, 3)
    volume[6, 7, 8] = 0.7  # 1 voxel
    lesions = find_lesions(volume, 0.5)
    affine = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, 5], [0, 0, 3.0, 1], [0, 0, 0, 1]])
    table = lesion_table(lesions, affine)
    assert list(table.columns) == ["lesion_id", "x_vox", "y_vox", "z_vox", "x_mm", "y_mm", "z_mm",
                                   "n_voxels", "volume_mm3", "max_prob"]
    first = table.iloc[0]
    assert (first.x_vox, first.y_vox, first.z_vox) == (1.5, 2.0, 3.0)
    assert (first.x_mm, first.y_mm, first.z_mm) == (-7.0, 9.0, 10.0)
    assert first.n_voxels == 2 and first.volume_mm3 == pytest.approx(24.0)
    assert table["max_prob"].tolist() == pytest.approx([0.9, 0.7])
    assert table["lesion_id"].tolist() == [1, 2]


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="'tpu9' is not a device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMBSTUDY_CACHE", raising=False)
    assert default_cache_dir(tmp_path / "train" / "fold0") == (tmp_path / "train" / ".cmbstudy_cache").resolve()
    monkeypatch.setenv("CMBSTUDY_CACHE", str(tmp_path / "c"))
    assert default_cache_dir(tmp_path / "x") == tmp_path / "c"


def test_run_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="profile.yaml does not exist"):
        load_run_profile(tmp_path)
    (tmp_path / "profile.yaml").write_text("name: smoke\ntrain:\n  epochs: 3\n")
    assert load_run_profile(tmp_path).train.epochs == 3
    with pytest.raises(InputError, match="checkpoint_best.pt does not exist"):
        predict_dataset(tmp_path, tmp_path, tmp_path / "pred", progress=False)
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("")
    with pytest.raises(OutputError, match="already holds results"):
        predict_dataset(tmp_path, tmp_path, out, progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "profile.yaml").write_text("train:\n  epochz: 3\n")
    with pytest.raises(InputError, match="not a valid profile"):
        load_run_profile(tmp_path / "bad")
