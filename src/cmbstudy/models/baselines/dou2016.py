"""Dou et al. (2016, IEEE TMI): two-stage CMB detection with 3D convolutional networks.

Reconstructed from the publication. Stage 1, screening: a 3D fully
convolutional network (convolutions and 1 x 1 x 1 "fully connected" layers,
no dense layer) scores every voxel of the volume; candidates are the local
maxima of its probability map above a screening threshold. Stage 2,
discrimination: a 3D CNN (convolutions, max pooling, fully connected layers)
classifies a small patch centred on each candidate as CMB or mimic, trained
on reference lesions and on the screening stage's hard false positives.

Here both networks live in one module (:class:`Dou2016`). Training
(:meth:`Dou2016.training_loss`, on :class:`cmbstudy.training.sampling_3d.PatchDataset`
patches) adds the screening loss (the study's Dice + Focal on the patch) and
the discriminator's binary cross-entropy on sub-patches centred on (a)
reference lesion voxels and (b) the screening map's highest-scoring local
maxima outside the lesions (hard negatives, found without gradient). In eval
mode the forward pass returns a logit map in which every candidate's
neighbourhood (screening-positive voxels within the local-maximum window)
carries the discriminator's logit and every other voxel
:data:`NEGATIVE_LOGIT`, so thresholding at 0.5 and 3D connected components
work as for every other model and a lesion's maximum probability is the
discriminator's.

Approximate: the layer sizes (scaled by ``model.widths``; the published
networks have 64 and 32-64 filters and 150 / 500-100 unit dense layers),
the screening network keeps full resolution (no pooling) so its map lies on
the input grid, the patch sizes (:data:`DISCRIMINATOR_PATCH`, for the study's
thicker slices), the two stages trained jointly rather than one after the
other, the screening loss (Dice + Focal on the map rather than a patch
classification loss), and candidate extraction by local maxima in windows
of sliding-window inference (a candidate at a window's edge sees zeros
beyond it).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import ConfigError, InputError
from ..layers import check_spacing, prior_bias
from ..losses import make_dice_focal
from ..registry import register_model

__all__ = ["Dou2016", "build_dou2016", "DISCRIMINATOR_PATCH", "NEGATIVE_LOGIT", "SCREEN_THRESHOLD"]

#: Sub-patch (slices, rows, columns) classified by the discriminator, in voxels.
DISCRIMINATOR_PATCH = (6, 16, 16)
#: Screening probability a local maximum must reach to become a candidate.
SCREEN_THRESHOLD = 0.3
#: Local-maximum window (slices, rows, columns); also the region a candidate's score covers.
CANDIDATE_WINDOW = (3, 5, 5)
#: Logit of every voxel that is not part of a candidate (sigmoid ~ 2e-9).
NEGATIVE_LOGIT = -20.0
#: Most candidates classified per patch in eval mode (the highest screening scores).
MAX_CANDIDATES = 32
#: Lesion voxels (positives) and hard negatives per training patch for the discriminator.
POSITIVES_PER_PATCH, NEGATIVES_PER_PATCH = 4, 4
_WINDOW_PAD = tuple(k // 2 for k in CANDIDATE_WINDOW)


def _conv(cin: int, cout: int, kernel: Sequence[int]) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel)
    return nn.Sequential(nn.Conv3d(cin, cout, tuple(kernel), padding=padding), nn.ReLU(inplace=True))


def _local_maxima(scores: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, 1, D, H, W)``: voxels equal to the maximum of their :data:`CANDIDATE_WINDOW`."""
    pooled = F.max_pool3d(scores, CANDIDATE_WINDOW, stride=1, padding=_WINDOW_PAD)
    return scores >= pooled


def _crop_subpatches(x: torch.Tensor, points: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Sub-patches of ``x`` (B, C, D, H, W) centred on ``points`` (N, 4: b, z, y, x), zero outside: (N, C, d, h, w)."""
    d, h, w = size
    padded = F.pad(x, (w // 2, w - w // 2, h // 2, h - h // 2, d // 2, d - d // 2))
    crops = [padded[b, :, z : z + d, y : y + h, xx : xx + w] for b, z, y, xx in points.tolist()]
    return torch.stack(crops) if crops else x.new_zeros((0, x.shape[1], d, h, w))


class Dou2016(nn.Module):
    """Screening FCN + discrimination CNN: ``(B, 1, D, H, W)`` -> ``(B, 1, D, H, W)`` logits.

    Train mode: the screening logits. Eval mode: the candidate map described
    in the module docstring. :meth:`training_loss` is what :func:`cmbstudy.training.fit` calls.

    Raises:
        ConfigError: fewer than four widths, a width below 1, or a negative spacing.
    """

    input_kind = "3d"

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), spacing_mm: float = 0.0) -> None:
        super().__init__()
        w = tuple(int(v) for v in widths)
        if len(w) < 4 or min(w) < 1:
            raise ConfigError(f"model.widths={w}: the Dou 2016 networks need four widths >= 1")
        self.spacing_mm = check_spacing(spacing_mm)
        # screening FCN: 3D convolutions, then "fully connected" layers as 1x1x1 convolutions
        self.screen = nn.Sequential(
            _conv(1, w[0], (3, 5, 5)), _conv(w[0], w[1], (3, 3, 3)), _conv(w[1], w[1], (1, 3, 3)),
            _conv(w[1], w[2], (1, 1, 1)), nn.Conv3d(w[2], 1, 1),
        )
        nn.init.constant_(self.screen[-1].bias, prior_bias())
        # discrimination CNN on DISCRIMINATOR_PATCH sub-patches
        self.discriminator = nn.Sequential(
            _conv(1, w[0], (3, 5, 5)), nn.MaxPool3d(2, ceil_mode=True),
            _conv(w[0], w[1], (3, 3, 3)), nn.MaxPool3d((1, 2, 2), ceil_mode=True),
            _conv(w[1], w[2], (1, 3, 3)), nn.AdaptiveMaxPool3d(1), nn.Flatten(),
            nn.Linear(w[2], w[3]), nn.ReLU(inplace=True), nn.Dropout(0.2), nn.Linear(w[3], 1),
        )
        self.screen_loss = make_dice_focal()

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 1:
            raise InputError(f"the Dou 2016 networks take (B, 1, D, H, W) volumes, got {tuple(x.shape)}")

    def discriminate(self, x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Discriminator logits ``(N,)`` of the sub-patches of ``x`` centred on ``points`` (N, 4: b, z, y, x)."""
        patches = _crop_subpatches(x, points, DISCRIMINATOR_PATCH)
        return self.discriminator(patches)[:, 0] if len(patches) else x.new_zeros((0,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Screening logits (train mode) or the candidate map (eval mode) of ``x`` (B, 1, D, H, W).

        Raises:
            InputError: ``x`` is not ``(B, 1, D, H, W)``.
        """
        self._check(x)
        scores = self.screen(x)
        if self.training:
            return scores
        prob = torch.sigmoid(scores.float())
        candidates = _local_maxima(scores) & (prob >= SCREEN_THRESHOLD)
        ranked = torch.where(candidates, prob, torch.zeros_like(prob)).flatten(1)
        top, index = ranked.topk(min(MAX_CANDIDATES, ranked.shape[1]), dim=1)
        keep = top > 0
        batch = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(index)[keep]
        spatial = index[keep]
        h, w = x.shape[3:]
        points = torch.stack([batch, spatial // (h * w), (spatial // w) % h, spatial % w], 1)
        sparse = torch.full_like(prob, -math.inf)
        if len(points):
            logits = self.discriminate(x, points).float()
            sparse[points[:, 0], 0, points[:, 1], points[:, 2], points[:, 3]] = logits
        spread = F.max_pool3d(sparse, CANDIDATE_WINDOW, stride=1, padding=_WINDOW_PAD)
        region = torch.isfinite(spread) & (prob >= SCREEN_THRESHOLD)
        return torch.where(region, spread, torch.full_like(spread, NEGATIVE_LOGIT))

    def training_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Screening Dice + Focal plus discriminator cross-entropy on lesion and hard-negative sub-patches.

        Positives: up to :data:`POSITIVES_PER_PATCH` random lesion voxels per
        patch (``torch``'s global generator). Hard negatives: the
        :data:`NEGATIVES_PER_PATCH` highest screening local maxima per patch
        farther than the candidate window from any lesion voxel (no gradient
        through their choice). Returns a scalar tensor.

        Raises:
            InputError: ``x`` or ``target`` is not ``(B, 1, D, H, W)``, or they differ in shape.
        """
        self._check(x)
        if target.shape != x.shape:
            raise InputError(f"target {tuple(target.shape)} must have the shape of the input {tuple(x.shape)}")
        target = target.float()
        scores = self.screen(x).float()
        loss = self.screen_loss(scores, target)
        lesion = target > 0.5
        with torch.no_grad():
            near = F.max_pool3d(target, CANDIDATE_WINDOW, stride=1, padding=_WINDOW_PAD) > 0.5
            hard = torch.where(_local_maxima(scores) & ~near, scores, torch.full_like(scores, -math.inf)).flatten(1)
            top, index = hard.topk(min(NEGATIVES_PER_PATCH, hard.shape[1]), dim=1)
        points, labels = [], []
        h, w = x.shape[3:]
        for b in range(x.shape[0]):
            voxels = lesion[b, 0].nonzero()
            if len(voxels):
                pick = voxels[torch.randperm(len(voxels))[:POSITIVES_PER_PATCH].to(voxels.device)]
                points += [(b, *v) for v in pick.tolist()]
                labels += [1.0] * len(pick)
            for i in index[b][torch.isfinite(top[b])].tolist():
                points.append((b, i // (h * w), (i // w) % h, i % w))
                labels.append(0.0)
        if points:
            logits = self.discriminate(x, torch.tensor(points, device=x.device)).float()
            loss = loss + F.binary_cross_entropy_with_logits(logits, torch.tensor(labels, device=x.device))
        return loss


def build_dou2016(widths: Sequence[int] = (16, 32, 64, 128), spacing_mm: float = 0.0) -> Dou2016:
    """The registry builder of ``dou2016_cnn3d`` (takes ``model.widths`` and ``model.spacing_mm``)."""
    return Dou2016(widths, spacing_mm)


register_model("dou2016_cnn3d", build_dou2016, ("widths", "spacing_mm"))
