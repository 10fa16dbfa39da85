"""Frozen configuration dataclasses and the YAML profiles that fill them.

A profile (``smoke``, ``quick``, ``gpu``, ``paper``) is a YAML file in
``cmbstudy/profiles/`` with one mapping per section below. Unknown keys are
rejected with an error naming them, so a typo never silently falls back to a
default. ``--set section.key=value`` overrides single fields from the command
line; the resolved profile is written beside every result (:func:`profile_to_dict`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import yaml

from .errors import ConfigError

__all__ = [
    "PROFILE_NAMES",
    "SynthConfig",
    "PreprocessConfig",
    "ModelConfig",
    "TrainConfig",
    "EvalConfig",
    "SecondLookConfig",
    "StudyConfig",
    "DEFAULT_VARIANTS",
    "Profile",
    "resolve_variant",
    "load_profile",
    "apply_overrides",
    "profile_to_dict",
    "profile_from_mapping",
    "dataclass_from_mapping",
]

PROFILE_NAMES: tuple[str, ...] = ("smoke", "quick", "gpu", "paper")


@dataclass(frozen=True)
class SynthConfig:
    """How the synthetic cohort is generated (see :mod:`cmbstudy.synth`)."""

    n_subjects: int = 60  # subjects in the cohort
    matrix: tuple[int, int] = (128, 128)  # in-plane matrix of the simulated scan (voxels)
    voxel_mm: float = 1.5  # in-plane voxel size before the site's factor (mm)
    slab_mm: float = 128.0  # superior-inferior coverage of every scan, centred at MNI z = 14 (mm)
    supersample: int = 3  # fine-lattice samples per voxel in-plane near CMBs/calcifications (blooming)
    swi_fraction: float = 0.3  # share of subjects scanned with SWI rather than T2*-GRE
    template_resolution: int = 2  # ICBM152 template resolution used for the anatomy (1 or 2 mm)
    mimic_scale: float = 1.0  # multiplies the numbers of cortical/medullary veins and calcifications
    snr_scale: float = 1.0  # multiplies every site's signal-to-noise ratio
    cmb_chi_scale: float = 1.0  # multiplies every CMB's susceptibility (lower = fainter CMBs)
    n_test_subjects: int = 72  # subjects of the separate test cohort (the paper's test set: 72)
    test_seed: int = 1  # master seed of the test cohort (the training cohort uses the profile's seed)
    n_follow_up_pairs: int = 24  # baseline/follow-up pairs of the monitoring chapter, from test_seed + 1
    n_development_pairs: int = 12  # pairs on which monitoring's second-look threshold is chosen, from test_seed + 2


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing of every volume before 2.5D slicing (see :mod:`cmbstudy.preprocessing`)."""

    size: int = 128  # in-plane size after tight crop and resample (512 in the paper)
    n4: bool = True  # SimpleITK N4 bias-field correction
    n4_shrink: int = 4  # N4 shrink factor (full resolution takes minutes per volume)
    n4_iterations: tuple[int, ...] = (20, 20, 10)  # N4 iterations per fitting level, at the shrunk resolution
    brain_extraction: str = "mask"  # "mask": dataset's brain mask; "nonzero": image already skull-stripped; "threshold": Otsu; "deepbet"


@dataclass(frozen=True)
class ModelConfig:
    """Network architecture (see :mod:`cmbstudy.models`)."""

    name: str = "rlk_unet_cbam"  # registry name
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels of the 4 encoder stages (the bottleneck has twice the last)
    kernel_size: int = 13  # large kernel of the RLK blocks
    blocks_per_stage: int = 2  # RLK blocks per encoder / decoder stage
    cbam_skips: int = -1  # skips carrying CBAM, from the deepest: 0 none, 1 the 1/8 skip, 2 also 1/4, ...; -1 all
    attention_gate: bool = True  # Oktay 2018 attention gate on each skip, in parallel with CBAM
    skip_fusion: str = "mean"  # how a skip's CBAM and gate outputs are combined: "mean" or "sum"
    deep_supervision: bool = True  # auxiliary outputs of the decoder stages at 1/2, 1/4 and 1/8
    drop_path: float = 0.1  # stochastic-depth rate of the encoder, rising with depth to this at the bottleneck
    cbam_reduction: int = 16  # CBAM channel-MLP reduction ratio (Woo 2018: 16)
    cbam_min_hidden: int = 8  # floor on the CBAM channel-MLP width (16 channels / 16 would leave 1 unit)
    small_kernel: int = 5  # parallel small depthwise kernel of the RLK block (0: none; Son 2023: 5)
    mlp_ratio: float = 4.0  # RLK feed-forward width as a multiple of the channels (0: none)
    norm_groups: int = 8  # GroupNorm groups (largest divisor of the channels up to this)
    spacing_mm: float = 0.0  # volumetric models: isotropic resampling of the preprocessed volume (mm; 0 keeps its grid)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and data sampling (see :mod:`cmbstudy.training`)."""

    epochs: int = 40  # passes over the sampled training slices
    batch_size: int = 2  # slices per step (paper: 2)
    lr: float = 1e-4  # peak learning rate of AdamW (paper: 1e-4)
    warmup_epochs: int = 10  # linear warm-up from warmup_start_lr to lr (paper: 10)
    warmup_start_lr: float = 1e-7  # learning rate at epoch 0 (paper: 1e-7)
    restart_epochs: int = 50  # first period of cosine annealing with warm restarts
    weight_decay: float = 1e-2  # AdamW weight decay
    n_folds: int = 5  # cross-validation folds (paper: 5)
    lesion_slice_fraction: float = 0.5  # share of sampled slices that contain a lesion
    slices_per_epoch: int = 200  # slices drawn per epoch (0: the number of brain slices, still at lesion_slice_fraction)
    deep_supervision_weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)  # final output first
    num_workers: int = 0  # DataLoader workers (batches are pinned in memory on CUDA)
    compile: bool = False  # torch.compile the training step's network (CUDA only; eager on the CPU)
    cudnn_benchmark: bool = True  # let cuDNN time its convolution algorithms on the first batches (CUDA)
    restart_mult: int = 1  # factor by which each cosine period grows after a restart (T_mult)
    min_lr: float = 0.0  # learning rate at the end of each cosine period (eta_min)
    crop_size: int = 0  # square training crop around lesions (voxels; 0 or >= preprocess.size: full slice)
    rotate_degrees: float = 15.0  # random in-plane rotation range, +- degrees (paper: 15)
    augment_prob: float = 0.5  # probability of the rotation and of the Bezier intensity transform
    val_every: int = 1  # validate every k epochs and after the last (0: never; checkpoint_best is the last epoch)
    val_batch_size: int = 8  # slices per forward pass in validation and inference
    patch_size: tuple[int, int, int] = (16, 64, 64)  # volumetric models: training patch (slices, rows, columns)
    hard_negative_fraction: float = 0.0  # share of samples centred on the network's own false positives
    edge_fraction: float = 0.0  # share of samples centred on the brain's edge
    mine_after: int = 0  # mine false positives after this many epochs, and every as many after (0: never)
    mine_subjects: int = 16  # training subjects predicted per mining (0: all)
    brain_jitter: int = 0  # the brain mask of a training sample is eroded or dilated by up to this many voxels
    blob_weight: float = 0.0  # weight of the lesion-wise Dice term (every lesion counts the same; 0: none)
    seed: int | None = None  # training seed (initialisation, sampling); None: the profile's seed, which also makes the cohort and folds


@dataclass(frozen=True)
class EvalConfig:
    """Detection and matching rules (see :mod:`cmbstudy.evaluation`)."""

    threshold: float = 0.5  # probability threshold before connected components, until a run is calibrated
    min_voxels: int = 1  # smallest component kept (voxels), until a run is calibrated
    match_distance_voxels: float = 4.0  # paper rule: centroid distance for a true positive
    valdo_distance_mm: float = 5.0  # VALDO rule: centre-of-mass distance in mm
    connectivity: int = 26  # 3D connectivity of components: 6, 18 or 26
    n_bootstrap: int = 1000  # bootstrap resamples for confidence intervals


@dataclass(frozen=True)
class SecondLookConfig:
    """The second look at each candidate (see :mod:`cmbstudy.inference.second_look`)."""

    enabled: bool = True  # train a second look after calibration; predict and detect then use it
    candidate_threshold: float = 0.1  # the network's candidates: components of its map at this probability
    log_candidates: int = 400  # most blob-detector candidates per volume (0: the network's only)
    # blobs that the image features' gradient boosting scores below this are dropped before the patch CNN and the
    # combiner look at them (a cascade: a few dozen of a volume's hundreds are looked at twice); 0: none dropped
    screen_probability: float = 0.001
    classifiers: tuple[str, ...] = ("boosting", "logistic")  # tried on validation; the best is kept
    cv_splits: int = 4  # subject folds of the validation subjects for out-of-fold scores
    cv_repeats: int = 5  # draws of those folds; a threshold's F1 is pooled over every draw
    patch_model: bool = True  # the image model adds a small 3D CNN on each candidate's patch (models.patch_net)


@dataclass(frozen=True)
class StudyConfig:
    """Which training runs the study makes (see :mod:`cmbstudy.study`); names are ``variants``."""

    main: str = "rlk_unet_cbam"  # the paper's network: all cv_folds, burden, Grad-CAM
    cv_folds: tuple[int, ...] = (0, 1, 2, 3, 4)  # folds of the main variant (Table 3)
    ablation: tuple[str, ...] = ("without_cbam", "cbam_skip1", "cbam_skip2")  # CBAM arms (Tables 7-8)
    baselines: tuple[str, ...] = ("dou2016", "fan2022", "wei2022", "tsuchida2024", "nnunet")  # Table 2
    comparison_folds: tuple[int, ...] = (0,)  # folds of the ablation and baseline variants
    cross_modality: bool = True  # train on one modality, test on the other (Table 5)
    test_fraction: float = 0.2  # a real dataset: share of subjects held out as its test set (seeded, saved)


# Named profile overrides (``section.key`` -> value), one per network of the study. A profile's
# own ``variants:`` entries are added to these (and replace one of the same name).
DEFAULT_VARIANTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "rlk_unet_cbam": {},  # RLK-UNet, CBAM on every skip (the paper; Table 8 "CBAM-AllSkip")
    "without_cbam": {"model.cbam_skips": 0},  # Table 7 and Table 8 "Without CBAM"
    "cbam_skip1": {"model.cbam_skips": 1},  # Table 8 "CBAM-Skip1": the deepest skip only
    "cbam_skip2": {"model.cbam_skips": 2},  # Table 8 "CBAM-Skip2": the two deepest skips
    "dou2016": {"model.name": "dou2016_cnn3d"},  # two-stage 3D CNN
    "fan2022": {"model.name": "fan2022_unet"},  # 2D U-Net on adjacent slices
    "wei2022": {"model.name": "wei2022_mmoc"},  # MMOC-Net: propose, then refine
    "tsuchida2024": {"model.name": "tsuchida2024_shiva", "model.spacing_mm": 1.0},  # SHIVA-CMB 3D U-Net
    "nnunet": {"model.name": "nnunet_dynunet"},  # MONAI DynUNet, nnU-Net style
})


@dataclass(frozen=True)
class Profile:
    """A named, resolved set of all sections."""

    name: str  # profile name or path it was read from
    seed: int = 0  # master seed: cohort, splits, initialisation, sampling
    synth: SynthConfig = field(default_factory=SynthConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    second_look: SecondLookConfig = field(default_factory=SecondLookConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_VARIANTS.items()})


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML value to ``annotation`` (dataclass, tuple, scalar) or raise."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dataclass_from_mapping(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def dataclass_from_mapping(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from ``values``, rejecting unknown keys.

    Raises:
        ConfigError: a key is not a field of ``cls`` or a value has the wrong type.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(names)}"
        )
    kwargs = {
        key: _coerce(value, hints[key], f"{where}.{key}" if where else key)
        for key, value in values.items()
    }
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) not in (1, 2) or not all(parts):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.epochs=3")
    return parts, yaml.safe_load(raw)


def _read_profile_yaml(name: str | Path) -> tuple[str, dict[str, Any]]:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"profile file {path} does not exist")
        text, label = path.read_text(), str(path)
    elif str(name) in PROFILE_NAMES:
        text = resources.files("cmbstudy").joinpath("profiles", f"{name}.yaml").read_text()
        label = str(name)
    else:
        raise ConfigError(
            f"unknown profile {str(name)!r}: use one of {', '.join(PROFILE_NAMES)} "
            "or a path to a .yaml profile"
        )
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile {label}: expected a mapping of sections")
    return label, data


def load_profile(name: str | Path = "quick", overrides: Sequence[str] = ()) -> Profile:
    """Load a profile by name (``smoke``/``quick``/``paper``) or YAML path.

    Args:
        name: profile name or path to a YAML file with the same sections.
        overrides: ``section.key=value`` strings (values parsed as YAML), applied last.

    Raises:
        ConfigError: unknown profile, unknown key, or a value of the wrong type.
    """
    label, data = _read_profile_yaml(name)
    data = _with_overrides(data, overrides)
    data.pop("name", None)
    data["variants"] = _merge_variants(data.get("variants"), label)
    return dataclass_from_mapping(Profile, {"name": label, **data}, where=f"profile {label}")


def _with_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of profile ``data`` with ``section.key=value`` overrides set."""
    data = {key: (dict(value) if isinstance(value, dict) else value) for key, value in data.items()}
    for text in overrides:
        parts, value = _parse_override(text)
        if len(parts) == 1:
            data[parts[0]] = value
        else:
            section = data.setdefault(parts[0], {})
            if not isinstance(section, dict):
                raise ConfigError(f"--set {text!r}: {parts[0]!r} is not a section")
            section[parts[1]] = value
    return data


def apply_overrides(profile: Profile, overrides: Sequence[str]) -> Profile:
    """``profile`` (e.g. the one a model was trained with) with ``section.key=value`` overrides applied.

    Raises:
        ConfigError: a malformed override, an unknown key, or a value of the wrong type.
    """
    if not overrides:
        return profile
    return profile_from_mapping(_with_overrides(profile_to_dict(profile), overrides), f"profile {profile.name}")


def _merge_variants(extra: Any, label: str) -> dict[str, dict[str, Any]]:
    variants = {name: dict(values) for name, values in DEFAULT_VARIANTS.items()}
    if extra is None:
        return variants
    if not isinstance(extra, Mapping) or not all(isinstance(v, Mapping) for v in extra.values()):
        raise ConfigError(f"profile {label}: variants must map a name to section.key: value overrides")
    variants.update({str(name): dict(values) for name, values in extra.items()})
    return variants


def resolve_variant(profile: Profile, variant: str) -> Profile:
    """``profile`` with the overrides of ``profile.variants[variant]`` applied.

    Raises:
        ConfigError: unknown variant (the message lists the known ones) or a bad override.
    """
    if variant not in profile.variants:
        raise ConfigError(
            f"unknown variant {variant!r}; variants of profile {profile.name} are {sorted(profile.variants)}"
        )
    data = profile_to_dict(profile)
    for key, value in profile.variants[variant].items():
        parts = str(key).split(".")
        if len(parts) != 2 or not isinstance(data.get(parts[0]), dict):
            raise ConfigError(f"variant {variant!r}: {key!r} is not section.key")
        data[parts[0]][parts[1]] = value
    return profile_from_mapping(data, f"profile {profile.name}, variant {variant}")


def profile_from_mapping(data: Any, where: str) -> Profile:
    """A :class:`Profile` from resolved data stored beside a result (``profile.yaml``, a checkpoint).

    Raises:
        ConfigError: ``data`` is not a mapping of sections, or holds unknown keys or wrong types.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of profile sections, got {type(data).__name__}")
    try:
        return dataclass_from_mapping(Profile, data, where=where)
    except TypeError as exc:  # a missing required field, e.g. no profile name
        raise ConfigError(f"{where}: {exc}") from exc


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """The resolved profile as plain YAML-serialisable data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(profile))
