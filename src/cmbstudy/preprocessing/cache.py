"""The preprocessing cache: one ``.npz`` per subject, keyed by the settings and the input files.

Training, validation, prediction and the figure notebooks of one study read
the same cache (:func:`default_cache_dir`), so every subject is preprocessed once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ..config import PreprocessConfig
from ..data.datasets import Subject
from ..data.io import write_atomically
from ..workers import run_each
from .geometry import Geometry, PreprocessedVolume
from .preprocess import preprocess_subject

__all__ = ["CACHE_ENV_VAR", "default_cache_dir", "fill_cache", "load_preprocessed"]

CACHE_ENV_VAR = "CMBSTUDY_CACHE"
_CACHE_VERSION = 2  # 2: the unmasked image is stored too


def default_cache_dir(anchor: Path) -> Path:
    """Preprocessing cache: ``$CMBSTUDY_CACHE``, else ``.cmbstudy_cache`` beside ``anchor``.

    Runs of several folds in one folder (``results/train/fold0``, ``fold1``...)
    and predictions from those runs share one cache; entries are keyed by the
    preprocessing settings and input files (:func:`load_preprocessed`).
    """
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path(anchor).resolve().parent / ".cmbstudy_cache"


def _cache_key(subject: Subject, cfg: PreprocessConfig) -> str:
    paths = [subject.image_path, subject.mask_path, subject.brain_mask_path]
    files = []
    for path in paths:
        if path is None:
            files.append(None)
        else:
            stat = Path(path).stat()
            files.append([Path(path).name, stat.st_size, stat.st_mtime_ns])
    text = json.dumps(
        {"version": _CACHE_VERSION, "cfg": dataclasses.asdict(cfg), "files": files}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_path(subject: Subject, cfg: PreprocessConfig, cache_dir: Path) -> Path:
    """The subject's entry in ``cache_dir`` under ``cfg`` and its input files as they are now."""
    return Path(cache_dir) / f"sub-{subject.subject_id}_{_cache_key(subject, cfg)}.npz"


def _save_cache(volume: PreprocessedVolume, path: Path) -> None:
    arrays = {"image": volume.image, "brain": volume.brain}
    if volume.mask is not None:
        arrays["mask"] = volume.mask
    if volume.unmasked is not None:
        arrays["unmasked"] = volume.unmasked
    geometry = json.dumps(dataclasses.asdict(volume.geometry))
    write_atomically(
        path,
        lambda tmp: np.savez(tmp, subject_id=np.array(volume.subject_id), geometry=np.array(geometry), **arrays),
        suffix=".npz",
    )


def _read_cache(path: Path) -> PreprocessedVolume:
    with np.load(path, allow_pickle=False) as npz:
        raw = json.loads(str(npz["geometry"]))
        geometry = Geometry(
            original_shape=tuple(raw["original_shape"]),
            original_affine=tuple(tuple(row) for row in raw["original_affine"]),
            canonical_shape=tuple(raw["canonical_shape"]),
            canonical_voxel_mm=tuple(raw["canonical_voxel_mm"]),
            box_start=tuple(raw["box_start"]),
            box_size=int(raw["box_size"]),
            size=int(raw["size"]),
        )
        mask = npz["mask"] if "mask" in npz.files else None
        unmasked = npz["unmasked"] if "unmasked" in npz.files else None
        return PreprocessedVolume(str(npz["subject_id"]), npz["image"], npz["brain"], mask, geometry, unmasked)


def load_preprocessed(
    subjects: Sequence[Subject], cfg: PreprocessConfig, cache_dir: Path, progress: bool = True
) -> list[PreprocessedVolume]:
    """Preprocess every subject, reading and writing one ``.npz`` per subject in ``cache_dir``.

    The cache file name holds a hash of ``cfg`` and of the input files' names,
    sizes and modification times; a changed input or setting is recomputed and
    the subject's stale cache files are removed.

    Raises:
        InputError: as :func:`preprocess_subject`.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    volumes = []
    for subject in tqdm(subjects, desc="preprocess", unit="subject", disable=not progress):
        path = _cache_path(subject, cfg, cache_dir)
        if path.is_file():
            try:
                volumes.append(_read_cache(path))
                continue
            except (OSError, ValueError, KeyError):
                path.unlink()  # unreadable cache (e.g. interrupted copy): recompute
        volume = preprocess_subject(subject, cfg)
        own = re.compile(rf"sub-{re.escape(subject.subject_id)}_[0-9a-f]{{16}}\.npz")
        for stale in cache_dir.glob("sub-*.npz"):
            if own.fullmatch(stale.name):
                stale.unlink()
        _save_cache(volume, path)
        volumes.append(volume)
    return volumes


def _fill_one(subject: Subject, cfg: PreprocessConfig, cache_dir: Path) -> tuple[float, bool]:
    from_cache = _cache_path(subject, cfg, cache_dir).is_file()
    start = time.perf_counter()
    load_preprocessed([subject], cfg, cache_dir, progress=False)
    return time.perf_counter() - start, from_cache


def fill_cache(subjects: Sequence[Subject], cfg: PreprocessConfig, cache_dir: Path, workers: int = 1,
               progress: bool = True) -> list[tuple[float, bool]]:
    """Preprocess into ``cache_dir`` every subject not there yet, over up to ``workers`` processes.

    Each subject's entry is a file of its own, written atomically, so workers never share one. The workers
    keep SimpleITK's default number of threads, as one process does: N4's result depends on it in its last
    bits, so the cache is the same for any number of workers. Read the volumes afterwards with
    :func:`load_preprocessed`, which then only reads.

    Returns:
        Per subject, in order: the seconds it took and whether its entry was already in the cache.

    Raises:
        InputError: as :func:`preprocess_subject` (the first failing subject's).
    """
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(subjects), desc="preprocess", unit="subject", disable=not progress) as bar:
        return run_each(_fill_one, [(subject, cfg, Path(cache_dir)) for subject in subjects], workers, bar)
