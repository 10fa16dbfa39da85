"""The training loop of one fold: ``fit(model, ...) -> RunResult``.

The paper's recipe (Cho et al. 2026, Sec. 2.3 and Table 1): AdamW, the warm-up
and cosine-restart schedule of :mod:`~cmbstudy.training.schedule`, batch 2,
Dice + Focal loss with deep supervision (:func:`cmbstudy.models.losses.make_loss`),
and the checkpoint with the best validation F1 of each fold.

Validation (every ``train.val_every`` epochs and after the last) predicts each
validation subject's whole volume, maps it back to the input grid, thresholds
it, and matches 3D components to the reference mask's components with the
paper's 4-voxel rule, pooled over subjects. Best checkpoint: highest
validation F1 (NaN counts as lowest); on equal F1 the lower validation loss;
on equal loss the earlier epoch.

Training samples are centred on lesions, on the brain's edge, anywhere in
the brain, and, from epoch ``train.mine_after`` on (refreshed every as many
epochs), on the network's own false positives on ``train.mine_subjects`` of its
training subjects (:mod:`cmbstudy.training.mining`); ``history.csv`` counts the
samples of each kind.

``checkpoint_last.pt`` carries the optimiser, scheduler, the mined pool and the
torch / numpy / Python random states, and the sampler is a function of (seed,
epoch, pools) (:mod:`cmbstudy.training.plan`), so a resumed run gives the same
weights as an uninterrupted one on the same device. The files written are those of
:mod:`cmbstudy.data.run_folder`.

Under ``torchrun`` the network trains in DistributedDataParallel, with the
batch, learning-rate and rank-0 rules of :mod:`cmbstudy.training.distributed`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.special import expit
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..config import Profile
from ..data.io import write_text_atomically
from ..data.run_folder import RESULT
from ..device import autocast, resolve_device
from ..errors import ConfigError
from ..evaluation.lesions import find_lesions
from ..evaluation.operating_point import OperatingPoint, apply_operating_point
from ..evaluation.matching import match_paper
from ..evaluation.scores import DETECTION_METRICS, summarize_detection
from ..inference.sliding_window import predict_logits
from ..models.layers import is_volumetric
from ..models.losses import make_loss
from ..preprocessing.geometry import PreprocessedVolume, volume_voxel_mm
from .checkpoints import save_best, save_last, start
from .distributed import Distributed, ShareSampler, current
from .mining import mine_hard_negatives, mining_subjects
from .sampling_2p5d import SliceDataset
from .sampling_3d import PatchDataset
from .schedule import make_scheduler

__all__ = ["RunResult", "training_seed", "validate", "fit"]


@dataclass(frozen=True)
class RunResult:
    """Outcome of one fold's training."""

    run_dir: Path  # run folder
    fold: int  # cross-validation fold (0-based)
    model: str  # registry name of the network
    best_epoch: int  # epoch (0-based) of checkpoint_best.pt
    best_val: Mapping[str, float]  # validation precision, recall, f1, fp_per_subject, loss there
    epochs: int  # epochs completed
    seconds: float  # training + validation time summed over all epochs (s)
    n_params: int  # trainable parameters
    device: str  # torch device
    operating_point: Mapping[str, Any] | None = None  # threshold and minimum size chosen on validation
    calibration_seconds: float = math.nan  # choosing the operating point and training the second look (s)

    def __str__(self) -> str:
        v = self.best_val
        text = (
            f"fold {self.fold}: {self.model}, {self.epochs} epochs in {self.seconds:.1f} s on "
            f"{self.device} ({self.n_params:,} parameters) -> {self.run_dir}\n"
            f"  best epoch {self.best_epoch}: precision {v.get('precision', float('nan')):.3f}  "
            f"recall {v.get('recall', float('nan')):.3f}  F1 {v.get('f1', float('nan')):.3f}  "
            f"FP/subject {v.get('fp_per_subject', float('nan')):.2f}"
        )
        if self.operating_point:
            point = self.operating_point
            scores = point.get("validation") or {}
            text += (f"\n  operating point ({point['source']}): threshold {point['threshold']:g}, lesions of at "
                     f"least {point['min_voxels']} voxels; validation F1 {scores.get('f1', float('nan')):.3f}")
        return text


def training_seed(profile: Profile) -> int:
    """The seed of a run's initialisation and sampling: ``train.seed``, else the profile's seed.

    The profile's seed also makes the cohort and the folds; ``train.seed`` changes only the
    training, so two runs on the same data and split can be compared.
    """
    return profile.seed if profile.train.seed is None else int(profile.train.seed)


def validate(
    model: torch.nn.Module,
    volumes: Sequence[PreprocessedVolume],
    references: Sequence[np.ndarray],
    profile: Profile,
    device: torch.device,
    loss_fn: Callable | None = None,
) -> dict[str, float]:
    """Paper-rule detection scores of the validation subjects, pooled over lesions.

    Each volume is predicted and restored to its input grid (linear); its lesions are
    those of the profile's lesion rule before calibration
    (:meth:`~cmbstudy.evaluation.operating_point.OperatingPoint.from_config`: ``evaluation.threshold``,
    ``min_voxels``, ``connectivity`` and the brain rule), the rule that calibration, evaluation,
    ``predict`` and ``detect`` apply too, matched to the components of its reference mask (input grid)
    within ``evaluation.match_distance_voxels``.

    Returns:
        precision, recall, f1, fp_per_subject, and loss (mean over subjects of
        ``loss_fn([logits], mask)`` on the preprocessed grid; NaN without ``loss_fn``).
    """
    ev, counts, losses = profile.evaluation, [], []
    point = OperatingPoint.from_config(ev)
    for volume, reference in zip(volumes, references):
        logits = predict_logits(
            model, volume.image, profile.train.val_batch_size, device, volume_voxel_mm(volume), profile.train.patch_size
        )
        if loss_fn is not None and volume.mask is not None:
            target = torch.from_numpy(volume.mask.astype(np.float32))[:, None]
            with torch.no_grad():
                losses.append(float(loss_fn([torch.from_numpy(logits)[:, None]], target)))
        prob = volume.restore(expit(logits.astype(np.float64)).astype(np.float32), 1)
        pred = apply_operating_point(prob, point, volume.input_brain())
        ref = find_lesions(np.asarray(reference), 0.5, ev.connectivity)
        match = match_paper(pred.centroids, ref.centroids, ev.match_distance_voxels)
        counts.append((match.n_tp, match.n_fp, match.n_fn))
    summary = summarize_detection(counts)
    return {**{k: float(summary[k]) for k in DETECTION_METRICS}, "loss": float(np.mean(losses)) if losses else math.nan}


def _better(f1: float, loss: float, best: Mapping[str, float] | None) -> bool:
    """Higher F1 wins (NaN lowest); equal F1: lower loss; otherwise the earlier epoch stays."""
    if best is None:
        return True
    key = lambda v: -math.inf if math.isnan(v) else v  # noqa: E731
    if key(f1) != key(best["f1"]):
        return key(f1) > key(best["f1"])
    return key(-loss) > key(-best["loss"])


def _has_own_loss(model: torch.nn.Module) -> bool:
    """The network brings its own ``training_loss(x, target)`` (two-stage and multi-task baselines)."""
    return callable(getattr(model, "training_loss", None))


class _OwnLoss(torch.nn.Module):
    """``forward(x, target)`` is the network's ``training_loss``, so that DDP sees the forward pass."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.network.training_loss(x, target)


def _training_module(model: torch.nn.Module, place: Distributed, device: torch.device,
                     compile_step: bool = False) -> torch.nn.Module:
    """What a training step calls: the network (or its own loss), in DDP when there are several processes.

    With ``compile_step`` on CUDA it is compiled (``torch.compile``, after DDP as torch
    recommends); on the CPU it stays eager, since compiling there needs a C++ toolchain
    and pays only for long runs.
    """
    module = _OwnLoss(model) if _has_own_loss(model) else model
    if place.active:
        module = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_step and device.type == "cuda":
        module = torch.compile(module)
    return module


@dataclass
class _Session:
    """What one call of :func:`fit` trains with, and what it has done so far."""

    model: torch.nn.Module
    dataset: Dataset
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: Callable
    device: torch.device
    memory: torch.memory_format
    sampler_seed: int
    history: list[dict[str, Any]]
    step_module: torch.nn.Module  # what a step calls: the network or its own loss, in DDP / compiled as set
    place: Distributed = dataclasses.field(default_factory=Distributed)
    best: dict[str, float] | None = None
    start_epoch: int = 0
    hard_negatives: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.int64))


def _make_dataset(model: torch.nn.Module, volumes: Sequence[PreprocessedVolume], profile: Profile,
                  sampler_seed: int) -> Dataset:
    """3D patches for a volumetric network (at its ``spacing_mm``), 2.5D slices for the others."""
    if is_volumetric(model):
        spacing = float(getattr(model, "spacing_mm", 0.0))
        return PatchDataset(volumes, profile.train, seed=sampler_seed, augment=True, spacing_mm=spacing)
    return SliceDataset(volumes, profile.train, seed=sampler_seed, augment=True)


def _mine(session: _Session, train_volumes: Sequence[PreprocessedVolume], profile: Profile, epoch: int) -> float:
    """Refresh the ``hard`` pool with the network's false positives, when ``epoch`` is a mining epoch; its seconds."""
    cfg = profile.train
    if cfg.mine_after <= 0 or cfg.hard_negative_fraction <= 0 or epoch < cfg.mine_after:
        return 0.0
    if (epoch - cfg.mine_after) % cfg.mine_after:
        return 0.0
    tic = time.perf_counter()
    indices = mining_subjects(len(train_volumes), cfg.mine_subjects, session.sampler_seed, epoch)
    session.hard_negatives = session.place.on_main(
        lambda: mine_hard_negatives(session.model, train_volumes, indices, profile, session.device))
    session.dataset.set_hard_negatives(session.hard_negatives)
    return time.perf_counter() - tic


def _train_epoch(session: _Session, epoch: int, epochs: int, batch_size: int, num_workers: int,
                 progress: bool) -> float:
    """One pass over the epoch's samples; returns the mean training loss per sample.

    Each process loads its share of every global batch (:class:`ShareSampler`). The
    profile's loss is computed on the global batch, gathered from every rank; a
    network's own ``training_loss`` on each rank's share, averaged by DDP.
    """
    session.dataset.set_epoch(epoch)
    place, dev = session.place, session.device
    loader = DataLoader(
        session.dataset, batch_sampler=ShareSampler(len(session.dataset), batch_size, place),
        num_workers=num_workers, pin_memory=dev.type == "cuda", persistent_workers=False,
        # the loader draws its workers' base seed from this generator, not from torch's global one
        generator=torch.Generator().manual_seed(session.sampler_seed + epoch),
    )
    step = session.step_module
    own_loss = _has_own_loss(session.model)  # the step module is then _OwnLoss, maybe wrapped
    session.model.train()
    total, seen = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not (progress and place.main),
               leave=False)
    for batch in bar:
        x = batch["image"].to(dev, memory_format=session.memory, non_blocking=True)
        y = batch["mask"].to(dev, non_blocking=True)
        if own_loss:  # the network's own loss (two-stage and multi-task baselines)
            with autocast(dev):
                loss = step(x, y).float()
            logged, n = place.mean(loss.detach().item()), x.shape[0] * place.world
        else:
            with autocast(dev):
                outputs = step(x)
            outputs = [place.gather_batch(o.float(), grad=True)
                       for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
            target = place.gather_batch(y, grad=False)
            loss = session.loss_fn(outputs, target)
            logged, n = loss.detach().item(), target.shape[0]
        session.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        session.optimizer.step()
        total, seen = total + logged * n, seen + n
        bar.set_postfix(loss=f"{total / seen:.4f}")
    session.scheduler.step()
    return total / max(seen, 1)


def _write_result(session: _Session, out: Path, profile: Profile, fold: int, n_params: int) -> RunResult:
    best = session.best or {"epoch": -1}
    history = session.history
    result = RunResult(
        run_dir=out, fold=fold, model=profile.model.name, best_epoch=int(best["epoch"]),
        best_val={k: float(v) for k, v in best.items() if k != "epoch"},
        epochs=len(history), seconds=float(sum(r["seconds"] for r in history)),
        n_params=int(n_params), device=str(session.device),
    )
    info = {**dataclasses.asdict(result), "run_dir": str(out), "seed": profile.seed,
            "training_seed": training_seed(profile), "profile": profile.name}
    info["best_val"] = {k: (None if math.isnan(v) else v) for k, v in result.best_val.items()}
    write_text_atomically(out / RESULT, json.dumps(info, indent=2, allow_nan=True))
    return result


def fit(
    model: torch.nn.Module,
    train_volumes: Sequence[PreprocessedVolume],
    val_volumes: Sequence[PreprocessedVolume],
    references: Sequence[np.ndarray],
    profile: Profile,
    out: Path,
    fold: int = 0,
    device: str | torch.device = "auto",
    resume: bool = False,
    progress: bool = True,
    loss_fn: torch.nn.Module | None = None,
) -> RunResult:
    """Train ``model`` for ``profile.train.epochs`` epochs, writing checkpoints and history to ``out``.

    ``model`` must be freshly initialised (its weights are replaced on resume);
    in train mode it returns a list of logits ``[final (B,1,H,W), aux...]``, in
    eval mode ``(B, 1, H, W)``. ``references`` are the validation subjects' CMB
    masks on their input grids (``volume.restore``'s output grid).

    A network with ``input_kind = "3d"`` is trained on 3D patches
    (:class:`cmbstudy.training.sampling_3d.PatchDataset`, ``train.patch_size``, at its
    ``spacing_mm``) and validated by sliding windows; its outputs are
    ``(B, 1, D, H, W)``. A network with a ``training_loss(x, target) -> Tensor``
    method is trained on that (under autocast) instead of ``loss_fn(model(x), target)``;
    ``loss_fn`` then only gives the validation loss.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the step runs in DistributedDataParallel
    (:mod:`cmbstudy.training.distributed`); rank 0 validates and writes, and every
    rank returns rank 0's result.

    Raises:
        ConfigError: epochs or batch size below 1, a global batch that does not split over the ranks,
            or a resume with another number of processes.
        InputError: resume without ``checkpoint_last.pt`` in ``out``.
    """
    cfg, out = profile.train, Path(out)
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.val_every < 0:
        raise ConfigError(
            f"train.epochs={cfg.epochs} and train.batch_size={cfg.batch_size} must be >= 1, "
            f"train.val_every={cfg.val_every} >= 0"
        )
    dev = resolve_device(device)
    place = current(dev)
    dev = place.device(dev)
    place.check_batch(cfg.batch_size)  # raises unless the global batch splits evenly over the ranks
    if place.main:
        out.mkdir(parents=True, exist_ok=True)
    # NHWC: 2x faster training of depthwise 13x13 on CPU too; 3D networks keep the default layout
    memory = torch.contiguous_format if is_volumetric(model) else torch.channels_last
    model.to(device=dev, memory_format=memory)
    train_seed, sampler_seed = (int(v) for v in np.random.SeedSequence([training_seed(profile), fold, 1])
                                .generate_state(2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    session = _Session(
        model=model, dataset=_make_dataset(model, train_volumes, profile, sampler_seed), optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg), loss_fn=make_loss(cfg) if loss_fn is None else loss_fn,
        device=dev, memory=memory, sampler_seed=sampler_seed, history=[], place=place,
        step_module=_training_module(model, place, dev, cfg.compile),
    )
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    if place.active and len(session.dataset) < cfg.batch_size:
        raise ConfigError(f"an epoch holds {len(session.dataset)} samples, fewer than the global batch "
                          f"train.batch_size={cfg.batch_size}: with {place.world} processes nothing would train")
    start(session, out, resume, train_seed)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for epoch in range(session.start_epoch, cfg.epochs):
        tic = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        row["mining_seconds"] = _mine(session, train_volumes, profile, epoch)
        row["train_loss"] = _train_epoch(session, epoch, cfg.epochs, cfg.batch_size, cfg.num_workers, progress)
        row.update({f"crops_{kind}": count for kind, count in session.dataset.plan.counts().items()})
        row["hard_pool"] = len(session.hard_negatives)
        if cfg.val_every > 0 and ((epoch + 1) % cfg.val_every == 0 or epoch == cfg.epochs - 1) and place.main:
            started = time.perf_counter()
            val = validate(model, val_volumes, references, profile, dev, session.loss_fn)
            row["validation_seconds"] = time.perf_counter() - started
            row.update({f"val_{k}": val[k] for k in DETECTION_METRICS})
            row["val_loss"] = val["loss"]
            if _better(val["f1"], val["loss"], session.best):
                save_best(session, out, epoch, val, fold)
        row["seconds"] = time.perf_counter() - tic
        session.history.append(row)
        save_last(session, out, epoch, fold)
    if cfg.val_every == 0 and session.history and place.main:  # no validation: the last epoch is the checkpoint
        last = session.history[-1]["epoch"]
        save_best(session, out, last, {k: math.nan for k in (*DETECTION_METRICS, "loss")}, fold)
    return place.on_main(lambda: _write_result(session, out, profile, fold, n_params))
