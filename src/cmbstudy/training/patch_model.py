"""Training the second look's patch CNN (:class:`~cmbstudy.models.patch_net.PatchNet`) on blob candidates.

Part of the image model of :mod:`cmbstudy.training.second_look`: the candidates
are the blobs of a run's training subjects, found with no network, labelled as
that module's docstring says (1: a CMB, 0: not one, -1: beside one, left out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..inference.features import candidate_patches
from ..models.patch_net import PatchNet

if TYPE_CHECKING:
    from .second_look import CandidateSet

__all__ = ["PATCH_EPOCHS", "PATCH_POSITIVE_SHARE", "PATCH_BATCH", "PATCH_LR", "PATCH_WEIGHT_DECAY", "fit_patch_model"]

#: The patch CNN's training (:func:`fit_patch_model`): passes over the negatives, the share of positives drawn
#: (with replacement) per negative in each pass, the batch, AdamW's step size and weight decay.
PATCH_EPOCHS, PATCH_POSITIVE_SHARE, PATCH_BATCH, PATCH_LR, PATCH_WEIGHT_DECAY = 12, 1 / 8, 256, 2e-3, 1e-3


def fit_patch_model(blobs: CandidateSet, seed: int) -> PatchNet | None:
    """The image model's patch CNN trained on the patches of ``blobs`` (candidates beside a CMB left out); None
    with fewer than two candidates of either kind.

    CMBs are a few per thousand blobs, so each pass over the negatives draws positives, with replacement, to an
    eighth of them; each batch is turned by a multiple of 90 degrees in-plane and flipped at random (a CMB has
    no direction). Binary cross-entropy, AdamW. Seeded: the same blobs and seed give the same weights on one
    machine and thread count; torch's global random state is left as it was.
    """
    known = blobs.labels >= 0
    labels = blobs.labels[known]
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(positives) < 2 or len(negatives) < 2:
        return None
    patches = candidate_patches(blobs.features[known])
    target = torch.from_numpy(labels.astype(np.float32))
    rng = np.random.default_rng(seed)
    memory = torch.channels_last_3d  # measured on one CPU thread: 60 ms per batch against 69 contiguous
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PatchNet().to(memory_format=memory)
        optimizer = torch.optim.AdamW(model.parameters(), lr=PATCH_LR, weight_decay=PATCH_WEIGHT_DECAY)
        model.train()
        for _ in range(PATCH_EPOCHS):
            drawn = rng.choice(positives, max(1, int(len(negatives) * PATCH_POSITIVE_SHARE)))
            order = rng.permutation(np.concatenate([drawn, negatives]))
            for start in range(0, len(order), PATCH_BATCH):
                batch = torch.from_numpy(order[start:start + PATCH_BATCH])
                x = torch.rot90(patches[batch], int(rng.integers(4)), (2, 3))
                x = x.flip(2) if rng.random() < 0.5 else x
                x = x.flip(4) if rng.random() < 0.5 else x
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(x.contiguous(memory_format=memory)), target[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.to(memory_format=torch.contiguous_format).eval()
