"""The second look's patch model: a small 3D CNN that scores the patch around a candidate as a CMB or not.

The named features of the second look (:mod:`cmbstudy.inference.second_look`)
describe a candidate at a few fixed scales; a CMB of 2-3 mm is one or two
voxels at the study's resolution, and those features tell it from a noise blob
poorly. This network looks at the voxels themselves: the candidate's patch of
the scan (its ratio to the local brain mean, minus 1) and of the phase image
(zero where the scan has none), :data:`PATCH_HALF` voxels either side of the
centre. Three 3 x 3 x 3 convolutions, one in-plane pooling, and the mean and
the maximum over the patch of the last one's channels into one logit: a few
thousand weights, trained in seconds on a CPU, as Dou et al. 2016's
discrimination stage scores candidates with a 3D CNN on patches (theirs is
larger and sees larger patches of 512 x 512 SWI).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PATCH_HALF", "PATCH_SHAPE", "PatchNet"]

#: Voxels either side of a candidate's centre along X, Y and Z (the scan's own grid): a 9 x 9 x 5 patch.
PATCH_HALF: tuple[int, int, int] = (4, 4, 2)
#: The patch's shape, (X, Y, Z).
PATCH_SHAPE: tuple[int, int, int] = tuple(2 * h + 1 for h in PATCH_HALF)  # type: ignore[assignment]


class PatchNet(nn.Module):
    """``(n, 2, *PATCH_SHAPE)`` patches (scan ratio - 1, phase) -> ``(n,)`` logits of a CMB."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(2, width, 3, padding=1), nn.ReLU(),
            nn.Conv3d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool3d((2, 2, 1)),
            nn.Conv3d(width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(4 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1))[:, 0]
