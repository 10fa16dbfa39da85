"""Training in several processes: ``torchrun --nproc_per_node=N -m cmbstudy train ...``.

torch's DistributedDataParallel does the work; this module holds what the
training loop needs around it. ``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`current` reads them and joins the process group (NCCL on
CUDA, gloo on the CPU). Without them training runs in one process, as before.

The rule for the batch and the learning rate: ``train.batch_size`` is the
**global** batch, split evenly over the ranks (it must be a multiple of the
number of processes), and ``train.lr`` is the learning rate of that global
batch, unchanged by the number of processes. A run on N processes therefore
takes the same steps as a run in one process with the same profile: each
global batch holds the same samples (rank ``r`` takes the ``r``-th share of
every batch of the epoch's plan), and the loss is computed on the whole
global batch, gathered from every rank, so that the batch Dice sees the same
voxels. To train on a larger global batch, raise ``train.batch_size`` and
scale ``train.lr`` with it by hand (linear scaling, with warm-up: Goyal et al.
2017). An epoch's last, incomplete global batch is dropped when there are
several processes.

Rank 0 alone validates, mines hard negatives (the pool goes to every rank),
calibrates the operating point and writes the run folder; the others wait.
Stochastic depth draws its masks from torch's generator, seeded per rank, so
the ranks' draws are independent (and differ from those of one process).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..errors import CmbStudyError, ConfigError

__all__ = ["Distributed", "current", "ShareSampler"]

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates and writes."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The rank's own GPU (``cuda:LOCAL_RANK``) when training on CUDA, else ``device``."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value``, on every rank."""
        if not self.active:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def gather_objects(self, value: Any) -> list[Any] | None:
        """Every rank's ``value``, in rank order, on rank 0 (``None`` elsewhere)."""
        if not self.active:
            return [value]
        out: list[Any] | None = [None] * self.world if self.main else None
        dist.gather_object(value, out, dst=0)
        return out

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on rank 0 and hand its result to every rank.

        When it raises on rank 0, the other ranks raise a :class:`CmbStudyError` with
        the same message instead of waiting for ever.
        """
        if not self.active:
            return work()
        outcome: tuple[bool, Any] = (True, None)
        error: BaseException | None = None
        if self.main:
            try:
                outcome = (True, work())
            except BaseException as exc:  # handed to the other ranks, then raised again here
                error, outcome = exc, (False, f"{type(exc).__name__}: {exc}")
        ok, value = self.broadcast(outcome)
        if error is not None:
            raise error
        if not ok:
            raise CmbStudyError(f"rank 0 failed ({value}); this rank stops too")
        return value

    def gather_batch(self, tensor: torch.Tensor, grad: bool) -> torch.Tensor:
        """The global batch: every rank's ``tensor`` concatenated along dim 0, in rank order.

        With ``grad`` the gather carries gradients back to each rank's share
        (torch's ``all_gather_single_autograd``, which replaces the deprecated
        ``torch.distributed.nn.functional.all_gather``): a loss computed on the
        gathered batch is the same on every rank, each rank's share receives the
        sum of the ranks' gradients (N times the loss's own), and DDP's average
        over the ranks divides by N again, so the parameters get exactly the
        gradient of the loss on the global batch.

        The gather is waited for before it returns. Left in flight (torch hands back
        an ``AsyncCollectiveTensor``) while the next collective starts, it corrupted
        the heap of a gloo process now and then ("malloc(): unaligned tcache chunk",
        then SIGABRT) in torch 2.13: two of three 2-process CPU runs of 400 slices
        an epoch died so, none of eleven once the gather was waited for.
        """
        if not self.active:
            return tensor
        if grad:
            import torch.distributed._functional_collectives as collectives

            gathered = collectives.all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD)
            return collectives.wait_tensor(gathered)
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.active:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def check_batch(self, batch_size: int) -> int:
        """Each rank's share of the global batch ``train.batch_size``.

        Raises:
            ConfigError: the global batch is not a multiple of the number of processes.
        """
        if batch_size % self.world:
            raise ConfigError(
                f"train.batch_size={batch_size} is the global batch and must be a multiple of the "
                f"{self.world} processes: set train.batch_size={self.world * max(1, batch_size // self.world)} "
                f"(and scale train.lr with it) or start {batch_size} processes or fewer that divide it"
            )
        return batch_size // self.world


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (torchrun sets it)") from exc


def current(device: torch.device) -> Distributed:
    """This process's place, from torchrun's environment; joins the process group when there are several.

    The group uses NCCL when ``device`` is CUDA, gloo otherwise. A group already
    joined (a second call in the same process) is reused.

    Raises:
        ConfigError: a malformed torchrun environment, or CUDA with fewer GPUs than local ranks.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Distributed()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    place = Distributed(rank=rank, world=world, local_rank=local_rank)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPUs: "
                              "start at most as many processes per node as GPUs")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(hours=2))
    return place


class ShareSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of this rank's share of each global batch of ``n`` samples, in plan order.

    Global batch ``b`` is samples ``b*B .. b*B+B-1``; rank ``r`` takes the ``B/N``
    of them starting at ``b*B + r*B/N``. With several processes the last,
    incomplete global batch is dropped (every rank needs an equal share for the
    gather); in one process it is kept, as a plain ``DataLoader`` would.
    """

    def __init__(self, n: int, batch_size: int, place: Distributed) -> None:
        self.n, self.batch_size, self.place = int(n), int(batch_size), place
        self.share = place.check_batch(batch_size)

    def _batches(self) -> Sequence[int]:
        full = self.n // self.batch_size
        return range(full if self.place.active or self.n % self.batch_size == 0 else full + 1)

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._batches():
            start = b * self.batch_size + self.place.rank * self.share
            yield list(range(start, min(start + self.share, self.n)))

    def __len__(self) -> int:
        return len(self._batches())
