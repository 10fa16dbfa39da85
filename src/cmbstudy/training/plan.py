"""The training samples of one epoch, as a function of ``(seed, epoch)`` and the sample pools alone.

A training sample is centred on a point of one of four pools:

- ``lesion``: a reference CMB (one row per lesion component and slice, so a
  one-voxel CMB is drawn as often as each slice of a large one, not 80 times less);
- ``hard``: a false positive of the network on its own training subjects, mined
  after a warm-up (:mod:`cmbstudy.training.mining`, as Dou et al. 2016 do for
  their second stage);
- ``edge``: a voxel on the brain's edge, where a skull-stripped scan has dark
  rims and cortical veins;
- ``other``: anywhere in a brain slice.

Both samplers (2.5D slices, :mod:`~cmbstudy.training.sampling_2p5d`; 3D patches,
:mod:`~cmbstudy.training.sampling_3d`) draw their epoch from :func:`plan_epoch`,
so an epoch can be replayed (resume, several DataLoader workers) without any
saved sampler state beyond the mined pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
from scipy import ndimage

from ..config import TrainConfig
from ..errors import ConfigError

__all__ = ["SAMPLE_KINDS", "EDGE_POINTS_PER_VOLUME", "SliceVolume", "EpochPlan", "sample_shares", "lesion_points",
           "edge_points", "brain_slice_points", "build_pools", "plan_epoch"]

_SEED_HIGH = 2**31 - 1  # MONAI's set_random_state needs seeds below 2**32

#: The pools a training sample is centred on, in the order of :attr:`EpochPlan.kinds`.
SAMPLE_KINDS: tuple[str, ...] = ("lesion", "hard", "edge", "other")
#: Brain-edge voxels kept per training volume as crop centres (drawn with the sampler's seed).
EDGE_POINTS_PER_VOLUME = 256


class SliceVolume(Protocol):
    """What sampling needs of a :class:`cmbstudy.preprocessing.geometry.PreprocessedVolume`."""

    subject_id: str
    image: np.ndarray  # (Z, S, S) float32, 0 outside the brain
    brain: np.ndarray  # (Z, S, S) bool
    mask: np.ndarray | None  # (Z, S, S) uint8
    unmasked: np.ndarray | None  # (Z, S, S) float32, the same image before the brain mask


@dataclass(frozen=True)
class EpochPlan:
    """The samples of one epoch.

    Attributes:
        points: ``(n, 4)`` int rows ``(volume index, z, y, x)``; ``y = x = -1``:
            anywhere in slice z (an ``other`` sample).
        kinds: ``(n,)`` int index into :data:`SAMPLE_KINDS`.
        seeds: ``(n,)`` int64 augmentation seed of each sample.
    """

    points: np.ndarray
    kinds: np.ndarray
    seeds: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    def counts(self) -> dict[str, int]:
        """Samples of each kind in this epoch."""
        return {kind: int((self.kinds == k).sum()) for k, kind in enumerate(SAMPLE_KINDS)}


def sample_shares(cfg: TrainConfig) -> dict[str, float]:
    """The share of each pool in an epoch: lesion, hard, edge from ``cfg``; ``other`` the rest.

    Raises:
        ConfigError: a share outside [0, 1], or the three shares sum above 1.
    """
    shares = {"lesion": cfg.lesion_slice_fraction, "hard": cfg.hard_negative_fraction, "edge": cfg.edge_fraction}
    names = {"lesion": "lesion_slice_fraction", "hard": "hard_negative_fraction", "edge": "edge_fraction"}
    for kind, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"train.{names[kind]}={share} must lie in [0, 1]")
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ConfigError(
            f"train.lesion_slice_fraction + hard_negative_fraction + edge_fraction = {sum(shares.values()):g} "
            "must be at most 1 (the rest are random brain crops)"
        )
    return {**shares, "other": max(0.0, 1.0 - sum(shares.values()))}


def _rows(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _nearest_to_centroid(voxels: np.ndarray) -> np.ndarray:
    return voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]


def lesion_points(index: int, mask: np.ndarray, per_slice: bool = True) -> np.ndarray:
    """Rows ``(index, z, y, x)`` of the lesion components of ``mask``: the voxel nearest the centroid.

    ``per_slice``: one row per component and slice it spans (2.5D samples);
    otherwise one row per component (3D patches).
    """
    labels, _ = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    rows = []
    for k, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        if not per_slice:
            z, y, x = _nearest_to_centroid(np.argwhere(labels == k))
            rows.append((index, int(z), int(y), int(x)))
            continue
        for z in range(found[0].start, found[0].stop):
            voxels = np.argwhere(labels[z] == k)
            if len(voxels):
                y, x = _nearest_to_centroid(voxels)
                rows.append((index, z, int(y), int(x)))
    return _rows(rows)


def edge_points(index: int, brain: np.ndarray, per_volume: int, seed: int) -> np.ndarray:
    """Up to ``per_volume`` rows ``(index, z, y, x)`` on the in-plane edge of the brain, drawn with ``seed``."""
    inner = ndimage.binary_erosion(brain, structure=np.ones((1, 3, 3), bool), border_value=0)
    voxels = np.argwhere(brain & ~inner)
    if len(voxels) > per_volume:
        voxels = voxels[np.sort(np.random.default_rng([seed, index]).choice(len(voxels), per_volume, replace=False))]
    return _rows([(index, int(z), int(y), int(x)) for z, y, x in voxels])


def brain_slice_points(index: int, brain: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One row ``(index, z, -1, -1)`` per brain slice without a lesion."""
    has_lesion = mask.reshape(mask.shape[0], -1).any(axis=1)
    has_brain = brain.reshape(brain.shape[0], -1).any(axis=1)
    return _rows([(index, int(z), -1, -1) for z in np.flatnonzero(has_brain & ~has_lesion)])


def build_pools(masks: Sequence[np.ndarray], brains: Sequence[np.ndarray], seed: int,
                per_slice: bool = True) -> dict[str, np.ndarray]:
    """The four pools of a training set from each volume's (Z, Y, X) lesion mask and brain mask.

    ``lesion`` (:func:`lesion_points`, per slice or per component), ``edge``
    (:data:`EDGE_POINTS_PER_VOLUME` per volume, :func:`edge_points`), ``other``
    (:func:`brain_slice_points`) and an empty ``hard`` pool, filled by mining.
    """
    lesion, edge, other = [_rows([])], [_rows([])], [_rows([])]
    for index, (mask, brain) in enumerate(zip(masks, brains)):
        brain = np.asarray(brain, dtype=bool)
        lesion.append(lesion_points(index, mask, per_slice))
        edge.append(edge_points(index, brain, EDGE_POINTS_PER_VOLUME, seed))
        other.append(brain_slice_points(index, brain, mask))
    return {"lesion": np.concatenate(lesion), "hard": _rows([]), "edge": np.concatenate(edge),
            "other": np.concatenate(other)}


def _take_cycled(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """``count`` rows of ``pool``: each used once per shuffled pass before any repeats."""
    if count == 0 or len(pool) == 0:
        return pool[:0]
    passes = math.ceil(count / len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:count]


def _counts(sizes: Mapping[str, int], shares: Mapping[str, float], n: int) -> dict[str, int]:
    """Samples per pool: ``round(n * share)``; an empty pool's samples go to ``other`` (or to lesion)."""
    counts = {kind: int(round(n * shares.get(kind, 0.0))) for kind in SAMPLE_KINDS[:3]}
    counts = {kind: (count if sizes.get(kind, 0) else 0) for kind, count in counts.items()}
    excess = sum(counts.values()) - n
    for kind in ("edge", "hard", "lesion"):  # rounding past n: trim the smallest pools first
        cut = min(max(excess, 0), counts[kind])
        counts[kind], excess = counts[kind] - cut, excess - cut
    counts["other"] = n - sum(counts.values())
    if counts["other"] and not sizes.get("other", 0):
        refill = next((kind for kind in ("lesion", "edge", "hard") if sizes.get(kind, 0)), None)
        if refill is not None:
            counts[refill], counts["other"] = counts[refill] + counts["other"], 0
    return counts


def plan_epoch(pools: Mapping[str, np.ndarray], shares: Mapping[str, float], n_samples: int, seed: int,
               epoch: int) -> EpochPlan:
    """The samples of one epoch and one augmentation seed per sample.

    ``round(n_samples * share)`` samples come from each of the lesion, hard and
    edge pools and the rest from ``other``; each pool is used once, in random
    order, before any row repeats. An empty pool's samples go to ``other``
    (when ``other`` is empty too, to the first non-empty pool). The result is shuffled.

    Args:
        pools: kind (:data:`SAMPLE_KINDS`) -> ``(m, 4)`` int rows ``(volume, z, y, x)``.
        shares: kind -> share in [0, 1] (:func:`sample_shares`).
        n_samples: samples in the epoch.
        seed, epoch: with the pools, the plan is a function of these two numbers only.

    Raises:
        ConfigError: an unknown pool.
    """
    unknown = sorted(set(pools) - set(SAMPLE_KINDS))
    if unknown:
        raise ConfigError(f"unknown sample pool(s) {unknown}; pools are {SAMPLE_KINDS}")
    rng = np.random.default_rng([seed, epoch])
    rows = {kind: np.asarray(pools.get(kind, _rows([])), dtype=np.int64).reshape(-1, 4) for kind in SAMPLE_KINDS}
    counts = _counts({kind: len(r) for kind, r in rows.items()}, shares, n_samples)
    points = [_take_cycled(rng, rows[kind], counts[kind]) for kind in SAMPLE_KINDS]
    kinds = np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in enumerate(points)])
    order = rng.permutation(len(kinds))
    seeds = rng.integers(0, _SEED_HIGH, size=len(kinds), dtype=np.int64)
    return EpochPlan(np.concatenate(points)[order], kinds[order], seeds)
