"""Training of one cross-validation fold: ``train_fold(profile, ...) -> RunResult``.

The paper's recipe (Cho et al. 2025, Sec. 2.3 and Table 1): AdamW, learning
rate warmed up linearly from 1e-7 to 1e-4 over the first 10 epochs, then
cosine annealing with warm restarts, batch 2, Dice + Focal loss with deep
supervision, and the checkpoint with the best validation F1 of each fold.

Validation (every ``train.val_every`` epochs and after the last) predicts each
validation subject's whole volume, maps it back to the input grid, thresholds
it, and matches 3D components to the reference mask's components with the
paper's 4-voxel rule, pooled over subjects. Best checkpoint: highest
validation F1 (NaN counts as lowest); on equal F1 the lower validation loss;
on equal loss the earlier epoch.

A run folder holds ``profile.yaml``, ``split.json``, ``environment.json``,
``history.csv``, ``checkpoint_last.pt``, ``checkpoint_best.pt`` and
``result.json``. ``checkpoint_last.pt`` carries the optimiser, scheduler and
the torch / numpy / Python random states, and the sampler is a function of
(seed, epoch) (:mod:`cmbstudy.slices`), so a resumed run gives the same
weights as an uninterrupted one on the same device.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import collect_environment
from .config import Profile, TrainConfig, profile_to_dict
from .datasets import describe_dataset, load_participants, load_subjects
from .errors import ConfigError, InputError, OutputError
from .inference import autocast, default_cache_dir, load_run_profile, predict_logits, resolve_device
from .io import check_output_dir, load_mask, write_atomically, write_text_atomically
from .losses import make_loss
from .metrics import DETECTION_METRICS, find_lesions, match_paper, summarize_detection
from .models import model_from_config
from .patches import PatchDataset, is_volumetric, volume_voxel_mm
from .preprocess import PreprocessedVolume, load_preprocessed
from .slices import SliceDataset
from .splits import make_cv_splits, save_splits, select_fold

__all__ = ["RunResult", "RUN_FILES", "lr_at_epoch", "make_scheduler", "validate", "fit", "train_fold"]

RUN_FILES = (
    "profile.yaml", "split.json", "environment.json", "history.csv",
    "checkpoint_last.pt", "checkpoint_best.pt", "result.json", "dataset.json",
)
HISTORY_COLUMNS = (
    "epoch", "lr", "train_loss", "val_loss", "val_precision", "val_recall", "val_f1",
    "val_fp_per_subject", "seconds",
)


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

    def __str__(self) -> str:
        v = self.best_val
        return (
            f"fold {self.fold}: {self.model}, {self.epochs} epochs in {self.seconds:.1f} s on "
            f"{self.device} ({self.n_params:,} parameters) -> {self.run_dir}\n"
            f"  best epoch {self.best_epoch}: precision {v.get('precision', float('nan')):.3f}  "
            f"recall {v.get('recall', float('nan')):.3f}  F1 {v.get('f1', float('nan')):.3f}  "
            f"FP/subject {v.get('fp_per_subject', float('nan')):.2f}"
        )


def lr_at_epoch(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of ``epoch`` (0-based): linear warm-up, then cosine with warm restarts.

    Epochs ``0 .. warmup_epochs-1`` rise linearly from ``warmup_start_lr``
    (epoch 0) towards ``lr`` (reached at epoch ``warmup_epochs``); afterwards
    ``min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2`` with ``t`` the epochs
    since the last restart and ``T`` the current period (``restart_epochs``,
    times ``restart_mult`` after each restart), as
    ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``.
    """
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * epoch / cfg.warmup_epochs
    t, period = epoch - cfg.warmup_epochs, cfg.restart_epochs
    while t >= period:
        t -= period
        period *= cfg.restart_mult
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t / period)) / 2


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch ``LambdaLR`` following :func:`lr_at_epoch` (the optimiser's lr must be ``cfg.lr``).

    Raises:
        ConfigError: non-positive lr or restart period, negative warm-up, or restart_mult < 1.
    """
    if cfg.lr <= 0 or cfg.restart_epochs < 1 or cfg.warmup_epochs < 0 or cfg.restart_mult < 1:
        raise ConfigError(
            f"train: lr={cfg.lr} must be > 0, restart_epochs={cfg.restart_epochs} >= 1, "
            f"warmup_epochs={cfg.warmup_epochs} >= 0, restart_mult={cfg.restart_mult} >= 1"
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_at_epoch(epoch, cfg) / cfg.lr)


def validate(
    model: torch.nn.Module,
    volumes: Sequence[PreprocessedVolume],
    references: Sequence[np.ndarray],
    profile: Profile,
    device: torch.device,
    loss_fn: Callable | None = None,
) -> dict[str, float]:
    """Paper-rule detection scores of the validation subjects, pooled over lesions.

    Each volume is predicted, restored to its input grid (linear), thresholded at
    ``evaluation.threshold``, split into components (``evaluation.connectivity``)
    and matched to the components of its reference mask (input grid) within
    ``evaluation.match_distance_voxels``.

    Returns:
        precision, recall, f1, fp_per_subject, and loss (mean over subjects of
        ``loss_fn([logits], mask)`` on the preprocessed grid; NaN without ``loss_fn``).
    """
    ev, counts, losses = profile.evaluation, [], []
    for volume, reference in zip(volumes, references):
        logits = predict_logits(
            model, volume.image, profile.train.val_batch_size, device, volume_voxel_mm(volume), profile.train.patch_size
        )
        if loss_fn is not None and volume.mask is not None:
            target = torch.from_numpy(volume.mask.astype(np.float32))[:, None]
            with torch.no_grad():
                losses.append(float(loss_fn([torch.from_numpy(logits)[:, None]], target)))
        prob = volume.restore((1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32), 1)
        pred = find_lesions(prob, ev.threshold, ev.connectivity)
        ref = find_lesions(np.asarray(reference), 0.5, ev.connectivity)
        match = match_paper(pred.centroids, ref.centroids, ev.match_distance_voxels)
        counts.append((match.n_tp, match.n_fp, match.n_fn))
    summary = summarize_detection(counts)
    return {**{k: float(summary[k]) for k in DETECTION_METRICS}, "loss": float(np.mean(losses)) if losses else math.nan}


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _better(f1: float, loss: float, best: Mapping[str, float] | None) -> bool:
    """Higher F1 wins (NaN lowest); equal F1: lower loss; otherwise the earlier epoch stays."""
    if best is None:
        return True
    key = lambda v: -math.inf if math.isnan(v) else v  # noqa: E731
    if key(f1) != key(best["f1"]):
        return key(f1) > key(best["f1"])
    return key(-loss) > key(-best["loss"])


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
    (:class:`cmbstudy.patches.PatchDataset`, ``train.patch_size``, at its
    ``spacing_mm``) and validated by sliding windows; its outputs are
    ``(B, 1, D, H, W)``. A network with a ``training_loss(x, target) -> Tensor``
    method is trained on that (under autocast) instead of ``loss_fn(model(x), target)``;
    ``loss_fn`` then only gives the validation loss.

    Raises:
        ConfigError: epochs or batch size below 1.
        InputError: resume without ``checkpoint_last.pt`` in ``out``.
    """
    cfg, out = profile.train, Path(out)
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.val_every < 0:
        raise ConfigError(
            f"train.epochs={cfg.epochs} and train.batch_size={cfg.batch_size} must be >= 1, "
            f"train.val_every={cfg.val_every} >= 0"
        )
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    volumetric = is_volumetric(model)
    # NHWC: 2x faster training of depthwise 13x13 on CPU too; 3D networks keep the default layout
    memory = torch.contiguous_format if volumetric else torch.channels_last
    model.to(device=dev, memory_format=memory)
    loss_fn = make_loss(cfg) if loss_fn is None else loss_fn
    train_seed, sampler_seed = (int(v) for v in np.random.SeedSequence([profile.seed, fold, 1]).generate_state(2))
    if volumetric:
        spacing = float(getattr(model, "spacing_mm", 0.0))
        dataset = PatchDataset(train_volumes, cfg, seed=sampler_seed, augment=True, spacing_mm=spacing)
    else:
        dataset = SliceDataset(train_volumes, cfg, seed=sampler_seed, augment=True)
    model_loss = getattr(model, "training_loss", None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg)
    history: list[dict[str, Any]] = []
    best: dict[str, float] | None = None
    start_epoch = 0
    if resume:
        path = out / "checkpoint_last.pt"
        if not path.is_file():
            raise InputError(f"{path} does not exist: nothing to resume; start without --resume")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start_epoch = list(state["history"]), state["best"], int(state["epoch"]) + 1
        _set_rng_state(state["rng"])
    else:
        torch.manual_seed(train_seed)
        np.random.seed(train_seed % 2**32)
        random.seed(train_seed)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for epoch in range(start_epoch, cfg.epochs):
        tic = time.perf_counter()
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(sampler_seed + epoch),
        )
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress, leave=False)
        for batch in bar:
            x = batch["image"].to(dev, memory_format=memory)
            y = batch["mask"].to(dev)
            if callable(model_loss):  # the network's own loss (two-stage and multi-task baselines)
                with autocast(dev):
                    loss = model_loss(x, y).float()
            else:
                with autocast(dev):
                    outputs = model(x)
                outputs = [o.float() for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
                loss = loss_fn(outputs, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.detach().item() * x.shape[0], seen + x.shape[0]
            bar.set_postfix(loss=f"{total / seen:.4f}")
        scheduler.step()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": total / max(seen, 1)}
        if cfg.val_every > 0 and ((epoch + 1) % cfg.val_every == 0 or epoch == cfg.epochs - 1):
            val = validate(model, val_volumes, references, profile, dev, loss_fn)
            row.update({f"val_{k}": val[k] for k in DETECTION_METRICS})
            row["val_loss"] = val["loss"]
            if _better(val["f1"], val["loss"], best):
                best = {"epoch": epoch, **val}
                payload = {"model": model.state_dict(), "epoch": epoch, "val": best, "fold": fold}
                write_atomically(out / "checkpoint_best.pt", lambda tmp: torch.save(payload, tmp))
        row["seconds"] = time.perf_counter() - tic
        history.append(row)
        frame = pd.DataFrame(history).reindex(columns=list(HISTORY_COLUMNS))
        write_atomically(out / "history.csv", lambda tmp: frame.to_csv(tmp, index=False))
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history, "best": best,
            "rng": _rng_state(), "sampler": {"seed": sampler_seed, "next_epoch": epoch + 1}, "fold": fold,
        }
        write_atomically(out / "checkpoint_last.pt", lambda tmp: torch.save(state, tmp))
    if cfg.val_every == 0 and history:  # no validation: the last epoch is the checkpoint used
        best = {"epoch": history[-1]["epoch"], **{k: math.nan for k in ("precision", "recall", "f1", "fp_per_subject", "loss")}}
        payload = {"model": model.state_dict(), "epoch": best["epoch"], "val": best, "fold": fold}
        write_atomically(out / "checkpoint_best.pt", lambda tmp: torch.save(payload, tmp))
    best = best or {"epoch": -1}
    result = RunResult(
        run_dir=out, fold=fold, model=profile.model.name, best_epoch=int(best["epoch"]),
        best_val={k: float(v) for k, v in best.items() if k != "epoch"},
        epochs=len(history), seconds=float(sum(r["seconds"] for r in history)),
        n_params=int(n_params), device=str(dev),
    )
    info = {**dataclasses.asdict(result), "run_dir": str(out), "seed": profile.seed, "profile": profile.name}
    info["best_val"] = {k: (None if math.isnan(v) else v) for k, v in result.best_val.items()}
    write_text_atomically(out / "result.json", json.dumps(info, indent=2, allow_nan=True))
    return result


def _strata(root: Path, ids: Sequence[str]) -> dict[str, str] | None:
    frame = load_participants(root)
    if "aria_h_category" not in frame.columns or not set(ids) <= set(frame.index):
        return None
    return {s: str(frame.loc[s, "aria_h_category"]) for s in ids}


def _check_resume_profile(out: Path, profile: Profile) -> None:
    saved = profile_to_dict(load_run_profile(out))
    now = profile_to_dict(profile)
    for d in (saved, now):
        d["train"].pop("epochs")
        d.pop("name")
    changed = sorted(f"{s}.{k}" for s in now if isinstance(now[s], dict) for k in now[s] if saved[s].get(k) != now[s][k])
    changed += sorted(k for k in now if not isinstance(now[k], dict) and saved.get(k) != now[k])
    if changed:
        raise ConfigError(
            f"resume of {out}: the profile differs from the run's profile.yaml in {changed}; "
            "only train.epochs may change (start a new run otherwise)"
        )


def train_fold(
    profile: Profile,
    data_root: Path,
    fold: int,
    out: Path,
    model_name: str | None = None,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    modality: str | None = None,
) -> RunResult:
    """Train fold ``fold`` of the profile's cross-validation on the dataset at ``data_root``.

    The split is made from the profile seed over all subjects of the dataset
    (only those scanned with ``modality``, "gre" or "swi", when given),
    stratified by ``aria_h_category`` of ``participants.tsv`` when every
    subject has one. Preprocessed volumes come from the shared cache
    (:func:`cmbstudy.inference.default_cache_dir`).

    Raises:
        ConfigError: fold out of range, more folds than subjects, a changed profile on resume.
        InputError: unreadable dataset, a subject without a CMB mask, nothing to resume.
        OutputError: ``out`` holds results and neither ``overwrite`` nor ``resume`` is set.
    """
    out = Path(out)
    if model_name is not None:
        profile = dataclasses.replace(profile, model=dataclasses.replace(profile.model, name=model_name))
    if resume:
        if not (out / "checkpoint_last.pt").is_file():
            raise InputError(f"{out / 'checkpoint_last.pt'} does not exist: nothing to resume")
        _check_resume_profile(out, profile)
    else:
        check_output_dir(out, overwrite)
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    subjects = load_subjects(Path(data_root))
    if modality is not None:
        found = sorted({s.modality for s in subjects})
        subjects = [s for s in subjects if s.modality == modality]
        if len(subjects) < profile.train.n_folds:
            raise InputError(
                f"{data_root} has {len(subjects)} {modality!r} subjects (modalities there: {found}); "
                f"{profile.train.n_folds} folds need at least as many"
            )
    ids = [s.subject_id for s in subjects]
    strata = _strata(Path(data_root), ids)
    splits = make_cv_splits(ids, profile.train.n_folds, profile.seed, strata)
    split = select_fold(splits, fold)
    unlabeled = [s.subject_id for s in subjects if s.mask_path is None]
    if unlabeled:
        raise InputError(f"subjects {unlabeled[:5]} of {data_root} have no CMB mask: training needs one per subject")
    by_id = {s.subject_id: s for s in subjects}
    train_subjects = [by_id[i] for i in split["train"]]
    val_subjects = [by_id[i] for i in split["val"]]
    # read and preprocess every subject before the run folder is made: a bad file leaves nothing behind
    volumes = load_preprocessed(train_subjects + val_subjects, profile.preprocess, default_cache_dir(out), progress)
    references = [np.asarray(load_mask(s.mask_path).dataobj) for s in val_subjects]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"run folder {out} cannot be created ({exc})") from exc
    write_text_atomically(out / "profile.yaml", yaml.safe_dump(profile_to_dict(profile), sort_keys=False))
    save_splits(out / "split.json", splits, profile.seed, fold, strata is not None)
    write_text_atomically(out / "environment.json", json.dumps(collect_environment(), indent=2))
    dataset = {**describe_dataset(data_root), "training_modality": modality or "all"}
    write_text_atomically(out / "dataset.json", json.dumps(dataset, indent=2, default=str))
    init_seed = int(np.random.SeedSequence([profile.seed, fold, 0]).generate_state(1)[0])
    torch.manual_seed(init_seed)
    model = model_from_config(profile.model)
    return fit(
        model, volumes[: len(train_subjects)], volumes[len(train_subjects):], references, profile, out,
        fold=fold, device=device, resume=resume, progress=progress,
    )
