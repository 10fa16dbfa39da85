"""Subject discovery in the synthetic, BIDS-like and VALDO layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import make_synthetic_root, make_valdo_root, phantom, write

from cmbstudy.data.datasets import (
    Subject,
    detect_layout,
    load_participants,
    load_subjects,
)
from cmbstudy.errors import InputError


def test_synthetic_layout(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    assert detect_layout(root) == "synthetic"
    subjects = load_subjects(root)
    assert [s.subject_id for s in subjects] == ["001", "002", "003"]
    first, second = subjects[0], subjects[1]
    assert isinstance(first, Subject)
    assert first.image_path == root / "sub-001" / "anat" / "sub-001_T2starw.nii.gz"
    assert first.mask_path == root / "sub-001" / "anat" / "sub-001_label-CMB_mask.nii.gz"
    assert first.brain_mask_path == root / "sub-001" / "anat" / "sub-001_label-brain_mask.nii.gz"
    assert first.modality == "gre" and second.modality == "swi"
    assert second.image_path.name == "sub-002_swi.nii.gz"  # not the part-phase image
    assert first.site == "site0" and second.site == "site1"
    assert set(first.extra_paths) == {"phase", "lesions"}
    assert first.extra_paths["phase"].name == "sub-001_part-phase_T2starw.nii.gz"


def test_bids_layout_with_sessions_and_other_suffixes(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    image = phantom()[0]
    write(root / "sub-a" / "ses-1" / "anat" / "sub-a_ses-1_GRE.nii.gz", image)
    write(root / "sub-a" / "ses-1" / "anat" / "sub-a_ses-1_label-CMB_mask.nii.gz",
          np.zeros(image.shape, np.uint8))
    write(root / "sub-a" / "ses-2" / "anat" / "sub-a_ses-2_T2S.nii", image)
    write(root / "sub-b" / "anat" / "sub-b_acq-3d_swi.nii.gz", image)
    write(root / "sub-b" / "anat" / "sub-b_acq-3d_label-CMB_mask.nii.gz", np.zeros(image.shape, np.uint8))
    assert detect_layout(root) == "bids"
    subjects = load_subjects(root)
    assert [s.subject_id for s in subjects] == ["a_ses-1", "a_ses-2", "b"]
    assert [s.modality for s in subjects] == ["gre", "gre", "swi"]
    assert subjects[0].mask_path is not None and subjects[1].mask_path is None
    assert subjects[2].mask_path.name == "sub-b_acq-3d_label-CMB_mask.nii.gz"
    assert all(s.site == "unknown" and s.brain_mask_path is None for s in subjects)
    assert load_subjects(root, "bids-like") == subjects


def test_valdo_layout(tmp_path: Path) -> None:
    root = make_valdo_root(tmp_path / "valdo", labels=("101", "203", "305"))
    (root / "sub-305" / "sub-305_space-T2S_CMB.nii.gz").unlink()
    assert detect_layout(root) == "valdo2021-cmb"
    subjects = load_subjects(root)
    assert [s.subject_id for s in subjects] == ["101", "203", "305"]
    assert [s.site for s in subjects] == ["SABRE", "RSS", "ALFA"]
    assert subjects[0].image_path.name == "sub-101_space-T2S_desc-masked_T2S.nii.gz"
    assert subjects[0].mask_path.name == "sub-101_space-T2S_CMB.nii.gz"
    assert subjects[2].mask_path is None
    assert all(s.modality == "gre" for s in subjects)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"dataset root .*nowhere does not exist"):
        load_subjects(tmp_path / "nowhere")
    with pytest.raises(InputError, match="does not exist"):
        load_subjects(tmp_path / "nowhere", dataset="valdo2021-cmb")


def test_empty_root(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no sub-\\* folders"):
        detect_layout(tmp_path)


def test_unknown_layout(tmp_path: Path) -> None:
    write(tmp_path / "sub-1" / "anat" / "sub-1_T1w.nii.gz", phantom()[0])
    with pytest.raises(InputError, match="unknown layout"):
        load_subjects(tmp_path)


def test_unknown_dataset_name(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=1)
    with pytest.raises(InputError, match="unknown dataset 'valdo': use one of synthetic, bids-like"):
        load_subjects(root, "valdo")


def test_wrong_dataset_for_root(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=1)
    with pytest.raises(InputError, match="no subject with an image in the 'valdo2021-cmb' layout"):
        load_subjects(root, "valdo2021-cmb")


def test_participants(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "ds", n_subjects=3)
    frame = load_participants(root)
    assert list(frame.index) == ["001", "002", "003"]
    assert frame.loc["001", "cmb_count"] == 2 and frame.loc["002", "modality"] == "swi"
    empty = load_participants(tmp_path)
    assert empty.empty and empty.index.name == "participant_id"


def test_participants_without_id_column(tmp_path: Path) -> None:
    (tmp_path / "participants.tsv").write_text("subject\tage\nsub-1\t70\n")
    with pytest.raises(InputError, match="has no participant_id column"):
        load_participants(tmp_path)


def test_participants_duplicates(tmp_path: Path) -> None:
    (tmp_path / "participants.tsv").write_text("participant_id\nsub-1\n1\n")
    with pytest.raises(InputError, match=r"lists participants more than once: \['1'\]"):
        load_participants(tmp_path)
