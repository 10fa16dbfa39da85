"""Grad-CAM of the final decoder block (Cho et al. 2026, Figs. 5-6), per lesion, and its focus on lesions.

The paper shows Grad-CAM maps "extracted from the final decoder block" of the
model without and with CBAM on the same axial slice. :func:`compute_gradcam`
wraps :class:`monai.visualize.GradCAM` on the layer a model names in
``model.gradcam_layer``; a region (e.g. one lesion) restricts the score whose
gradient is taken, which gives a per-lesion map.

Model contract (see :mod:`cmbstudy.models`): input (B, 3, H, W); eval forward
returns logits (B, 1, H, W); attribute ``gradcam_layer`` (a name from
``named_modules()``); an optional ``divisor``: the model pads H and W to a
multiple of it; for the CBAM maps, a ``cbam_modules()`` method
(:mod:`cmbstudy.explain.cbam_maps`). Samples must be independent in eval mode
(GroupNorm / eval BatchNorm), so one backward pass serves the whole batch.

The figures of these maps are drawn by :mod:`cmbstudy.figures.explain`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.visualize import GradCAM
from scipy import ndimage

from ..arrays import as_2d
from ..errors import ConfigError, InputError
from ..preprocessing.stacks import neighbour_stack
from .cbam_maps import compute_cbam_maps

__all__ = [
    "RegionScore",
    "compute_gradcam",
    "SliceExplanation",
    "compute_cam_mass_fraction",
    "compute_slice_explanations",
    "compute_gradcam_focus",
]


class RegionScore(nn.Module):
    """Turn a segmentation network into a one-"class" scorer for Grad-CAM.

    ``forward(x) -> (B, 1)``: the sum of the wrapped model's logits over the pixels of
    ``region`` (B, 1, H, W) (all pixels when ``region`` is None).

    Why: MONAI 1.6.1's ``ModelWithHooks`` takes ``logits[:, class_idx].squeeze()`` of
    the model output as the class score and back-propagates its ``.sum()``. On a
    (B, 1, H, W) segmentation output that is the logit summed over every pixel of
    the image, so the map explains "everything the network segments". Returning the
    region-masked sum as a (B, 1) output makes GradCAM's ``class_idx=0`` pick exactly
    that score, and its ``.sum()`` adds the per-sample scores of independent samples.
    The wrapped network lives in the ``model`` attribute: GradCAM's target layer is
    ``"model." + model.gradcam_layer``.
    """

    def __init__(self, model: nn.Module, region: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if isinstance(logits, (list, tuple)):  # a train-mode list: the final output comes first
            logits = logits[0]
        if self.region is not None:
            logits = logits * self.region.to(logits.dtype)
        return logits.sum(dim=(2, 3))


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"model input must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def compute_gradcam(
    model: nn.Module,
    x: torch.Tensor,
    region: torch.Tensor | np.ndarray | None = None,
    layer: str | None = None,
) -> np.ndarray:
    """Grad-CAM of a segmentation network, optionally for the logit score inside a region (paper Figs. 5-6).

    Grad-CAM (Selvaraju et al. 2017) through :class:`monai.visualize.GradCAM`:
    ReLU(sum_c w_c A_c) with A the activations of ``layer`` and w_c the spatial mean
    of the score's gradient. The score is the sum of the output logits over
    ``region`` (:class:`RegionScore`). The map is bilinearly resized to the input
    size and divided by its maximum per sample (all zero when nothing contributes
    positively), so values lie in [0, 1].

    The model itself is left untouched: GradCAM registers hooks that it never
    removes (and may switch ``inplace`` activations off), so it works on a deep copy.
    The input is zero-padded to a multiple of ``model.divisor`` (when the model has
    one, as the network pads internally) so that the layer's grid covers exactly the
    padded input, and the map is cropped back.

    Args:
        model: network following the contract in the module docstring.
        x: (B, 3, H, W) input slices (with their neighbours).
        region: (B, 1, H, W) bool, the pixels whose logits are scored (e.g. one lesion);
            None scores every pixel.
        layer: module name in ``model.named_modules()``; default ``model.gradcam_layer``.

    Returns:
        (B, 1, H, W) float32 numpy array in [0, 1].

    Raises:
        InputError: ``x`` is not 4D, ``region`` has another shape or is empty for a sample.
        ConfigError: the model names no Grad-CAM layer, or the layer does not exist.
    """
    _check_input(x)
    layer = layer if layer is not None else getattr(model, "gradcam_layer", None)
    names = {name for name, _ in model.named_modules()}
    if not layer or layer not in names:
        raise ConfigError(
            f"Grad-CAM layer {layer!r} is not a module of the model: pass layer= one of "
            f"named_modules() (the model should define gradcam_layer)"
        )
    b, _, h, w = x.shape
    if region is not None:
        region = torch.as_tensor(np.asarray(region) if not isinstance(region, torch.Tensor) else region)
        if tuple(region.shape) != (b, 1, h, w):
            raise InputError(f"Grad-CAM region must have shape {(b, 1, h, w)}, got {tuple(region.shape)}")
        region = region.to(device=x.device, dtype=torch.bool)
        empty = [i for i in range(b) if not bool(region[i].any())]
        if empty:
            raise InputError(f"Grad-CAM region is empty for sample(s) {empty}: give at least one pixel per sample")
    divisor = int(getattr(model, "divisor", 1))
    pad_h, pad_w = (-h) % divisor, (-w) % divisor
    # an input that requires grad lets the full backward hook see its module's input
    # gradients even when the target layer is the first one (no torch warning)
    x_in = F.pad(x.detach(), (0, pad_w, 0, pad_h)).requires_grad_(True)
    if region is not None:
        region = F.pad(region, (0, pad_w, 0, pad_h))  # padded pixels are never scored
    scorer = RegionScore(copy.deepcopy(model), region)
    # only the activations' gradients make the map: with the weights frozen the backward pass skips their
    # gradients (the input requires grad, so every layer's backward hook still fires)
    scorer.requires_grad_(False)
    cam = GradCAM(nn_module=scorer, target_layers=f"model.{layer}", postprocessing=_identity)
    with torch.enable_grad():
        maps = cam(x=x_in, class_idx=0)
    maps = maps.detach()[..., :h, :w].float().cpu().numpy()
    peak = maps.reshape(b, -1).max(axis=1).reshape(b, 1, 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        maps = np.where(peak > 0, maps / np.where(peak > 0, peak, 1.0), 0.0)
    return np.clip(maps, 0.0, 1.0).astype(np.float32)


def compute_cam_mass_fraction(cam: np.ndarray, lesions: np.ndarray, radius: float = 5.0) -> float:
    """Share of a Grad-CAM map's mass within ``radius`` pixels of reference lesion pixels.

    sum(cam over the neighbourhood) / sum(cam), the neighbourhood being every pixel whose
    Euclidean distance to a lesion pixel is at most ``radius`` (scipy's distance transform).
    A map concentrated on the lesions gives 1; a uniform map gives the neighbourhood's
    share of the slice.

    Args:
        cam: (H, W) non-negative map (a (1, 1, H, W) output of :func:`compute_gradcam` is accepted).
        lesions: (H, W) bool reference lesion pixels.
        radius: neighbourhood radius (pixels of the map's grid).

    Returns:
        The fraction in [0, 1]; NaN when the map is all zero or there is no lesion pixel.

    Raises:
        InputError: shapes differ, or a negative value or radius.
    """
    c, m = as_2d(cam, "Grad-CAM map").astype(np.float64), as_2d(lesions, "lesion mask").astype(bool)
    if c.shape != m.shape:
        raise InputError(f"Grad-CAM map {c.shape} and lesion mask {m.shape} differ in shape")
    if radius < 0 or (c < 0).any():
        raise InputError(f"radius {radius} and the map's values must be non-negative")
    total = float(c.sum())
    if total <= 0 or not m.any():
        return float("nan")
    near = ndimage.distance_transform_edt(~m) <= radius
    return float(c[near].sum() / total)


@dataclass(frozen=True)
class SliceExplanation:
    """Grad-CAM of several models and CBAM attention on one preprocessed axial slice, in display orientation.

    Arrays are (H, W) = (Y, X) of the preprocessed (Z, X, Y) volume transposed: draw
    them with ``origin="lower"`` (anterior at the top, patient's right on the right).
    """

    subject_id: str
    z: int  # axial slice of the preprocessed volume
    image: np.ndarray  # (H, W) z-scored image
    lesions: np.ndarray  # (H, W) bool reference lesion pixels
    cams: dict[str, np.ndarray]  # model label -> (H, W) Grad-CAM in [0, 1] for the lesion pixels' score
    cbam: dict[str, np.ndarray]  # skip name -> (H, W) CBAM spatial attention (first model with CBAM)
    lesion_centroids: np.ndarray  # (n, 2) lesion centres (row, column)
    zoom_box: tuple[float, float, float, float]  # (x0, x1, y0, y1) around the first lesion (Fig. 6)


def _lesion_input(volume: object, z: int) -> tuple[torch.Tensor, torch.Tensor]:
    mask = getattr(volume, "mask", None)
    if mask is None or not 0 <= z < mask.shape[0] or not mask[z].any():
        raise InputError(f"slice {z} of subject {getattr(volume, 'subject_id', '?')} holds no reference lesion: "
                         "choose a slice with one (volume.mask[z].any())")
    x = torch.from_numpy(np.ascontiguousarray(neighbour_stack(np.asarray(volume.image, np.float32), z)))[None]
    return x, torch.from_numpy(np.asarray(mask[z]) > 0)[None, None]


def compute_slice_explanations(
    models: Mapping[str, nn.Module], volume: object, z: int, zoom_half_width: int = 12
) -> SliceExplanation:
    """Grad-CAM of each model for the score of the slice's reference lesions, and CBAM maps (Figs. 5-6).

    Args:
        models: label -> network (e.g. {"without CBAM": ..., "with CBAM": ...}), in eval mode.
        volume: a :class:`cmbstudy.preprocessing.geometry.PreprocessedVolume` (image and mask (Z, S, S)).
        z: axial slice holding at least one reference lesion.
        zoom_half_width: half side (pixels) of the zoom box around the first lesion.

    Raises:
        InputError: no model, or the slice holds no reference lesion.
        ConfigError: a model names no Grad-CAM layer.
    """
    if not models:
        raise InputError("give at least one model to explain")
    x, region = _lesion_input(volume, z)
    cams = {label: compute_gradcam(model, x, region)[0, 0].T for label, model in models.items()}
    cbam: dict[str, np.ndarray] = {}
    for model in models.values():
        if hasattr(model, "cbam_modules"):
            cbam = {name: m[0, 0].T for name, m in compute_cbam_maps(model, x).items()}
            if cbam:
                break
    lesions = region[0, 0].numpy().T
    labels, n = ndimage.label(lesions)
    centroids = np.array(ndimage.center_of_mass(lesions, labels, range(1, n + 1)), dtype=float).reshape(-1, 2)
    h, w = lesions.shape
    half = float(min(zoom_half_width, (min(h, w) - 1) / 2))
    row, col = centroids[0]
    cx, cy = float(np.clip(col, half, w - 1 - half)), float(np.clip(row, half, h - 1 - half))
    return SliceExplanation(
        subject_id=str(getattr(volume, "subject_id", "")), z=int(z), image=np.asarray(volume.image[z]).T,
        lesions=lesions, cams=cams, cbam=cbam, lesion_centroids=centroids,
        zoom_box=(cx - half, cx + half, cy - half, cy + half),
    )


def compute_gradcam_focus(model: nn.Module, volumes: Sequence[object], radius: float = 5.0) -> pd.DataFrame:
    """Grad-CAM mass near the reference lesions on every validation slice that holds one.

    For each slice with reference lesions, the Grad-CAM of the score of its lesion pixels
    (:func:`compute_gradcam`) and :func:`compute_cam_mass_fraction` within ``radius``
    pixels of them. ``chance`` is the neighbourhood's share of the brain pixels: what a
    map spread evenly over the brain would score.

    Args:
        model: network with a Grad-CAM layer.
        volumes: preprocessed volumes with ``mask`` (Z, S, S); volumes without one are skipped.
        radius: neighbourhood radius (in-plane pixels of the preprocessed grid).

    Returns:
        One row per slice: subject_id, z, lesion_pixels, cam_mass_fraction, chance.

    Raises:
        ConfigError: the model names no Grad-CAM layer.
    """
    rows = []
    for volume in volumes:
        mask = getattr(volume, "mask", None)
        if mask is None:
            continue
        zs = [int(z) for z in np.flatnonzero(np.asarray(mask).reshape(mask.shape[0], -1).any(axis=1))]
        if not zs:
            continue
        inputs = [_lesion_input(volume, z) for z in zs]  # one Grad-CAM pass per subject: samples are independent
        cams = compute_gradcam(model, torch.cat([x for x, _ in inputs]), torch.cat([r for _, r in inputs]))
        brain = getattr(volume, "brain", None)
        for z, (_, region), cam in zip(zs, inputs, cams):
            lesions = region[0, 0].numpy()
            near = ndimage.distance_transform_edt(~lesions) <= radius
            inside = np.asarray(brain[z], dtype=bool) if brain is not None else np.ones_like(lesions)
            chance = float((near & inside).sum() / inside.sum()) if inside.any() else float("nan")
            rows.append({"subject_id": str(volume.subject_id), "z": z, "lesion_pixels": int(lesions.sum()),
                         "cam_mass_fraction": compute_cam_mass_fraction(cam, lesions, radius), "chance": chance})
    return pd.DataFrame(rows, columns=["subject_id", "z", "lesion_pixels", "cam_mass_fraction", "chance"])
