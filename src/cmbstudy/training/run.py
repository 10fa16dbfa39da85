"""Training of one cross-validation fold of a dataset: ``train_fold(profile, ...) -> RunResult``.

Makes the split (:mod:`cmbstudy.data.splits`), reads every subject through the
preprocessing cache, writes the run folder's provenance files
(:mod:`cmbstudy.data.run_folder`), builds the network from the profile and
trains it (:func:`cmbstudy.training.loop.fit`) and calibrates its operating
point on its validation subjects (:mod:`cmbstudy.training.calibrate`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import collect_environment
from ..config import Profile, profile_to_dict
from ..data.datasets import Subject, aria_h_strata, describe_dataset, load_subjects
from ..data.io import check_output_dir, load_mask, write_text_atomically
from ..data.run_folder import (
    CHECKPOINT_BEST,
    CHECKPOINT_LAST,
    DATASET,
    ENVIRONMENT,
    RUN_FILES,
    SPLIT,
    load_run_profile,
    write_run_profile,
)
from ..data.splits import make_cv_splits, save_splits, select_fold
from ..device import resolve_device
from ..errors import ConfigError, InputError, OutputError
from ..models import model_from_config
from ..preprocessing.cache import default_cache_dir, load_preprocessed
from .calibrate import calibrate_run
from .distributed import current
from .fit_cache import FIT_CACHE_DIR
from .loop import RunResult, fit, training_seed

__all__ = ["train_fold"]


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


def _training_subjects(data_root: Path, modality: str | None, n_folds: int,
                       exclude: Sequence[str] = ()) -> list[Subject]:
    """The subjects a run trains and validates on: every one not in ``exclude``, or those scanned with ``modality``.

    Raises:
        InputError: ``exclude`` names unknown subjects, fewer subjects of ``modality`` than folds,
            or a subject without a CMB mask.
    """
    subjects = load_subjects(data_root)
    unknown = sorted(set(exclude) - {s.subject_id for s in subjects})
    if unknown:
        raise InputError(f"held-out subjects {unknown[:5]} are not subjects of {data_root}: "
                         "was the test split made for another dataset?")
    subjects = [s for s in subjects if s.subject_id not in set(exclude)]
    if modality is not None:
        found = sorted({s.modality for s in subjects})
        subjects = [s for s in subjects if s.modality == modality]
        if len(subjects) < n_folds:
            raise InputError(
                f"{data_root} has {len(subjects)} {modality!r} subjects (modalities there: {found}); "
                f"{n_folds} folds need at least as many"
            )
    unlabeled = [s.subject_id for s in subjects if s.mask_path is None]
    if unlabeled:
        raise InputError(f"subjects {unlabeled[:5]} of {data_root} have no CMB mask: training needs one per subject")
    return subjects


def _write_provenance(out: Path, profile: Profile, data_root: Path, splits: Sequence[Mapping[str, list[str]]],
                      fold: int, stratified: bool, modality: str | None, exclude: Sequence[str]) -> None:
    """The run folder's profile, split, environment and dataset files."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"run folder {out} cannot be created ({exc})") from exc
    write_run_profile(out, profile)
    save_splits(out / SPLIT, splits, profile.seed, fold, stratified)
    write_text_atomically(out / ENVIRONMENT, json.dumps(collect_environment(), indent=2))
    dataset = {**describe_dataset(data_root), "training_modality": modality or "all",
               "held_out": sorted(exclude)}
    write_text_atomically(out / DATASET, json.dumps(dataset, indent=2, default=str))


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
    exclude: Sequence[str] = (),
) -> RunResult:
    """Train fold ``fold`` of the profile's cross-validation on the dataset at ``data_root``.

    The split is made from the profile seed over all subjects of the dataset but
    those in ``exclude`` (a held-out test set; only those scanned with ``modality``, "gre" or "swi", when given),
    stratified by ``aria_h_category`` of ``participants.tsv`` when every
    subject has one. Preprocessed volumes come from the shared cache
    (:func:`cmbstudy.preprocessing.cache.default_cache_dir`).

    Under ``torchrun`` every process calls this; rank 0 alone checks and writes the
    run folder and fills the preprocessing cache (:mod:`cmbstudy.training.distributed`).

    Raises:
        ConfigError: fold out of range, more folds than subjects, a changed profile on resume.
        InputError: unreadable dataset, a subject without a CMB mask, nothing to resume.
        OutputError: ``out`` holds results and neither ``overwrite`` nor ``resume`` is set.
    """
    out = Path(out)
    place = current(resolve_device(device))
    if model_name is not None:
        profile = dataclasses.replace(profile, model=dataclasses.replace(profile.model, name=model_name))

    def check_out() -> None:
        if resume:
            if not (out / CHECKPOINT_LAST).is_file():
                raise InputError(f"{out / CHECKPOINT_LAST} does not exist: nothing to resume")
            _check_resume_profile(out, profile)
        else:
            check_output_dir(out, overwrite)
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)

    place.on_main(check_out)
    subjects = _training_subjects(Path(data_root), modality, profile.train.n_folds, exclude)
    ids = [s.subject_id for s in subjects]
    strata = aria_h_strata(Path(data_root), ids)
    splits = make_cv_splits(ids, profile.train.n_folds, profile.seed, strata)
    split = select_fold(splits, fold)
    by_id = {s.subject_id: s for s in subjects}
    train_subjects = [by_id[i] for i in split["train"]]
    val_subjects = [by_id[i] for i in split["val"]]
    # read and preprocess every subject before the run folder is made: a bad file leaves nothing behind;
    # rank 0 fills the cache, the other ranks then read it
    subjects_used, cache = train_subjects + val_subjects, default_cache_dir(out)
    loaded: list[list] = []

    def fill_cache() -> None:
        loaded.append(load_preprocessed(subjects_used, profile.preprocess, cache, progress))

    place.on_main(fill_cache)
    volumes = loaded[0] if place.main else load_preprocessed(subjects_used, profile.preprocess, cache, False)
    references = [np.asarray(load_mask(s.mask_path).dataobj) for s in val_subjects]
    place.on_main(lambda: _write_provenance(out, profile, data_root, splits, fold, strata is not None, modality,
                                            exclude))
    init_seed = int(np.random.SeedSequence([training_seed(profile), fold, 0]).generate_state(1)[0])
    torch.manual_seed(init_seed)
    model = model_from_config(profile.model)
    result = fit(
        model, volumes[: len(train_subjects)], volumes[len(train_subjects):], references, profile, out,
        fold=fold, device=device, resume=resume, progress=progress,
    )
    # the operating point of the checkpoint the run keeps, chosen on its validation subjects (rank 0)

    def calibrate() -> dict:
        best = torch.load(out / CHECKPOINT_BEST, map_location="cpu", weights_only=True)
        model.load_state_dict(best["model"])
        training = [(v, s.image_path, s.mask_path) for v, s in zip(volumes[: len(train_subjects)], train_subjects)]
        point = calibrate_run(model, volumes[len(train_subjects):], references, profile,
                              place.device(resolve_device(device)), out, [s.image_path for s in val_subjects], training,
                              cache / FIT_CACHE_DIR)
        return point.to_json()

    started = time.perf_counter()
    point = place.on_main(calibrate)
    return dataclasses.replace(result, operating_point=point, calibration_seconds=time.perf_counter() - started)
