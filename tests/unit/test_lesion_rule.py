"""One lesion rule: the same probability map gives the same lesions in validation, calibration and evaluation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import DarkOracle, FakeVolume

from cmbstudy.config import EvalConfig, load_profile
from cmbstudy.errors import ConfigError
from cmbstudy.evaluation.evaluate import evaluate_volume
from cmbstudy.evaluation.operating_point import OperatingPoint, apply_operating_point, choose_operating_point
from cmbstudy.inference.pipeline import detection_map, map_rule
from cmbstudy.inference.predict import PredictionSummary
from cmbstudy.inference.second_look import find_detections
from cmbstudy.training.loop import validate


def test_a_one_voxel_lesion_is_kept_at_minimum_size_one() -> None:
    probability = np.zeros((31, 32, 33), np.float32)  # uneven, so an axis mix-up fails
    probability[10, 20, 5] = 0.9
    assert apply_operating_point(probability, OperatingPoint(0.5, 1)).n == 1
    assert apply_operating_point(probability, OperatingPoint(0.5, 2)).n == 0
    found = find_detections(probability, OperatingPoint(0.5, 1))  # the one function, one stage
    assert found.lesions.n == 1 and found.lesions.centroids.tolist() == [[10.0, 20.0, 5.0]]


def test_the_brain_rule_drops_a_component_outside_the_brain() -> None:
    probability = np.zeros((31, 32, 33), np.float32)
    probability[10, 20, 5:7] = 0.9  # inside
    probability[2, 2, 30] = 0.8  # outside
    brain = np.zeros(probability.shape, bool)
    brain[5:25, 5:28, 2:28] = True
    assert apply_operating_point(probability, OperatingPoint(0.5), brain).n == 1
    assert apply_operating_point(probability, OperatingPoint(0.5)).n == 2  # no mask: no brain rule
    point = OperatingPoint(0.5)
    kept = detection_map(probability, brain, point, find_detections(probability, point, brain))
    assert kept[2, 2, 30] == 0 and kept[10, 20, 5] == pytest.approx(0.9)  # the written map drops it too


def test_the_rule_carries_its_connectivity_and_second_look() -> None:
    point = OperatingPoint.from_config(EvalConfig(threshold=0.4, min_voxels=2, connectivity=6))
    assert (point.threshold, point.min_voxels, point.connectivity, point.second_look) == (0.4, 2, 6, None)
    two = dataclasses.replace(point, second_look=0.3)
    assert OperatingPoint.from_json(two.to_json()) == two
    assert two.single_stage == point
    assert map_rule(point) == (0.4, 2) and map_rule(two) == (0.3, 1)
    diagonal = np.zeros((5, 6, 7), np.float32)
    diagonal[1, 1, 1] = diagonal[2, 2, 1] = 0.9  # touching by an edge: one lesion at 26, two at 6
    assert apply_operating_point(diagonal, OperatingPoint(0.5, connectivity=26)).n == 1
    assert apply_operating_point(diagonal, point).n == 0  # 6-connected: two single voxels, under 2 voxels
    with pytest.raises(ConfigError, match="connectivity"):
        OperatingPoint(0.5, connectivity=8)
    with pytest.raises(ConfigError, match="second look"):
        find_detections(diagonal, two)


def test_validation_calibration_and_evaluation_score_one_volume_the_same() -> None:
    # (Z, S, S) preprocessed grid; the "input grid" is its (S, S, Z) transpose (FakeVolume.restore)
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.3, size=(8, 24, 24)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    image[3, 6:8, 6:8] = -4.0  # a CMB
    mask[3, 6:8, 6:8] = 1
    image[5, 15, 15] = -4.0  # a one-voxel false positive inside the brain
    image[1, 1:3, 20:22] = -4.0  # a false positive outside the brain: dropped by the brain rule
    mask[6, 18:20, 5:7] = 1  # a missed CMB
    brain = np.ones(image.shape, bool)
    brain[:, :4, 18:] = False
    volume = FakeVolume("001", image, brain, mask)
    reference = volume.restore(mask, 0)
    profile = load_profile("smoke")
    profile = dataclasses.replace(profile, evaluation=dataclasses.replace(profile.evaluation, threshold=0.5,
                                                                          min_voxels=1))
    scores = validate(DarkOracle(), [volume], [reference], profile, torch.device("cpu"))
    probability = volume.restore(np.where(image < -2.0, 0.99995, 4.5e-5).astype(np.float32), 1)
    brain_input = volume.input_brain()
    calibrated = choose_operating_point([probability], [reference], [brain_input], thresholds=(0.5,), min_sizes=(1,))
    point = OperatingPoint.from_config(profile.evaluation)
    written = detection_map(probability, brain_input, point, find_detections(probability, point, brain_input))
    evaluated = evaluate_volume(written, reference, np.eye(4), threshold=map_rule(point)[0],
                                min_voxels=map_rule(point)[1]).row
    assert (evaluated["n_tp"], evaluated["n_fp"], evaluated["n_fn"]) == (1, 1, 1)
    for metric in ("precision", "recall", "f1"):
        assert scores[metric] == pytest.approx(evaluated[metric]) == pytest.approx(calibrated.validation[metric])
    assert scores["fp_per_subject"] == calibrated.validation["fp_per_subject"] == 1.0


def test_a_prediction_summary_states_the_rule_its_lesions_were_found_by() -> None:
    one = PredictionSummary(Path("p"), "m", 2, 3, 0.85, 5, 0.1, "cpu")
    assert "(threshold 0.85, at least 5 voxels, one stage)" in str(one)
    two = dataclasses.replace(one, second_look=0.3)
    assert "(candidates of any size, second look at 0.3)" in str(two) and "5 voxels" not in str(two)
