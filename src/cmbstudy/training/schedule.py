"""The learning-rate schedule of the paper (Cho et al. 2026, Table 1): linear warm-up, then cosine warm restarts.

Epochs ``0 .. warmup_epochs-1`` rise linearly from ``warmup_start_lr`` (epoch 0)
towards ``lr`` (reached at epoch ``warmup_epochs``); afterwards cosine annealing
with warm restarts, period ``restart_epochs`` growing by ``restart_mult`` after
each restart, down to ``min_lr``. Both pieces are torch's schedulers, chained by
:class:`torch.optim.lr_scheduler.SequentialLR`; the schedule steps once per epoch.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from ..config import TrainConfig
from ..errors import ConfigError

__all__ = ["make_scheduler"]


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> LRScheduler:
    """The per-epoch schedule of ``cfg`` for ``optimizer`` (whose learning rate must be ``cfg.lr``).

    Raises:
        ConfigError: non-positive lr or restart period, negative warm-up, restart_mult < 1,
            or a warm-up start outside (0, lr].
    """
    if (cfg.lr <= 0 or cfg.restart_epochs < 1 or cfg.warmup_epochs < 0 or cfg.restart_mult < 1
            or not 0 < cfg.warmup_start_lr <= cfg.lr):
        raise ConfigError(
            f"train: lr={cfg.lr} must be > 0, restart_epochs={cfg.restart_epochs} >= 1, "
            f"warmup_epochs={cfg.warmup_epochs} >= 0, restart_mult={cfg.restart_mult} >= 1, "
            f"0 < warmup_start_lr={cfg.warmup_start_lr} <= lr"
        )
    cosine = CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.restart_epochs, T_mult=cfg.restart_mult, eta_min=cfg.min_lr
    )
    if cfg.warmup_epochs == 0:
        return cosine
    warmup = LinearLR(
        optimizer, start_factor=cfg.warmup_start_lr / cfg.lr, end_factor=1.0, total_iters=cfg.warmup_epochs
    )
    return SequentialLR(optimizer, [warmup, cosine], milestones=[cfg.warmup_epochs])
