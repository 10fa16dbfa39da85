"""Training loss: Dice + Focal over the final and auxiliary outputs (Cho et al. 2026, section 2.3).

``L = sum_k lambda_k * (Dice(p_k, g_k) + Focal(p_k, g_k))`` with
``lambda = (0.4, 0.3, 0.2, 0.1)`` from the final output to the deepest
auxiliary output. Both pieces are MONAI's: ``DiceFocalLoss(sigmoid=True)``
inside ``DeepSupervisionLoss``. MONAI resizes the target to each auxiliary
output by nearest-exact interpolation, which keeps one pixel in 64 at 1/8:
a 2-voxel CMB vanishes from the coarse targets. Here the target is max-pooled
instead (:func:`downsample_target`), so every lesion is present at every scale;
MONAI's loss offers no such mode, so this one method is written by hand.

The loss lives with the networks because some networks train on their own
loss (the two-stage baselines' ``training_loss``), built from the same
:func:`make_dice_focal` as every other network's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceFocalLoss
from scipy import ndimage

from ..config import TrainConfig
from ..errors import ConfigError, InputError

__all__ = ["FOCAL_GAMMA", "DICE_SMOOTH", "make_dice_focal", "downsample_target", "DeepSupervisedDiceFocal",
           "instance_labels", "BlobDice", "WithBlobDice", "make_loss"]

#: Focal-loss focusing parameter. The paper's value was lost from its text;
#: 2 is the value of Lin et al. (2017) and MONAI's default.
FOCAL_GAMMA = 2.0
#: Dice smoothing added to numerator and denominator (the paper's small epsilon).
DICE_SMOOTH = 1e-5


def make_dice_focal() -> DiceFocalLoss:
    """The study's Dice + Focal loss of one output, 2D ``(B, 1, H, W)`` or 3D ``(B, 1, D, H, W)`` logits.

    Batch Dice (intersection and union summed over the batch, see :func:`make_loss`),
    smoothing :data:`DICE_SMOOTH`, focal gamma :data:`FOCAL_GAMMA`, both terms weighted 1.
    """
    return DiceFocalLoss(
        include_background=True,
        sigmoid=True,
        batch=True,
        smooth_nr=DICE_SMOOTH,
        smooth_dr=DICE_SMOOTH,
        gamma=FOCAL_GAMMA,
        lambda_dice=1.0,
        lambda_focal=1.0,
    )


def downsample_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Max-pool a ``(B, 1, H, W)`` 0/1 target to the ``size`` of an auxiliary output, keeping every lesion.

    The auxiliary output at 1/k (k a power of two) covers the input zero-padded at the
    bottom and right to a multiple of k, cropped to ``ceil(H/k) x ceil(W/k)``; the target
    is padded and pooled over the same k x k cells, so a pixel is 1 when any target pixel
    of its cell is. A ``size`` that no power of two gives is reached by adaptive max pooling.
    """
    height, width = target.shape[-2:]
    size = tuple(int(v) for v in size)
    for e in range(11):
        k = 2**e
        if (-(-height // k), -(-width // k)) == size:
            padded = F.pad(target, (0, (-width) % k, 0, (-height) % k))
            return F.max_pool2d(padded, k) if k > 1 else padded
    return F.adaptive_max_pool2d(target, size)


class DeepSupervisedDiceFocal(DeepSupervisionLoss):
    """MONAI ``DeepSupervisionLoss`` whose weights must match the number of outputs.

    MONAI silently truncates a longer weight list; here a list of outputs must
    have exactly ``len(weights)`` entries, except that a single output (a model
    without deep supervision) gets weight 1.

    Call: ``loss(outputs, target)`` with ``outputs`` a list ``[final (B,1,H,W),
    aux (B,1,h_k,w_k), ...]`` of logits and ``target`` ``(B, 1, H, W)`` float
    in {0, 1}; returns a scalar tensor. Targets of smaller outputs are
    max-pooled (:func:`downsample_target`), not interpolated.
    """

    def get_loss(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one output against the target at the output's size."""
        if input.shape[2:] != target.shape[2:]:
            target = downsample_target(target, input.shape[2:])
        return self.loss(input, target)

    def get_weights(self, levels: int = 1) -> list[float]:
        """Weights of ``levels`` outputs, final first.

        Raises:
            ConfigError: ``levels`` is neither 1 nor the number of weights.
        """
        weights = list(self.weights or [])
        if levels == 1:
            return [1.0]
        if levels != len(weights):
            raise ConfigError(
                f"the model returned {levels} outputs but train.deep_supervision_weights has "
                f"{len(weights)} weights {weights}; give one weight per output (final first)"
            )
        return weights

    def forward(
        self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        """Weighted Dice + Focal loss.

        Raises:
            InputError: ``target`` is not ``(B, 1, H, W)`` matching the final output.
        """
        final = input[0] if isinstance(input, (list, tuple)) else input
        if target.ndim != 4 or target.shape[1] != 1 or target.shape[2:] != final.shape[2:]:
            raise InputError(
                f"loss target must be (B, 1, H, W) like the final output {tuple(final.shape)}, "
                f"got {tuple(target.shape)}"
            )
        if isinstance(input, tuple):
            input = list(input)
        return super().forward(input, target.float())


def make_loss(cfg: TrainConfig) -> torch.nn.Module:
    """Dice + Focal loss with deep-supervision weights ``cfg.deep_supervision_weights``.

    Dice choices for tiny, sparse lesions: ``batch=True`` sums intersection
    and union over the whole batch before dividing (the "batch Dice" of
    nnU-Net). With per-slice Dice, a slice without CMB scores about 1 for any
    non-zero prediction, so half of the sampled slices would push all
    probabilities to zero; pooled over the batch, a lesion-free slice only
    adds its false-positive mass to the denominator and the Focal term handles
    empty slices. The smoothing is the small epsilon of the paper's formula
    (1e-5 on numerator and denominator, MONAI's default): a larger value
    (e.g. 1) would dominate a 3-10 voxel lesion's Dice. ``gamma`` is
    :data:`FOCAL_GAMMA`; no alpha balancing (the Dice term already
    counters the class imbalance).

    Raises:
        ConfigError: no weights, or a negative weight.
    """
    weights = [float(w) for w in cfg.deep_supervision_weights]
    if not weights or any(w < 0 for w in weights):
        raise ConfigError(
            f"train.deep_supervision_weights must be non-empty and >= 0, got {weights}"
        )
    if cfg.blob_weight < 0:
        raise ConfigError(f"train.blob_weight={cfg.blob_weight} must be >= 0 (0: no lesion-wise term)")
    loss = DeepSupervisedDiceFocal(make_dice_focal(), weights=weights)
    return WithBlobDice(loss, cfg.blob_weight) if cfg.blob_weight > 0 else loss


def instance_labels(target: torch.Tensor) -> torch.Tensor:
    """Connected components of each sample's 0/1 target ``(B, 1, ...)``, full connectivity; int64, 0 background."""
    masks = target.detach().cpu().numpy() > 0.5
    labels = np.zeros(masks.shape, dtype=np.int64)
    for b in range(masks.shape[0]):
        structure = np.ones((3,) * (masks.ndim - 2), bool)
        labels[b, 0] = ndimage.label(masks[b, 0], structure=structure)[0]
    return torch.from_numpy(labels).to(target.device)


class BlobDice(torch.nn.Module):
    """Lesion-wise Dice: every lesion of the target weighs the same, one voxel or a hundred.

    The Dice term of the "blob loss" of Kofler et al. (2023): for each lesion k
    of each sample, the probabilities of the sample's other lesions are set to 0
    and the soft Dice of the rest of the map against lesion k is taken over the
    whole sample, so a missed one-voxel CMB costs as much as a missed large
    one, and false-positive mass anywhere in the sample lowers every lesion's
    Dice. The loss is the mean of ``1 - Dice`` over all lesions of the batch (0
    for a batch without lesions). MONAI has no instance-wise loss, so this one
    is written here.

    Call: ``loss(logits, target)`` with ``logits`` and ``target`` ``(B, 1, ...)``.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(logits.float())
        labels = instance_labels(target)
        terms = []
        for b in range(prob.shape[0]):
            n = int(labels[b].max())
            if n == 0:
                continue
            ids = torch.arange(1, n + 1, device=labels.device).view(n, *([1] * (labels.ndim - 1)))
            lesion = (labels[b : b + 1] == ids).float()  # (n, 1, ...)
            others = (labels[b : b + 1] > 0).float() - lesion
            kept = prob[b : b + 1] * (1.0 - others)
            inter = (kept * lesion).flatten(1).sum(1)
            denominator = kept.flatten(1).sum(1) + lesion.flatten(1).sum(1)
            terms.append(1.0 - (2.0 * inter + DICE_SMOOTH) / (denominator + DICE_SMOOTH))
        if not terms:
            return logits.sum() * 0.0
        return torch.cat(terms).mean()


class WithBlobDice(torch.nn.Module):
    """``loss(outputs, target) + weight * BlobDice(final output, target)`` (:class:`BlobDice`)."""

    def __init__(self, loss: torch.nn.Module, weight: float) -> None:
        super().__init__()
        self.loss, self.weight, self.blob = loss, float(weight), BlobDice()

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        final = input[0] if isinstance(input, (list, tuple)) else input
        return self.loss(input, target) + self.weight * self.blob(final, target)

