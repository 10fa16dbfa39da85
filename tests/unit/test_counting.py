"""Counting right: hard negatives, brain-mask jitter, the lesion-wise loss, the operating point, the test set."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_training import DarkOracle, TinyNet, _volume

from cmbstudy.config import EvalConfig, Profile, TrainConfig, load_profile
from cmbstudy.data.datasets import aria_h_strata, load_study_subjects
from cmbstudy.data.run_folder import load_run_split
from cmbstudy.data.splits import load_test_split, make_test_split, save_test_split
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.evaluation.operating_point import (
    OperatingPoint,
    apply_operating_point,
    centroids_inside,
    choose_operating_point,
)
from cmbstudy.evaluation.report import EvaluationReport
from cmbstudy.models.losses import (
    BlobDice,
    DeepSupervisedDiceFocal,
    WithBlobDice,
    make_loss,
)
from cmbstudy.study.tables.errors import BRAIN_EDGE, summarize_error_kinds
from cmbstudy.study.tables.format import ABOVE, BELOW, CANNOT_TELL, ordering_verdict
from cmbstudy.study.test_set import TEST_SPLIT_FILE, resolve_test_set
from cmbstudy.synth.cohort import make_cohort, make_test_cohort
from cmbstudy.training.augment import jitter_brain
from cmbstudy.training.loop import fit
from cmbstudy.training.mining import (
    false_positive_points,
    mine_hard_negatives,
    mining_subjects,
)


def test_jitter_brain_erodes_or_dilates_and_cuts_the_image() -> None:
    unmasked = np.arange(2 * 9 * 9, dtype=np.float32).reshape(2, 9, 9) + 1.0
    brain = np.zeros((2, 9, 9), bool)
    brain[:, 3:6, 3:6] = True
    sizes = set()
    for seed in range(40):
        image, mask = jitter_brain(unmasked, brain, np.random.default_rng(seed), max_voxels=1)
        assert np.array_equal(image[mask], unmasked[mask]) and not image[~mask].any()
        assert mask[0].sum() == mask[1].sum()  # every slice alike
        sizes.add(int(mask[0].sum()))
    assert sizes == {1, 9, 21}  # eroded to the centre, unchanged, dilated by the in-plane cross
    image, mask = jitter_brain(unmasked, brain, np.random.default_rng(0), max_voxels=0)
    assert np.array_equal(mask, brain)
    with pytest.raises(ValueError, match="differ in shape"):
        jitter_brain(unmasked, brain[:1], np.random.default_rng(0), 1)


def test_blob_dice_weighs_every_lesion_the_same() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[0, 0, 2, 2] = 1  # one voxel
    target[0, 0, 8:12, 8:12] = 1  # sixteen voxels
    logits = torch.full_like(target, -20.0)
    big_found = logits.clone()
    big_found[0, 0, 8:12, 8:12] = 20.0
    small_found = logits.clone()
    small_found[0, 0, 2, 2] = 20.0
    loss = BlobDice()
    assert float(loss(big_found, target)) == pytest.approx(0.5, abs=1e-3)
    assert float(loss(small_found, target)) == pytest.approx(0.5, abs=1e-3)  # the one voxel counts as much
    assert float(loss(torch.where(target > 0, 20.0, -20.0), target)) == pytest.approx(0.0, abs=1e-3)
    empty = torch.zeros(2, 1, 8, 8, requires_grad=True)
    zero = loss(empty, torch.zeros(2, 1, 8, 8))
    assert float(zero.detach()) == 0.0
    zero.backward()  # a batch without lesions still back-propagates
    assert isinstance(make_loss(TrainConfig(blob_weight=0.5)), WithBlobDice)
    assert isinstance(make_loss(TrainConfig()), DeepSupervisedDiceFocal)
    with pytest.raises(ConfigError, match="blob_weight"):
        make_loss(TrainConfig(blob_weight=-1.0))


def test_false_positive_points_are_the_unmatched_components() -> None:
    mask = np.zeros((6, 20, 20), np.uint8)
    mask[2, 5, 5] = 1
    probability = np.zeros((6, 20, 20), np.float32)
    probability[2, 5, 6] = 0.9  # matches the lesion
    probability[4, 15, 14:17] = [0.6, 0.8, 0.7]  # a false positive; its peak at x = 15
    points = false_positive_points(3, probability, mask, OperatingPoint(0.5), 4.0)
    assert points.tolist() == [[3, 4, 15, 15]]
    assert false_positive_points(0, np.zeros_like(probability), mask, OperatingPoint(0.5), 4.0).shape == (0, 4)
    brain = np.ones_like(mask, dtype=bool)
    brain[4] = False  # the brain rule drops the false positive outside the brain, as everywhere else
    assert false_positive_points(3, probability, mask, OperatingPoint(0.5), 4.0, brain).shape == (0, 4)
    assert mining_subjects(10, 0, seed=1, epoch=3).tolist() == list(range(10))
    picked = mining_subjects(10, 4, seed=1, epoch=3)
    assert len(picked) == 4 and picked.tolist() == mining_subjects(10, 4, seed=1, epoch=3).tolist()
    assert picked.tolist() != mining_subjects(10, 4, seed=1, epoch=6).tolist()


def test_mining_finds_what_the_network_calls_a_lesion_and_is_not() -> None:
    volume = _volume(1, [(2, 5, 6)])
    volume.image[5, 18, 18] = -4.0  # a dark spot with no reference lesion: the oracle's false positive
    profile = Profile(name="unit", train=TrainConfig(val_batch_size=4), evaluation=EvalConfig())
    rows = mine_hard_negatives(DarkOracle(), [volume], [0], profile, torch.device("cpu"))
    assert rows.tolist() == [[0, 5, 18, 18]]


def _mining_profile(epochs: int) -> Profile:
    train = TrainConfig(epochs=epochs, batch_size=2, warmup_epochs=1, restart_epochs=3, slices_per_epoch=8,
                        crop_size=16, val_batch_size=4, deep_supervision_weights=(0.6, 0.4),
                        lesion_slice_fraction=0.25, hard_negative_fraction=0.5, edge_fraction=0.25,
                        mine_after=1, mine_subjects=1, brain_jitter=1)
    # a threshold this low makes the untrained network's output one big false positive to mine
    return Profile(name="unit", seed=3, train=train, evaluation=EvalConfig(threshold=0.01))


def _fit_mining(out: Path, epochs: int, resume: bool = False) -> None:
    torch.manual_seed(0)
    train = [_volume(1, [(2, 5, 6), (5, 17, 18)]), _volume(2, [(4, 12, 7)])]
    val = [_volume(3, [(3, 9, 9)])]
    fit(TinyNet(), train, val, [v.restore(v.mask) for v in val], _mining_profile(epochs), out,
        fold=0, device="cpu", resume=resume, progress=False)


def test_hard_negatives_are_mined_counted_and_resumed(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _fit_mining(tmp_path / "a", epochs=3)
    history = pd.read_csv(tmp_path / "a" / "history.csv")
    assert history["hard_pool"].tolist()[0] == 0 and (history["hard_pool"][1:] > 0).all()
    assert history["crops_hard"].tolist() == [0, 4, 4]  # none before the first mining
    assert history["crops_edge"].tolist() == [2, 2, 2]
    assert (history[["crops_lesion", "crops_hard", "crops_edge", "crops_other"]].sum(axis=1) == 8).all()
    _fit_mining(tmp_path / "b", epochs=2)
    _fit_mining(tmp_path / "b", epochs=3, resume=True)
    a = torch.load(tmp_path / "a" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)
    assert a["hard_negatives"] == b["hard_negatives"] and a["hard_negatives"]
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0)


def test_operating_point_rules_and_choice() -> None:
    reference = np.zeros((20, 20, 8), np.uint8)
    reference[5, 5, 3] = reference[14, 14, 5] = 1
    probability = np.zeros((20, 20, 8), np.float32)
    probability[5, 5, 3], probability[14, 14, 5] = 0.9, 0.7  # the two lesions
    probability[10, 2, 2] = 0.6  # a one-voxel false positive
    probability[1, 17:19, 6] = 0.95  # a two-voxel false positive outside the brain
    brain = np.zeros((20, 20, 8), bool)
    brain[3:18, 3:18] = True
    brain[10, 2, 2] = True
    point = choose_operating_point([probability], [reference], [brain])
    # the threshold must stay at or below 0.7 to keep both lesions; 0.65 and above drops the 0.6 FP
    assert point.threshold == pytest.approx(0.7) and point.min_voxels == 1 and point.source == "validation"
    assert point.validation["f1"] == pytest.approx(1.0) and point.validation["fp_per_subject"] == 0.0
    lesions = apply_operating_point(probability, OperatingPoint(0.5, 1), brain)
    assert lesions.n == 3  # the one outside the brain is dropped
    assert apply_operating_point(probability, OperatingPoint(0.5, 2)).n == 1  # only the two-voxel one
    assert centroids_inside(np.array([[1.0, 17.5, 6.0], [5.0, 5.0, 3.0]]), brain).tolist() == [False, True]
    blind = choose_operating_point([probability], [np.zeros_like(reference)], fallback=0.4)
    assert blind.threshold == 0.4 and "no validation lesion" in blind.source
    assert OperatingPoint.from_json(point.to_json()) == point
    with pytest.raises(ConfigError, match="threshold"):
        OperatingPoint(0.0)
    with pytest.raises(ConfigError, match="at least 1 voxel"):
        OperatingPoint(0.5, 0)
    with pytest.raises(ConfigError, match="as many probability maps"):
        choose_operating_point([probability], [])


def test_ordering_verdicts_come_from_the_intervals() -> None:
    high = {"f1": 0.8, "f1_ci_low": 0.7, "f1_ci_high": 0.9}
    low = {"f1": 0.5, "f1_ci_low": 0.4, "f1_ci_high": 0.6}
    close = {"f1": 0.65, "f1_ci_low": 0.55, "f1_ci_high": 0.75}
    assert ordering_verdict(high, low) == ABOVE and ordering_verdict(low, high) == BELOW
    assert ordering_verdict(high, close) == CANNOT_TELL  # higher F1, overlapping intervals
    assert ordering_verdict(high, None) == CANNOT_TELL
    assert ordering_verdict(high, {"f1": 0.1, "f1_ci_low": float("nan"), "f1_ci_high": 0.2}) == CANNOT_TELL


def test_error_kinds_put_the_brain_edge_first() -> None:
    table = pd.DataFrame({"mimic": ["vein", "vein", "other (no mimic nearby)", "deep-nuclei iron"],
                          "edge_distance_voxels": [1.0, 5.0, 2.0, np.nan]})
    kinds = summarize_error_kinds(table, n_subjects=2)
    assert kinds.index[0] == BRAIN_EDGE
    assert kinds.loc[BRAIN_EDGE, "false_positives"] == 2 and kinds.loc["vein", "false_positives"] == 1
    assert kinds.loc["deep-nuclei iron", "per_subject"] == 0.5 and kinds["share"].sum() == pytest.approx(1.0)


def test_test_split_is_seeded_stratified_and_saved(tmp_path: Path) -> None:
    ids = [f"{i:03d}" for i in range(20)]
    strata = {s: ("0" if i < 4 else "1-4") for i, s in enumerate(ids)}
    test = make_test_split(ids, 0.25, seed=0, strata=strata)
    assert len(test) == 5 and test == sorted(test) == make_test_split(ids, 0.25, seed=0, strata=strata)
    assert sum(strata[s] == "0" for s in test) == 1  # 4 of 20 subjects in category 0: one of the five
    assert make_test_split(ids, 0.25, seed=1, strata=strata) != test
    save_test_split(tmp_path / "t.json", test, 0, 0.25, True)
    assert load_test_split(tmp_path / "t.json") == test
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        make_test_split(ids, 1.0, 0)
    with pytest.raises(ConfigError, match="leaves 0 test subjects"):
        make_test_split(ids[:2], 0.1, 0)
    with pytest.raises(InputError, match="does not exist"):
        load_test_split(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"test": []}))
    with pytest.raises(InputError, match="lists no test subjects"):
        load_test_split(tmp_path / "bad.json")


def _tiny_profile() -> Profile:
    return load_profile("smoke", ["synth.n_subjects=4", "synth.n_test_subjects=2", "synth.matrix=[32, 32]",
                                  "synth.slab_mm=24.0", "synth.supersample=1"])


def test_the_test_cohort_has_its_own_seed_and_labels(tmp_path: Path) -> None:
    profile = _tiny_profile()
    summary = make_test_cohort(tmp_path / "test", profile, progress=False)
    assert summary.n_subjects == 2
    description = json.loads((tmp_path / "test" / "dataset_description.json").read_text())
    assert description["cmbstudy"]["role"] == "test" and description["cmbstudy"]["seed"] == profile.synth.test_seed
    ids = sorted(p.name for p in (tmp_path / "test").glob("sub-*"))
    assert ids == ["sub-test001", "sub-test002"]
    same = dataclasses.replace(profile, synth=dataclasses.replace(profile.synth, test_seed=profile.seed))
    with pytest.raises(ConfigError, match="equals the profile seed"):
        make_test_cohort(tmp_path / "other", same, progress=False)


def test_resolve_test_set_separate_root_or_saved_split(tmp_path: Path) -> None:
    profile = _tiny_profile()
    make_cohort(tmp_path / "train", profile, progress=False)
    make_test_cohort(tmp_path / "test", profile, progress=False)
    separate = resolve_test_set(profile, tmp_path / "train", tmp_path / "test", tmp_path / "results")
    assert separate.subject_ids == ("test001", "test002") and not separate.held_out
    assert separate.excluded_from_training == ()
    assert len(load_study_subjects(tmp_path / "train", tmp_path / "test")) == 6
    results = tmp_path / "results"
    results.mkdir()
    held = resolve_test_set(profile, tmp_path / "train", tmp_path / "train", results)
    assert held.held_out and len(held.subject_ids) == 1  # 0.2 of 4 subjects
    assert load_test_split(results / TEST_SPLIT_FILE) == list(held.subject_ids)
    again = resolve_test_set(profile, tmp_path / "train", tmp_path / "train", results)
    assert again == held  # read back, not drawn again
    assert set(aria_h_strata(tmp_path / "train", ["001", "002"])) == {"001", "002"}
    save_test_split(results / TEST_SPLIT_FILE, ["999"], 0, 0.2, False)
    with pytest.raises(InputError, match="made for another dataset"):
        resolve_test_set(profile, tmp_path / "train", tmp_path / "train", results)
    shutil.copytree(tmp_path / "train", tmp_path / "copy")
    with pytest.raises(InputError, match="in both"):
        load_study_subjects(tmp_path / "train", tmp_path / "copy")


def test_a_run_without_a_test_split_has_no_test_subjects(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"held_out": []}))
    with pytest.raises(InputError, match="held out no test subjects"):
        load_run_split(tmp_path, "test")
    (tmp_path / "dataset.json").write_text(json.dumps({"held_out": ["007"]}))
    assert load_run_split(tmp_path, "test") == ["007"]


def test_evaluation_report_reads_back_its_json() -> None:
    report = EvaluationReport({"f1": 0.5, "precision": float("nan")}, [{"subject_id": "1", "n_tp": 1}])
    again = EvaluationReport.from_json(report.to_json())
    assert again.summary == {"f1": 0.5, "precision": None} and again.per_subject == report.per_subject
    assert again.froc is None
