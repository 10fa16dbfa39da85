"""A run's checkpoints: ``checkpoint_best.pt``, ``checkpoint_last.pt`` with everything a resume needs, and the seeding.

``checkpoint_last.pt`` carries the weights, the optimiser, the scheduler, the
history, the mined pool and the torch / numpy / Python random states (of every
rank, under torchrun), so that :func:`cmbstudy.training.loop.fit` resumed from it
gives the weights of an uninterrupted run on the same device.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..data.io import write_atomically
from ..data.run_folder import CHECKPOINT_BEST, CHECKPOINT_LAST, HISTORY, HISTORY_COLUMNS
from ..errors import ConfigError, InputError

if TYPE_CHECKING:
    from .loop import _Session

__all__ = ["rng_state", "set_rng_state", "start", "save_best", "save_last"]


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def start(session: _Session, out: Path, resume: bool, train_seed: int) -> None:
    """Load ``checkpoint_last.pt`` into the session (resume), or seed the random generators.

    Rank 0 (and a single process) seeds torch with ``train_seed``; rank ``r > 0`` with a seed
    derived from ``(train_seed, r)``, so that the ranks' stochastic depth is independent.
    """
    place = session.place
    if not resume:
        torch.manual_seed(train_seed if place.main else
                          int(np.random.SeedSequence([train_seed, place.rank]).generate_state(1)[0]))
        np.random.seed(train_seed % 2**32)
        random.seed(train_seed)
        return
    path = out / CHECKPOINT_LAST
    if not path.is_file():
        raise InputError(f"{path} does not exist: nothing to resume; start without --resume")
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved_world = int(state.get("world", 1))
    if saved_world != place.world:
        raise ConfigError(f"{path} was written by a run in {saved_world} process(es); resume it with as many "
                          f"(this is {place.world})")
    session.model.load_state_dict(state["model"])
    session.optimizer.load_state_dict(state["optimizer"])
    session.scheduler.load_state_dict(state["scheduler"])
    session.history, session.best, session.start_epoch = list(state["history"]), state["best"], int(state["epoch"]) + 1
    session.hard_negatives = np.asarray(state.get("hard_negatives", np.zeros((0, 4))), dtype=np.int64).reshape(-1, 4)
    session.dataset.set_hard_negatives(session.hard_negatives)
    set_rng_state(state["rng_ranks"][place.rank] if place.active else state["rng"])


def save_best(session: _Session, out: Path, epoch: int, val: Mapping[str, float], fold: int) -> None:
    session.best = {"epoch": epoch, **val}
    payload = {"model": session.model.state_dict(), "epoch": epoch, "val": session.best, "fold": fold}
    write_atomically(out / CHECKPOINT_BEST, lambda tmp: torch.save(payload, tmp))


def save_last(session: _Session, out: Path, epoch: int, fold: int) -> None:
    """``history.csv`` and ``checkpoint_last.pt`` after ``epoch`` (rank 0; with every rank's random state)."""
    place = session.place
    rng_ranks = place.gather_objects(rng_state())
    if not place.main:
        return
    frame = pd.DataFrame(session.history).reindex(columns=list(HISTORY_COLUMNS))
    write_atomically(out / HISTORY, lambda tmp: frame.to_csv(tmp, index=False))
    state = {
        "model": session.model.state_dict(), "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(), "epoch": epoch, "history": session.history,
        "best": session.best, "rng": rng_ranks[0], "hard_negatives": session.hard_negatives.tolist(),
        "sampler": {"seed": session.sampler_seed, "next_epoch": epoch + 1}, "fold": fold,
        "world": place.world,
    }
    if place.active:
        state["rng_ranks"] = rng_ranks
    write_atomically(out / CHECKPOINT_LAST, lambda tmp: torch.save(state, tmp))
