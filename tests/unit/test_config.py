"""Profiles: loading, strictness about keys and types, --set overrides, YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cmbstudy.config import (
    PROFILE_NAMES,
    PreprocessConfig,
    Profile,
    dataclass_from_mapping,
    load_profile,
    profile_from_mapping,
    profile_to_dict,
)
from cmbstudy.errors import ConfigError


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert isinstance(profile, Profile)
    assert profile.name == name
    assert profile.preprocess.size > 0
    assert profile.preprocess.brain_extraction in ("mask", "nonzero", "threshold", "deepbet")


def test_profile_values_come_from_the_yaml() -> None:
    smoke, paper = load_profile("smoke"), load_profile("paper")
    assert smoke.preprocess.size == 64
    assert paper.preprocess.size == 512  # the paper's in-plane size
    assert paper.train.epochs == 1000
    assert isinstance(smoke.model.widths, tuple)


def test_unknown_profile_name() -> None:
    with pytest.raises(ConfigError, match="unknown profile 'fast': use one of smoke, quick, gpu, paper"):
        load_profile("fast")


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"profile file .*nope\.yaml does not exist"):
        load_profile(tmp_path / "nope.yaml")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("preprocess:\n  sise: 64\n")
    with pytest.raises(ConfigError, match=r"preprocess: unknown key\(s\) \['sise'\]"):
        load_profile(path)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("preprocessing:\n  size: 64\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['preprocessing'\]"):
        load_profile(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preprocess:\n  size: big\n", r"preprocess\.size: expected an integer, got 'big'"),
        ("preprocess:\n  size: 64.5\n", r"preprocess\.size: expected an integer, got 64\.5"),
        ("preprocess:\n  n4: 1\n", r"preprocess\.n4: expected true or false, got 1"),
        ("train:\n  lr: fast\n", r"train\.lr: expected a number, got 'fast'"),
        ("model:\n  widths: 16\n", r"model\.widths: expected a list, got 16"),
        ("preprocess: 3\n", r"preprocess: expected a mapping, got 3"),
        ("seed: true\n", r"seed: expected an integer, got True"),
    ],
)
def test_wrong_types_rejected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_profile(path)


def test_profile_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_profile(path)


def test_set_overrides_parsed_as_yaml() -> None:
    profile = load_profile(
        "smoke",
        ["train.epochs=3", "preprocess.n4=false", "train.lr=3e-4", "seed=7",
         "model.widths=[4, 8, 16, 32]", "preprocess.brain_extraction=threshold"],
    )
    assert profile.train.epochs == 3
    assert profile.preprocess.n4 is False
    assert profile.train.lr == pytest.approx(3e-4)
    assert profile.seed == 7
    assert profile.model.widths == (4, 8, 16, 32)
    assert profile.preprocess.brain_extraction == "threshold"
    assert load_profile("smoke").train.epochs == 2  # the profile itself is unchanged


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs", "expected section.key=value"),
        ("a.b.c=1", "expected section.key=value"),
        ("train.epoch=3", r"unknown key\(s\) \['epoch'\]"),
        ("train.epochs=many", r"train\.epochs: expected an integer, got 'many'"),
        ("seed.x=1", "'seed' is not a section"),
    ],
)
def test_bad_set_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_profile("smoke", [override])


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profile_to_dict_round_trips_through_yaml(tmp_path: Path, name: str) -> None:
    profile = load_profile(name, ["train.epochs=5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(profile_to_dict(profile)))
    again = load_profile(path)
    assert again.name == str(path)
    assert again == Profile(**{**profile.__dict__, "name": str(path)})


def test_dataclass_from_mapping_defaults_and_tuples() -> None:
    cfg = dataclass_from_mapping(PreprocessConfig, {"size": 32, "n4_iterations": [5, 5]})
    assert cfg.size == 32
    assert cfg.n4_iterations == (5, 5)
    assert cfg.n4 is True and cfg.n4_shrink == 4


def test_profile_from_mapping_round_trip_and_errors() -> None:
    profile = load_profile("smoke")
    assert profile_from_mapping(profile_to_dict(profile), "run/profile.yaml") == profile
    with pytest.raises(ConfigError, match=r"run/profile\.yaml: expected a mapping of profile sections, got list"):
        profile_from_mapping([1, 2], "run/profile.yaml")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\]"):
        profile_from_mapping({"name": "x", "train": {"epoch": 3}}, "run/profile.yaml")
    with pytest.raises(ConfigError, match=r"run/profile\.yaml: .*name"):
        profile_from_mapping({"seed": 1}, "run/profile.yaml")
