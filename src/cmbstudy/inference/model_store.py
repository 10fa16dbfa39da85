"""Trained models as files: a run folder, a checkpoint, or the packaged model.

:func:`load_detection_model` resolves what ``cmbstudy detect --model`` names
into a network with the profile it was trained with (preprocessing, network,
threshold) and its provenance (training data, fold, validation metrics).
:func:`export_model` writes a run's best checkpoint as a self-describing
``<name>.pt`` (weights + profile) with a ``<name>.json`` provenance file: the
form of the packaged model in ``cmbstudy/weights/``, found through
:mod:`importlib.resources`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .. import __version__
from ..config import Profile, apply_overrides, profile_from_mapping, profile_to_dict
from ..data.datasets import describe_dataset
from ..data.io import read_json, to_json_safe, write_atomically, write_json
from ..data.run_folder import (
    CHECKPOINT_BEST,
    DATASET,
    PROFILE,
    RESULT,
    load_run_operating_point,
    load_run_profile,
    load_run_split,
)
from ..errors import ConfigError, InputError
from ..evaluation.operating_point import OperatingPoint
from ..models import model_from_config
from .second_look import SecondLook, load_second_look, save_second_look

__all__ = [
    "PACKAGED_MODEL",
    "PACKAGED_NAMES",
    "NO_MODEL_MESSAGE",
    "DetectionModel",
    "packaged_model_path",
    "load_detection_model",
    "export_model",
    "pack_weights",
    "unpack_weights",
    "WEIGHTS_STORAGE",
    "SECOND_LOOK",
    "second_look_path",
]

PACKAGED_MODEL = "rlk_unet_cbam_quick"  # file stem of the model shipped in cmbstudy/weights/
PACKAGED_NAMES = ("packaged", PACKAGED_MODEL)  # what --model accepts for it
NO_MODEL_MESSAGE = (
    "no model given and no packaged model found: pass --model RUN (from `cmbstudy train`) "
    "or run `make study`"
)
_USE = "research use only; {}not a medical device"
#: The second look's file: in a run folder, and beside an exported ``<name>.pt`` as ``<name>.second_look.joblib``.
SECOND_LOOK = "second_look.joblib"
#: How :func:`export_model` stores a model's weights (the ``"weights_storage"`` key of its file).
WEIGHTS_STORAGE = "int8 per output channel"


@dataclass(frozen=True)
class DetectionModel:
    """A network with the profile it was trained with and where it came from."""

    network: torch.nn.Module  # weights loaded, eval mode not yet set
    profile: Profile  # preprocessing, model and evaluation settings of its training
    source: str  # run folder, checkpoint file, or "packaged:<name>"
    provenance: Mapping[str, Any]  # training data, fold, validation metrics, version, date (as known)
    trained_on_synthetic: bool  # True when the provenance says the training data were synthetic
    calibrated: OperatingPoint | None = None  # threshold and smallest lesion chosen on validation, when known
    second_look: SecondLook | None = None  # the trained second look, when the model has one

    @property
    def operating_point(self) -> OperatingPoint:
        """The calibrated lesion rule (two stages, at its threshold, where the model has a second look), else the
        profile's."""
        point = self.calibrated if self.calibrated is not None else OperatingPoint.from_config(self.profile.evaluation)
        point = dataclasses.replace(point, connectivity=int(self.profile.evaluation.connectivity))
        if self.second_look is None:
            return point.single_stage
        return dataclasses.replace(point, second_look=self.second_look.threshold)

    def point_for(self, threshold: float | None = None, single_stage: bool = False) -> OperatingPoint:
        """The lesion rule to detect with: the model's; its single stage (the paper's method); or one stage
        at ``threshold`` with the model's minimum size.

        Raises:
            ConfigError: a threshold outside (0, 1].
        """
        point = self.operating_point
        if threshold is not None:
            return dataclasses.replace(point.single_stage, threshold=float(threshold), source="--threshold")
        return point.single_stage if single_stage else point

    @property
    def name(self) -> str:
        """Registry name of the network (e.g. ``rlk_unet_cbam``)."""
        return self.profile.model.name

    @property
    def intended_use(self) -> str:
        """The plain research-use statement written into every summary and report."""
        return _USE.format("model trained on synthetic data; " if self.trained_on_synthetic else "")


def packaged_model_path() -> Path | None:
    """The packaged checkpoint ``cmbstudy/weights/rlk_unet_cbam_quick.pt``, or None when absent."""
    path = resources.files("cmbstudy").joinpath("weights", f"{PACKAGED_MODEL}.pt")
    return Path(str(path)) if path.is_file() else None


def pack_weights(weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Each floating-point weight of two or more dimensions as int8 with one float32 scale per output channel.

    Symmetric: ``scale = max |w| / 127`` over the channel, ``w ~ int8 * scale``. This
    keeps an exported model about a quarter of its float32 size (the packaged model's file
    under the repository's 2 MB). Written here because torch's own quantized tensors
    (``torch.quantize_per_channel``) are deprecated; :func:`unpack_weights` undoes it.
    Biases and other one-dimensional tensors stay as they are.
    """
    packed: dict[str, Any] = {}
    for key, weight in weights.items():
        if not (weight.is_floating_point() and weight.dim() >= 2):
            packed[key] = weight
            continue
        per_channel = (-1,) + (1,) * (weight.dim() - 1)
        scale = (weight.float().abs().flatten(1).amax(1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
        packed[key] = {"int8": torch.round(weight.float() / scale.view(per_channel)).to(torch.int8), "scale": scale}
    return packed


def unpack_weights(stored: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The float32 weights of :func:`pack_weights`'s output (tensors not packed pass through)."""
    weights: dict[str, torch.Tensor] = {}
    for key, value in stored.items():
        if isinstance(value, Mapping):
            values = value["int8"]
            weights[key] = values.float() * value["scale"].view((-1,) + (1,) * (values.dim() - 1))
        else:
            weights[key] = value
    return weights


def _profile_from(data: Any, where: Path) -> Profile:
    try:
        return profile_from_mapping(data, str(where))
    except ConfigError as exc:
        raise InputError(f"{where} holds an invalid profile ({exc}): re-export the model") from exc


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise InputError(
            f"model checkpoint {path} cannot be read ({type(exc).__name__}): "
            "give a checkpoint_best.pt written by `cmbstudy train`"
        ) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise InputError(f"model checkpoint {path} holds no 'model' weights: give one written by `cmbstudy train`")
    return state


def _synthetic(provenance: Mapping[str, Any]) -> bool:
    data = provenance.get("training_data", {})
    text = json.dumps(data).lower() if not isinstance(data, str) else data.lower()
    return "synthetic" in text


def _run_provenance(run_dir: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"run_dir": str(run_dir.resolve()), "fold": state.get("fold"),
                            "epoch": state.get("epoch"), "val_metrics": state.get("val")}
    if (run_dir / RESULT).is_file():
        result = read_json(run_dir / RESULT)
        for key in ("fold", "best_epoch", "best_val", "epochs", "device", "seed", "profile",
                    "training_data", "dataset", "data_root"):
            if key in result:
                info[key] = result[key]
    if (run_dir / DATASET).is_file():
        info["training_data"] = read_json(run_dir / DATASET)
    if "training_data" not in info:
        known = {k: info[k] for k in ("dataset", "data_root") if k in info}
        info["training_data"] = known or "not recorded by the run"
    return info


def load_detection_model(model: str | Path | None = None, overrides: Sequence[str] = (),
                         with_second_look: bool = True) -> DetectionModel:
    """Resolve ``--model``: a training run folder, a ``.pt`` checkpoint, or the packaged model.

    A run folder needs ``profile.yaml`` and ``checkpoint_best.pt``. A ``.pt``
    file needs its profile: stored in the checkpoint (key ``"profile"``, as
    :func:`export_model` writes), in a provenance JSON of the same stem beside
    it, or as ``profile.yaml`` beside it (a run's checkpoint). None, ``"packaged"``
    or the packaged model's name (``rlk_unet_cbam_quick``, when no such file is in
    the working folder) load ``cmbstudy/weights/rlk_unet_cbam_quick.pt`` (+ ``.json``).

    Args:
        overrides: ``section.key=value`` (``--set``) applied to the model's profile, e.g.
            ``evaluation.connectivity=6``; the ``model`` section is fixed by the weights.
        with_second_look: read the model's second look, where it has one (False: the network alone, e.g. to
            train a new second look in place of one this version cannot read).

    Raises:
        ConfigError: no model given and none packaged, or an override of the ``model`` section.
        InputError: missing or unreadable files, or weights that do not fit the profile.
    """
    fixed = [text for text in overrides if str(text).strip().startswith("model.")]
    if fixed:
        raise ConfigError(f"--set {fixed[0]!r}: the network's settings are fixed by its weights; "
                          "train another model to change them")
    packaged = model is None or (str(model) in PACKAGED_NAMES and not Path(str(model)).exists())
    if packaged:
        path = packaged_model_path()
        if path is None:
            raise ConfigError(NO_MODEL_MESSAGE)
    else:
        path = Path(model).expanduser()
    if not path.exists():
        raise InputError(f"model {path} does not exist: give a run folder from `cmbstudy train` or a .pt file")
    if path.is_dir():
        checkpoint = path / CHECKPOINT_BEST
        profile = load_run_profile(path)
        if not checkpoint.is_file():
            raise InputError(f"{checkpoint} does not exist: train the run first (cmbstudy train)")
        state = _load_checkpoint(checkpoint)
        provenance = _run_provenance(path, state)
        source = str(path)
    else:
        if path.suffix != ".pt":
            raise InputError(f"model {path} is neither a run folder nor a .pt checkpoint: check --model")
        state = _load_checkpoint(path)
        sidecar = path.with_suffix(".json")
        provenance = read_json(sidecar) if sidecar.is_file() else {}
        if "profile" in state:
            profile = _profile_from(state["profile"], path)
        elif "profile" in provenance:
            profile = _profile_from(provenance["profile"], sidecar)
        elif (path.parent / PROFILE).is_file():
            profile = load_run_profile(path.parent)
            provenance = {**_run_provenance(path.parent, state), **provenance}
        else:
            raise InputError(
                f"model checkpoint {path} carries no profile and no profile.yaml sits beside it: "
                "pass the run folder (--model RUN) instead"
            )
        provenance.setdefault("training_data", "not recorded")
        source = f"packaged:{PACKAGED_MODEL}" if packaged else str(path)
    network = model_from_config(profile.model)
    try:
        weights = unpack_weights(state["model"]) if state.get("weights_storage") == WEIGHTS_STORAGE else state["model"]
        network.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise InputError(
            f"model weights in {path} do not fit its profile's network ({profile.model.name}): "
            "give the checkpoint and profile of the same run"
        ) from exc
    network.eval()
    point = _operating_point(path, state, provenance)
    second = second_look_path(path)
    second_look = load_second_look(second) if with_second_look and second.is_file() else None
    profile = apply_overrides(profile, overrides)
    return DetectionModel(network, profile, source, to_json_safe(provenance), _synthetic(provenance), point,
                          second_look)


def second_look_path(model: Path) -> Path:
    """Where a model's second look lies: ``RUN/second_look.joblib``, or ``<name>.second_look.joblib`` beside a
    ``<name>.pt``."""
    model = Path(model)
    return model / SECOND_LOOK if model.is_dir() else model.with_name(f"{model.stem}.{SECOND_LOOK}")


def _operating_point(path: Path, state: Mapping[str, Any], provenance: Mapping[str, Any]) -> OperatingPoint | None:
    """The calibrated operating point of a model: in its run folder, its checkpoint or its provenance file."""
    stored = None
    if path.is_dir():
        stored = load_run_operating_point(path)
    elif "operating_point" in state:
        stored = state["operating_point"]
    elif "operating_point" in provenance:
        stored = provenance["operating_point"]
    elif (path.parent / PROFILE).is_file():
        stored = load_run_operating_point(path.parent)
    try:
        if stored is not None:
            return OperatingPoint.from_json(stored)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise InputError(f"the operating point stored with {path} is not valid ({exc}): re-export the model") from exc
    return None


def export_model(run_dir: Path, out_dir: Path, data_root: Path | None = None, name: str = PACKAGED_MODEL,
                 command: str | None = None) -> Path:
    """Write a run's best checkpoint as a self-describing model ``OUT/<name>.pt`` + ``<name>.json``.

    The ``.pt`` holds the weights and the resolved profile; the ``.json`` the
    provenance (training data from ``data_root``'s ``dataset_description.json``,
    profile, fold, validation metrics, operating point, cmbstudy version, date, and
    ``command``, the command that regenerates it). This is how the packaged model
    in ``cmbstudy/weights/`` is made (``make weights``); the run's second look, where it has one, is
    written beside it as ``<name>.second_look.joblib``. The weights are stored as
    :func:`pack_weights` writes them (:data:`WEIGHTS_STORAGE`); the operating point is
    the run's, chosen on its validation subjects with the float32 weights.

    Raises:
        InputError: missing run files or dataset description.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    loaded = load_detection_model(run_dir)
    state = _load_checkpoint(run_dir / CHECKPOINT_BEST)
    training_data: Any = loaded.provenance.get("training_data", "not recorded")
    if data_root is not None:
        training_data = describe_dataset(Path(data_root))
    if isinstance(training_data, dict):  # a local path means nothing where the model is used
        training_data = {k: v for k, v in training_data.items() if k != "data_root"}
    provenance = {**loaded.provenance, "name": name, "training_data": training_data,
                  "profile": profile_to_dict(loaded.profile), "operating_point": loaded.operating_point.to_json(),
                  "weights_storage": WEIGHTS_STORAGE, "cmbstudy_version": __version__,
                  "date": time.strftime("%Y-%m-%d")}
    provenance.pop("run_dir", None)
    if command:
        provenance["command"] = command
    payload = {"model": pack_weights(state["model"]), "weights_storage": WEIGHTS_STORAGE,
               "profile": provenance["profile"], "fold": state.get("fold"), "epoch": state.get("epoch"),
               "val": state.get("val"), "operating_point": provenance["operating_point"]}
    write_atomically(out_dir / f"{name}.pt", lambda tmp: torch.save(payload, tmp))
    write_json(out_dir / f"{name}.json", provenance)
    if loaded.second_look is not None:  # the run's own second look travels with its network
        save_second_look(loaded.second_look, second_look_path(out_dir / f"{name}.pt"), {
            "model": f"packaged:{name}", "data": training_data, "command": command,
            "validation_subjects": load_run_split(run_dir, "val"), "training_subjects": load_run_split(run_dir, "train"),
            "report": json.loads(second_look_path(run_dir).with_suffix(".json").read_text()).get(
                "provenance", {}).get("report", {})})
    return out_dir / f"{name}.pt"
