"""Tiny hand-made datasets on disk for the I/O, dataset, manifest and CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

AFFINE = np.diag([0.9, 0.9, 3.0, 1.0])
SHAPE = (21, 24, 9)  # uneven, so axis mix-ups fail


def write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, dtype=None) -> Path:
    """Save ``data`` as NIfTI at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data)
    img = nib.Nifti1Image(arr.astype(dtype) if dtype else arr, affine)
    nib.save(img, str(path))
    return path


def phantom(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, brain bool): an ellipsoid 'brain' of ~100 with noise on a background of ~5."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = [(n - 1) / 2 for n in shape]
    radius = [0.4 * n for n in shape]
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius)) <= 1.0
    image = np.where(brain, 100.0, 5.0) + rng.normal(0, 2, shape)
    return np.abs(image).astype(np.float32), brain


def cmb_mask(shape: tuple[int, int, int], centres: list[tuple[int, int, int]]) -> np.ndarray:
    """uint8 mask with a 3x3x1 lesion at each centre."""
    mask = np.zeros(shape, np.uint8)
    for x, y, z in centres:
        mask[x - 1 : x + 2, y - 1 : y + 2, z] = 1
    return mask


def make_synthetic_root(root: Path, n_subjects: int = 3, shape: tuple[int, int, int] = SHAPE) -> Path:
    """A valid synthetic-layout dataset: subject 0 GRE with 2 CMBs, 1 SWI with 0, 2 GRE with 1."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "test", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "GeneratedBy": [{"Name": "cmbstudy.synth", "Version": "0.1.0"}],
        "cmbstudy": {"dataset": "synthetic", "profile": "smoke", "seed": 0, "n_subjects": n_subjects},
    }))
    lesion_sets = [[(7, 8, 3), (13, 15, 5)], [], [(10, 12, 4)]]
    lines = ["participant_id\tmodality\tsite\tcmb_count"]
    for i in range(n_subjects):
        label = f"{i + 1:03d}"
        modality = "swi" if i % 3 == 1 else "gre"
        suffix = "swi" if modality == "swi" else "T2starw"
        anat = root / f"sub-{label}" / "anat"
        image, brain = phantom(shape, seed=i)
        lesions = lesion_sets[i % 3]
        write(anat / f"sub-{label}_{suffix}.nii.gz", image)
        write(anat / f"sub-{label}_part-phase_{suffix}.nii.gz", np.zeros(shape, np.float32))
        write(anat / f"sub-{label}_label-CMB_mask.nii.gz", cmb_mask(shape, lesions), dtype=np.uint8)
        write(anat / f"sub-{label}_label-brain_mask.nii.gz", brain.astype(np.uint8), dtype=np.uint8)
        rows = ["lesion_id\tx_vox\ty_vox\tz_vox\tdiameter_mm\tsmall"]
        rows += [f"{k + 1}\t{x}\t{y}\t{z}\t3.0\ttrue" for k, (x, y, z) in enumerate(lesions)]
        (anat / f"sub-{label}_lesions.tsv").write_text("\n".join(rows) + "\n")
        lines.append(f"sub-{label}\t{modality}\tsite{i % 2}\t{len(lesions)}")
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


def make_valdo_root(root: Path, labels: tuple[str, ...] = ("101", "203"), shape=SHAPE) -> Path:
    """A VALDO Task 2 layout: sub-<id>/sub-<id>_space-T2S_{desc-masked_T2S,CMB}.nii.gz."""
    for i, label in enumerate(labels):
        folder = root / f"sub-{label}"
        image, brain = phantom(shape, seed=10 + i)
        write(folder / f"sub-{label}_space-T2S_desc-masked_T2S.nii.gz", np.where(brain, image, 0))
        write(folder / f"sub-{label}_space-T2S_CMB.nii.gz", cmb_mask(shape, [(9, 10, 4)]), dtype=np.uint8)
    return root
