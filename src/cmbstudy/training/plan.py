"""The training samples of one epoch, as a function of ``(seed, epoch)`` alone.

Both samplers (2.5D slices, :mod:`~cmbstudy.training.sampling_2p5d`; 3D patches,
:mod:`~cmbstudy.training.sampling_3d`) draw their epoch from :func:`plan_epoch`,
so an epoch can be replayed (resume, several DataLoader workers) without any
saved sampler state.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from ..errors import ConfigError

__all__ = ["SliceVolume", "plan_epoch"]

_SEED_HIGH = 2**31 - 1  # MONAI's set_random_state needs seeds below 2**32


class SliceVolume(Protocol):
    """What sampling needs of a :class:`cmbstudy.preprocessing.geometry.PreprocessedVolume`."""

    subject_id: str
    image: np.ndarray  # (Z, S, S) float32
    brain: np.ndarray  # (Z, S, S) bool
    mask: np.ndarray | None  # (Z, S, S) uint8



def _take_cycled(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``count`` items of ``pool``: each used once per shuffled pass before any repeats."""
    if count == 0 or len(pool) == 0:
        return pool[:0]
    passes = math.ceil(count / len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:count]


def plan_epoch(
    lesion_slices: np.ndarray,
    other_slices: np.ndarray,
    n_slices: int,
    lesion_fraction: float,
    seed: int,
    epoch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The slices of one epoch and one augmentation seed per slice.

    ``round(n_slices * lesion_fraction)`` slices are drawn from
    ``lesion_slices`` and the rest from ``other_slices`` (each pool is used
    once, in random order, before any slice repeats); when one pool is empty
    all slices come from the other. The result is shuffled.

    Args:
        lesion_slices: ``(n, 2)`` int rows ``(volume index, z)`` with a lesion in slice z.
        other_slices: ``(m, 2)`` int rows of lesion-free brain slices.
        n_slices: slices in the epoch.
        lesion_fraction: share of lesion slices, in [0, 1].
        seed, epoch: the plan is a function of these two numbers only.

    Returns:
        ``(n_slices, 2)`` int array of ``(volume index, z)`` and ``(n_slices,)`` int64 seeds.

    Raises:
        ConfigError: ``lesion_fraction`` outside [0, 1].
    """
    if not 0.0 <= lesion_fraction <= 1.0:
        raise ConfigError(f"train.lesion_slice_fraction={lesion_fraction} must lie in [0, 1]")
    rng = np.random.default_rng([seed, epoch])
    n_lesion = int(round(n_slices * lesion_fraction))
    if len(other_slices) == 0:
        n_lesion = n_slices
    elif len(lesion_slices) == 0:
        n_lesion = 0
    picked = np.concatenate(
        [
            _take_cycled(rng, np.asarray(lesion_slices, dtype=np.int64).reshape(-1, 2), n_lesion),
            _take_cycled(
                rng, np.asarray(other_slices, dtype=np.int64).reshape(-1, 2), n_slices - n_lesion
            ),
        ]
    )
    picked = picked[rng.permutation(len(picked))]
    seeds = rng.integers(0, _SEED_HIGH, size=len(picked), dtype=np.int64)
    return picked, seeds
