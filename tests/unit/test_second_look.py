"""The second look: candidates that miss nothing, features that tell a CMB from a vein, a trained decision."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from cmbstudy.config import SecondLookConfig
from cmbstudy.errors import InputError, OutputError
from cmbstudy.evaluation.operating_point import OperatingPoint
from cmbstudy.inference.candidates import find_candidates, keep_best, keep_best_at, suppress_duplicates
from cmbstudy.inference.monitor_files import record_monitoring_threshold
from cmbstudy.inference.pipeline import describe_rule
from cmbstudy.inference.features import _edge_distance
from cmbstudy.inference.second_look import (
    FEATURES,
    N_COLUMNS,
    boosted_scores,
    candidate_features,
    candidate_patches,
    image_scores,
    find_detections,
    keep_candidates,
    load_second_look,
    save_second_look,
    score_candidates,
    screened,
)
from cmbstudy.models.patch_net import PATCH_SHAPE
from cmbstudy.training.patch_model import fit_patch_model
from cmbstudy.training.second_look import (CandidateSet, SecondLookCase, best_threshold, collect_candidates,
                                           fit_image_model, fit_second_look, recall_ceiling)

SHAPE = (40, 42, 24)  # (X, Y, Z), uneven so that an axis mix-up fails
VOXEL_MM = (1.0, 1.0, 2.0)


def _scan(rng: np.random.Generator, cmbs: list[tuple[int, int, int]], veins: list[tuple[int, int]]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A magnitude scan (tissue 100, noise 6): round dark CMBs (radius 1.5-2.5 mm) and dark veins running
    along Z through (x, y), seen end-on in every slice, of drawn sizes and darkness; its brain mask and CMB mask."""
    x, y, z = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    image = rng.normal(100.0, 6.0, size=SHAPE)
    reference = np.zeros(SHAPE, np.uint8)
    for cx, cy, cz in cmbs:
        ball = (x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * 2.0) ** 2 <= rng.uniform(1.5, 2.5) ** 2
        image[ball] = rng.uniform(20.0, 55.0)
        reference[ball] = 1
    for vx, vy in veins:
        image[(x - vx) ** 2 + (y - vy) ** 2 <= rng.uniform(0.8, 1.6) ** 2] = rng.uniform(20.0, 55.0)
    brain = np.zeros(SHAPE, bool)
    brain[3:-3, 3:-3, 1:-1] = True
    return image.astype(np.float32), brain, reference


def _case(seed: int) -> SecondLookCase:
    rng = np.random.default_rng(seed)
    spots = rng.permutation([(x, y) for x in range(9, 34, 8) for y in range(9, 36, 8)])
    cmbs = [(int(sx), int(sy), int(rng.integers(5, 19))) for sx, sy in spots[:3]]
    veins = [(int(sx), int(sy)) for sx, sy in spots[3:6]]
    image, brain, reference = _scan(rng, cmbs, veins)
    probability = np.zeros(SHAPE, np.float32)  # a network that sees nothing: the blobs must do
    return SecondLookCase(probability, image, brain, VOXEL_MM, reference)


def test_candidates_find_every_cmb_and_vein() -> None:
    image, brain, reference = _scan(np.random.default_rng(0), [(12, 12, 8)], [(30, 30)])
    candidates = find_candidates(np.zeros(SHAPE, np.float32), image, brain, VOXEL_MM, 0.1, 50)
    assert 0 < candidates.n <= 50
    assert np.linalg.norm(candidates.centres - [12, 12, 8], axis=1).min() <= 1.0
    assert np.linalg.norm(candidates.centres[:, :2] - [30, 30], axis=1).min() <= 1.0
    probability = np.zeros(SHAPE, np.float32)
    probability[11:14, 11:14, 8] = 0.6  # the network's own candidate there: the blob is the same place
    merged = find_candidates(probability, image, brain, VOXEL_MM, 0.1, 50)
    assert merged.from_network.sum() == 1
    assert (np.linalg.norm(merged.centres - [12, 12, 8], axis=1) <= 2.0).sum() == 1


def test_a_small_network_candidate_is_kept_whatever_the_single_stages_size_rule() -> None:
    # the network marks a 1-voxel CMB; the blob there is the same candidate, so a size rule on the network's
    # components (the single stage's 5 voxels) would lose the CMB however the second look scored it
    image, brain, _ = _scan(np.random.default_rng(3), [(12, 12, 8)], [(30, 30)])
    probability = np.zeros(SHAPE, np.float32)
    probability[12, 12, 8] = 0.4
    candidates = find_candidates(probability, image, brain, VOXEL_MM, 0.1, 50)
    scores = np.where(candidates.from_network, 0.9, 0.01)
    for min_voxels in (1, 5):
        kept = keep_candidates(candidates, scores, probability, OperatingPoint(0.85, min_voxels, second_look=0.5),
                               4.0)
        assert kept.lesions.n == 1 and kept.lesions.centroids[0].tolist() == [12.0, 12.0, 8.0]
        assert kept.scores.tolist() == [0.9]


def test_a_cmb_looks_like_a_blob_and_a_vein_like_a_tube() -> None:
    image, brain, _ = _scan(np.random.default_rng(1), [(12, 12, 8)], [(30, 30)])
    candidates = find_candidates(np.zeros(SHAPE, np.float32), image, brain, VOXEL_MM, 0.1, 50)
    features = candidate_features(candidates, np.zeros(SHAPE, np.float32), brain, VOXEL_MM)
    assert features.shape == (candidates.n, N_COLUMNS)
    cmb = int(np.argmin(np.linalg.norm(candidates.centres - [12, 12, 8], axis=1)))
    vein = int(np.argmin(np.linalg.norm(candidates.centres[:, :2] - [30, 30], axis=1)))
    column = {name: i for i, name in enumerate(FEATURES)}
    assert features[cmb, column["contrast"]] > 0.4 and features[vein, column["contrast"]] > 0.4  # both dark
    assert features[vein, column["z_extent_mm"]] >= 30.0  # the vein runs through the slab
    assert features[cmb, column["z_extent_mm"]] <= 6.0
    assert features[cmb, column["blobness"]] > 0.1 > features[vein, column["blobness"]]  # flat along the tube
    with pytest.raises(InputError, match="voxel sizes"):
        candidate_features(candidates, np.zeros(SHAPE, np.float32), brain, (1.0, 0.0, 2.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_edge_distance_is_scipys_distance_transform_at_the_points(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(10, 24, 3))
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    brain = (((grid - np.array(shape) / 2) / (np.array(shape) * 0.6)) ** 2).sum(-1) < 1  # reaches the faces
    brain &= rng.random(shape) < 0.97  # and holes
    voxel_mm = rng.uniform(0.4, 3.0, 3)
    points = np.argwhere(np.ones(shape, bool))
    expected = ndimage.distance_transform_edt(brain, sampling=voxel_mm)[tuple(points.T)]
    np.testing.assert_allclose(_edge_distance(brain, points, voxel_mm), expected, rtol=0, atol=1e-9)
    whole = _edge_distance(np.ones((5, 6, 7), bool), np.array([[0, 3, 3], [2, 3, 3]]), np.ones(3))
    np.testing.assert_allclose(whole, [1.0, 3.0])  # a brain that fills the volume: its background lies beyond it
    assert _edge_distance(np.zeros((4, 4, 4), bool), np.array([[1, 1, 1]]), np.ones(3)).tolist() == [0.0]


def test_duplicates_keep_the_best_scored() -> None:
    centres = np.array([[0.0, 0, 0], [3, 0, 0], [10, 0, 0]])
    assert suppress_duplicates(centres, np.array([0.5, 0.9, 0.2]), 4.0).tolist() == [False, True, True]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_best_at_many_thresholds_is_keep_best_at_each(seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 20, size=(60, 3))  # crowded: many within 4 voxels of each other
    scores = np.round(rng.uniform(size=60), 1)  # ties, broken by index in both
    thresholds = np.round(np.arange(0.0, 1.01, 0.05), 2)
    for threshold, kept in zip(thresholds, keep_best_at(centres, scores, thresholds, 4.0)):
        assert kept.tolist() == keep_best(centres, scores, threshold, 4.0).tolist()


def test_a_threshold_is_chosen_on_the_counts_of_every_out_of_fold_draw_pooled() -> None:
    # one subject: a CMB's candidate and a noise blob 20 voxels away, scored by two draws of the folds
    found = CandidateSet(np.zeros((2, len(FEATURES))), np.array([1, 0]), np.array([0, 0]),
                         [np.array([[0.0, 0, 0], [20, 0, 0]])], [np.array([[0.0, 0, 0]])], 1.0)
    first, second = np.array([0.9, 0.5]), np.array([0.6, 0.7])
    assert best_threshold(found, first, 4.0)[0] == 0.9  # F1 1 from 0.525 up: the highest
    assert best_threshold(found, second, 4.0)[0] == 0.6  # F1 2/3 up to 0.6
    # pooled: (1 TP, 0 FP) and (1 TP, 1 FP) at 0.525-0.6, F1 4/5; one draw's best alone does worse on the other
    threshold, summary = best_threshold(found, [first, second], 4.0)
    assert threshold == 0.6
    assert summary["f1"] == pytest.approx(0.8) and summary["fp_per_subject"] == pytest.approx(0.5)
    assert best_threshold(found, [first, first], 4.0) == best_threshold(found, first, 4.0)


def test_the_trained_second_look_keeps_the_cmb_and_drops_the_vein(tmp_path) -> None:
    settings = SecondLookConfig(log_candidates=60, classifiers=("boosting", "logistic"), cv_splits=3)
    second, point, report = fit_second_look([_case(s) for s in range(10, 18)], [_case(s) for s in range(8)],
                                            settings, OperatingPoint(0.5), 4.0, seed=0)
    assert second is not None and point.second_look is not None and second.patch_model is not None
    assert report["recall_ceiling"] == 1.0 and report["chosen"] in ("boosting", "logistic")
    image, brain, reference = _scan(np.random.default_rng(99), [(12, 12, 8), (28, 14, 15)], [(30, 30), (14, 30)])
    found = find_detections(np.zeros(SHAPE, np.float32), point, brain, image, VOXEL_MM, second)
    assert found.lesions.n == 2
    assert sorted(np.rint(found.lesions.centroids[:, 0]).tolist()) == [12, 28]
    assert found.n_candidates > found.lesions.n
    assert reference[tuple(np.rint(found.lesions.centroids).astype(int).T)].all()
    # scored once, kept at several thresholds: what find_detections gives at each
    candidates, scores = score_candidates(second, np.zeros(SHAPE, np.float32), image, brain, VOXEL_MM)
    for threshold in (point.second_look, 0.05, 0.9):
        rule = OperatingPoint(point.threshold, point.min_voxels, second_look=threshold)
        kept = keep_candidates(candidates, scores, np.zeros(SHAPE, np.float32), rule, second.merge_distance)
        direct = find_detections(np.zeros(SHAPE, np.float32), rule, brain, image, VOXEL_MM, second)
        assert np.array_equal(kept.lesions.labels, direct.lesions.labels)
        assert np.array_equal(kept.scores, direct.scores)
    saved = save_second_look(second, tmp_path / "second_look.joblib")
    again = find_detections(np.zeros(SHAPE, np.float32), point, brain, image, VOXEL_MM, load_second_look(saved))
    assert np.array_equal(again.scores, found.scores) and load_second_look(saved).patch_model is not None
    # monitoring's threshold is recorded beside it, the second look unchanged; retraining drops the record
    assert load_second_look(saved).monitoring_threshold is None
    record_monitoring_threshold(saved, 0.125, {"chosen_on": {"n_pairs": 3}})
    assert load_second_look(saved).monitoring_threshold == 0.125
    with pytest.raises(OutputError, match="already holds a monitoring threshold"):
        record_monitoring_threshold(saved, 0.2, {})
    record_monitoring_threshold(saved, 0.2, {}, overwrite=True)
    assert load_second_look(saved).monitoring_threshold == 0.2
    save_second_look(second, saved)
    assert load_second_look(saved).monitoring_threshold is None
    saved.write_bytes(saved.read_bytes() + b"x")
    with pytest.raises(InputError, match="does not match"):
        load_second_look(saved)


def test_the_screen_drops_plain_blobs_before_the_second_look_looks_at_them(tmp_path) -> None:
    settings = SecondLookConfig(log_candidates=60, classifiers=("logistic",), cv_splits=3, screen_probability=0.01)
    second, point, report = fit_second_look([_case(s) for s in range(10, 16)], [_case(s) for s in range(6)],
                                            settings, OperatingPoint(0.5), 4.0, seed=0)
    assert second is not None and second.settings.screen_probability == 0.01
    assert report["n_looked_at"] < report["n_candidates"]
    assert report["screened_recall_ceiling"] == report["recall_ceiling"] == 1.0
    image, brain, _ = _scan(np.random.default_rng(99), [(12, 12, 8), (28, 14, 15)], [(30, 30), (14, 30)])
    probability = np.zeros(SHAPE, np.float32)
    probability[27:30, 13:16, 14:17] = 0.5  # two network candidates: one on a CMB,
    probability[32:35, 5:8, 3:6] = 0.5  # one on plain tissue, which the boosting alone would drop
    candidates, scores = score_candidates(second, probability, image, brain, VOXEL_MM)
    features = candidate_features(candidates, probability, brain, VOXEL_MM)
    boosted = boosted_scores(second.image_estimator, features)
    looked = screened(features, boosted, 0.01)
    assert np.array_equal(looked, candidates.from_network | (boosted >= 0.01))
    assert candidates.from_network.sum() == 2 and looked[candidates.from_network].all()
    assert (boosted[candidates.from_network] < 0.01).any()  # the network's candidates pass whatever their boosting
    assert 2 <= looked.sum() < candidates.n and (scores[looked] > 0).all() and (scores[~looked] == 0).all()
    assert np.array_equal(second.image_score(features) > 0, looked)
    found = find_detections(probability, point, brain, image, VOXEL_MM, second)
    assert found.n_candidates == looked.sum()
    # without the screen every candidate is looked at, and those that pass it score as they do with it
    every = dataclasses.replace(second, settings=dataclasses.replace(settings, screen_probability=0.0))
    _, unscreened = score_candidates(every, probability, image, brain, VOXEL_MM)
    assert (unscreened > 0).all() and np.allclose(unscreened[looked], scores[looked])
    assert "a screen" in describe_rule(point, second) and "screen" not in describe_rule(point, every)  # in words
    # a second look written before the screen had one looks at every candidate, as it was trained to
    saved = save_second_look(second, tmp_path / "second_look.joblib")
    sidecar = json.loads(saved.with_suffix(".json").read_text())
    del sidecar["settings"]["screen_probability"]
    saved.with_suffix(".json").write_text(json.dumps(sidecar))
    assert load_second_look(saved).settings.screen_probability == 0.0


def test_the_recall_ceiling_counts_the_references_that_a_kept_candidate_reaches() -> None:
    centres = np.array([[10.0, 10, 10], [11, 10, 10], [30, 30, 30]])
    found = CandidateSet(np.zeros((3, 3)), np.array([1, -1, 0]), np.zeros(3, int), [centres],
                         [np.array([[10.0, 10, 10], [20, 20, 20]])], 0.5)
    assert recall_ceiling(found, np.ones(3, bool), 4.0) == found.recall_ceiling == 0.5
    assert recall_ceiling(found, np.array([False, True, True]), 4.0) == 0.5  # the CMB's neighbour reaches it
    assert recall_ceiling(found, np.array([False, False, True]), 4.0) == 0.0


def test_the_patch_cnn_is_seeded_leaves_torch_s_random_state_and_can_be_left_out() -> None:
    settings = SecondLookConfig(log_candidates=60)
    blobs = collect_candidates([_case(s) for s in range(6)], settings, 4.0)
    assert blobs.features.shape[1] == N_COLUMNS
    state = torch.random.get_rng_state()
    first, second = fit_patch_model(blobs, seed=3), fit_patch_model(blobs, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                     fit_patch_model(blobs, seed=4).state_dict().values()))
    # the patch is the scan's ratio around each centre: a CMB's centre voxel is dark in it, minus 1
    patches = candidate_patches(blobs.features)
    assert patches.shape == (len(blobs.labels), 2) + PATCH_SHAPE
    assert float(patches[blobs.labels == 1, 0, 4, 4, 2].max()) < -0.3
    # without a patch CNN the image model is the gradient boosting alone
    gb = fit_image_model(blobs, seed=0)
    alone = image_scores(gb, None, blobs.features)
    assert np.array_equal(alone, gb.predict_proba(blobs.features[:, 3:len(FEATURES)])[:, 1])
    assert not np.array_equal(image_scores(gb, first, blobs.features), alone)
    off, _, _ = fit_second_look([_case(s) for s in range(10, 14)], [_case(s) for s in range(4)],
                                SecondLookConfig(log_candidates=60, cv_splits=2, patch_model=False),
                                OperatingPoint(0.5), 4.0, seed=0)
    assert off is not None and off.patch_model is None


def test_runs_on_the_same_training_subjects_share_the_image_model(tmp_path, monkeypatch) -> None:
    settings = SecondLookConfig(log_candidates=60, cv_splits=2)
    validation, training = [_case(s) for s in range(10, 14)], [_case(s) for s in range(4)]
    first, _, report = fit_second_look(validation, training, settings, OperatingPoint(0.5), 4.0, seed=0,
                                       cache=tmp_path)

    def fitted_again(*args, **kwargs):
        raise AssertionError("the image model was fitted again")

    monkeypatch.setattr("cmbstudy.training.second_look.fit_patch_model", fitted_again)
    again, _, report_again = fit_second_look(validation, training, settings, OperatingPoint(0.5), 4.0, seed=0,
                                             cache=tmp_path)
    assert report_again == report and report["n_training_blobs"] > 0
    found = collect_candidates(validation, settings, 4.0)
    assert np.array_equal(again.score(found.features), first.score(found.features))
    # another training subject, or another seed, is another image model
    with pytest.raises(AssertionError, match="fitted again"):
        fit_second_look(validation, training[:3] + [_case(5)], settings, OperatingPoint(0.5), 4.0, seed=0,
                        cache=tmp_path)
    with pytest.raises(AssertionError, match="fitted again"):
        fit_second_look(validation, training, settings, OperatingPoint(0.5), 4.0, seed=1, cache=tmp_path)


def test_the_phase_beside_a_scan_tells_a_cmb_s_shift_and_is_missing_without_one() -> None:
    image, brain, _ = _scan(np.random.default_rng(2), [(12, 12, 8), (28, 28, 14)], [])
    phase = np.random.default_rng(3).normal(0.0, 0.02, SHAPE).astype(np.float32)
    phase[11:14, 11:14, 7:10] -= 0.6  # a paramagnetic focus shifts the phase; the other CMB-like blob does not
    candidates = find_candidates(np.zeros(SHAPE, np.float32), image, brain, VOXEL_MM, 0.1, 50)
    column = {name: i for i, name in enumerate(FEATURES)}
    shifted = int(np.argmin(np.linalg.norm(candidates.centres - [12, 12, 8], axis=1)))
    still = int(np.argmin(np.linalg.norm(candidates.centres - [28, 28, 14], axis=1)))
    features = candidate_features(candidates, np.zeros(SHAPE, np.float32), brain, VOXEL_MM, phase)
    assert features[shifted, column["phase_contrast"]] < -0.4 < features[still, column["phase_contrast"]]
    assert features[shifted, column["phase_deviation"]] > 0.4 > features[still, column["phase_deviation"]]
    without = candidate_features(candidates, np.zeros(SHAPE, np.float32), brain, VOXEL_MM)
    assert np.isnan(without[:, [column["phase_contrast"], column["phase_deviation"]]]).all()
    named = len(FEATURES)
    assert np.array_equal(np.delete(without[:, :named], [column["phase_contrast"], column["phase_deviation"]], axis=1),
                          np.delete(features[:, :named], [column["phase_contrast"], column["phase_deviation"]], axis=1))
    # the patch CNN's input: the same scan patch, and the phase patch (zero without a phase image)
    scan_patch, phase_patch = candidate_patches(features)[:, 0], candidate_patches(features)[:, 1]
    assert torch.equal(candidate_patches(without)[:, 0], scan_patch)
    assert not candidate_patches(without)[:, 1].any()
    assert float(phase_patch[shifted, 4, 4, 2]) == pytest.approx(float(phase[12, 12, 8]))
    with pytest.raises(InputError, match="same voxel grid"):
        candidate_features(candidates, np.zeros(SHAPE, np.float32), brain, VOXEL_MM, phase[:, :, :-1])


def test_the_phase_image_is_found_beside_the_magnitude_and_must_share_its_grid(tmp_path) -> None:
    import nibabel as nib

    from cmbstudy.data.io import load_phase, load_scan, phase_beside

    anat = tmp_path / "sub-1" / "anat"
    anat.mkdir(parents=True)
    magnitude = anat / "sub-1_T2starw.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)), magnitude)
    assert phase_beside(magnitude) is None and load_phase(magnitude) is None
    phase = anat / "sub-1_part-phase_T2starw.nii.gz"
    nib.save(nib.Nifti1Image(np.full(SHAPE, 0.5, np.float32), np.eye(4)), phase)
    assert phase_beside(magnitude) == phase and phase_beside(phase) is None
    assert np.allclose(load_phase(magnitude, load_scan(magnitude)[0]), 0.5)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.diag([2.0, 1, 1, 1])), phase)
    with pytest.raises(InputError, match="different affine"):
        load_phase(magnitude, load_scan(magnitude)[0])
