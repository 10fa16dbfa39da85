"""Figs. 5-6 of Cho et al. (2026) as notebook 10 shows them: Grad-CAM without and with CBAM, CBAM maps.

The two arms are the network without CBAM (``without_cbam``) and the main
network, at the first comparison fold; the slices are those of the test
subjects with the most lesion pixels (:func:`cmbstudy.study.examples.select_example_slices`).
The share of each Grad-CAM map's mass near the lesions (:func:`cmbstudy.explain.compute_gradcam_focus`)
says whether the attention sits on the CMBs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd
import torch.nn as nn

from ..config import Profile
from ..explain.gradcam import (
    SliceExplanation,
    compute_gradcam_focus,
    compute_slice_explanations,
)
from ..inference.model_store import load_detection_model
from ..preprocessing.geometry import PreprocessedVolume
from .claims import paired_focus_difference
from .examples import load_test_volumes, select_example_slices
from .runs import dataset_label, load_runs, run_name

__all__ = ["ARMS", "FOCUS_RADIUS", "Explanations", "explain_arms"]

#: The two arms of the figures: label -> variant (None: the profile's main network).
ARMS: Mapping[str, str | None] = {"without CBAM": "without_cbam", "with CBAM": None}
#: Neighbourhood of the lesions (pixels of the preprocessed grid) in which Grad-CAM mass counts as on them.
FOCUS_RADIUS = 5


@dataclass(frozen=True)
class Explanations:
    """Grad-CAM of both arms on example slices, their CBAM maps, and the Grad-CAM focus on lesions.

    Attributes:
        note: markdown on missing runs ("" when both arms ran); cbam_note: markdown when no model
            shown has CBAM ("" otherwise).
        examples: subject, slice and lesion pixels of every example slice.
        explanations: one per example slice; with_cbam: those with CBAM maps.
        focus: Grad-CAM mass near the lesions on every test slice with a lesion, per arm;
            by_model: its mean per arm; focus_without, focus_with, focus_chance: the means glued.
        fold_differences: per fold where both arms were trained (the comparison fold first), the
            mean over slices of the share with minus without CBAM, and the slices paired: what
            the claim judges (:func:`cmbstudy.study.claims.explanation_claims`).
    """

    dataset: str
    fold: int
    note: str
    cbam_note: str
    models: Mapping[str, nn.Module]
    volumes: tuple[PreprocessedVolume, ...]
    examples: pd.DataFrame
    explanations: tuple[SliceExplanation, ...]
    with_cbam: tuple[SliceExplanation, ...]
    focus: pd.DataFrame
    by_model: pd.DataFrame
    n_lesion_slices: int
    focus_without: float
    focus_with: float
    focus_chance: float
    fold_differences: pd.DataFrame


def _fold_difference(fold: int, focus: pd.DataFrame) -> dict[str, float]:
    """The mean over slices of the Grad-CAM share with minus without CBAM on one fold's pair of networks."""
    difference, _ = paired_focus_difference(focus)
    return {"fold": fold, "with minus without": float(difference.mean()) if len(difference) else math.nan,
            "slices": len(difference)}


def explain_arms(results_dir: Path | str, test_root: Path | str, profile: Profile, n_examples: int = 3
                 ) -> Explanations:
    """Explanations of the arms' runs at the first comparison fold on the test set (an arm is absent when its run is)."""
    fold = min([f for f in profile.study.comparison_folds if f < profile.train.n_folds], default=0)
    arms = {arm: run_name(variant or profile.study.main, fold) for arm, variant in ARMS.items()}
    runs, missing = load_runs(results_dir, list(arms.values()))
    models = {arm: load_detection_model(runs[name].run_dir).network.eval() for arm, name in arms.items() if name in runs}
    note = (f"**Runs not found** (not trained by this profile, or notebook 03 not run): {', '.join(missing)}; "
            f"shown: {', '.join(models) or 'nothing'}." if missing else "")
    volumes = load_test_volumes(runs[arms[next(iter(models))]].run_dir, Path(test_root)) if models else []
    examples = select_example_slices(volumes, n_examples)
    table = pd.DataFrame([{"subject": volumes[i].subject_id, "slice": z, "lesion pixels": int(volumes[i].mask[z].sum())}
                          for i, z in examples])
    explanations = tuple(compute_slice_explanations(models, volumes[i], z) for i, z in examples)
    columns = ["cam_mass_fraction", "chance"]
    focus = (pd.concat({arm: compute_gradcam_focus(model, volumes, radius=FOCUS_RADIUS) for arm, model in models.items()},
                       names=["model", "row"]) if models else pd.DataFrame(columns=columns))
    by_model = focus.groupby(level="model")[columns].mean() if models else focus
    with_cbam = tuple(ex for ex in explanations if ex.cbam)
    differences = [_fold_difference(fold, focus)] if len(models) == len(ARMS) else []
    for other in range(profile.train.n_folds):  # the other folds where both arms ran: the claim's replicates
        names = {arm: run_name(variant or profile.study.main, other) for arm, variant in ARMS.items()}
        found, absent = load_runs(results_dir, list(names.values()))
        if other == fold or absent:
            continue
        pair = {arm: load_detection_model(found[name].run_dir).network.eval() for arm, name in names.items()}
        differences.append(_fold_difference(other, pd.concat(
            {arm: compute_gradcam_focus(model, volumes, radius=FOCUS_RADIUS) for arm, model in pair.items()},
            names=["model", "row"])))
    return Explanations(
        dataset=dataset_label(test_root), fold=fold, note=note,
        cbam_note="" if with_cbam or not explanations else "No CBAM in the models shown.",
        models=models, volumes=tuple(volumes), examples=table, explanations=explanations, with_cbam=with_cbam,
        focus=focus, by_model=by_model.round(3), n_lesion_slices=int(len(focus) // max(len(models), 1)),
        focus_without=float(by_model["cam_mass_fraction"].get("without CBAM", math.nan)),
        focus_with=float(by_model["cam_mass_fraction"].get("with CBAM", math.nan)),
        focus_chance=float(focus["chance"].mean()) if len(focus) else math.nan,
        fold_differences=pd.DataFrame(differences, columns=["fold", "with minus without", "slices"]).set_index(
            "fold").round(4),
    )
