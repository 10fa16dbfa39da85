"""The settings of a build beside the paper profile's: the table of the methods chapter.

Each row is one field of a profile section (:mod:`cmbstudy.config`): its value in
the profile that ran, its value in the ``paper`` profile (the published
settings, where the paper gives them), and what it sets, read from the field's
comment in :mod:`cmbstudy.config`. The comments are read from the source with
:mod:`inspect`, so the table and the configuration cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from importlib import resources
from typing import Any, Mapping, Sequence

import pandas as pd

from .. import config
from ..config import Profile
from ..data.aria_h import format_aria_h_categories
from ..data.manifest import load_manifest
from ..evaluation.subsets import SMALL_DIAMETER_MM
from ..synth import susceptibility as chi
from ..synth.acquisition import SITES
from ..synth.cohort import PAPER_TEST_CATEGORY_COUNTS
from .paper import PAPER_DATASET_LABEL, PAPER_N_SCANS, PAPER_SOURCES, TABLE6_CONFUSION
from .runs import training_instances

__all__ = ["SECTIONS", "field_descriptions", "format_setting", "compute_settings_table", "style_settings_table",
           "settings_values", "compute_quoted_values"]

#: The profile sections the table shows, in the order of the methods chapter, with their headings.
SECTIONS: Mapping[str, str] = {
    "synth": "synthetic cohort", "preprocess": "preprocessing", "model": "network", "train": "training",
    "evaluation": "evaluation", "study": "runs of the study",
}

_FIELD_COMMENT = re.compile(r"^\s+(\w+):[^#]*#\s*(.+)$")


def field_descriptions(section_class: type) -> dict[str, str]:
    """Field name -> its comment in the dataclass ``section_class`` of :mod:`cmbstudy.config`."""
    described = {}
    for line in inspect.getsource(section_class).splitlines():
        match = _FIELD_COMMENT.match(line)
        if match:
            described[match.group(1)] = match.group(2).strip()
    return described


def format_setting(value: Any) -> str:
    """A setting as the table prints it: tuples as ``a, b``, floats in their shortest form, None as "—"."""
    if value is None:
        return "—"
    if isinstance(value, (tuple, list)):
        return ", ".join(format_setting(v) for v in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def compute_settings_table(ran: Profile, paper: Profile, sections: Sequence[str] = tuple(SECTIONS)) -> pd.DataFrame:
    """One row per field of ``sections``: the build's value, the paper profile's, and what it sets.

    Args:
        ran: the resolved profile of the build (overrides applied); paper: the ``paper`` profile.
        sections: keys of :data:`SECTIONS`, in the table's order.

    Returns:
        Columns ``section``, ``setting``, ``this build``, ``paper profile``, ``differs`` (bool),
        ``what it sets``; the index counts rows.
    """
    rows = []
    for section in sections:
        heading = SECTIONS[section]
        ours, theirs = getattr(ran, section), getattr(paper, section)
        described = field_descriptions(type(ours))
        for item in dataclasses.fields(ours):
            mine, published = getattr(ours, item.name), getattr(theirs, item.name)
            rows.append({"section": heading, "setting": f"{section}.{item.name}", "this build": format_setting(mine),
                         "paper profile": format_setting(published), "differs": mine != published,
                         "what it sets": described.get(item.name, "")})
    return pd.DataFrame(rows)


def settings_values(profile: Profile, prefix: str) -> dict[str, Any]:
    """``{prefix}.{section}.{field}`` -> the field's value printed by :func:`format_setting`, for ``glue``."""
    values = {f"{prefix}.seed": format_setting(profile.seed)}
    for section in SECTIONS:
        block = getattr(profile, section)
        for item in dataclasses.fields(block):
            values[f"{prefix}.{section}.{item.name}"] = format_setting(getattr(block, item.name))
    return values



def style_settings_table(table: pd.DataFrame) -> Any:
    """:func:`compute_settings_table` as the book shows it: indexed by section and setting, differing rows bold."""
    shown = table.drop(columns="differs").set_index(["section", "setting"])
    bold = dict(zip(zip(table["section"], table["setting"]), table["differs"]))
    return shown.style.apply(lambda row: ["font-weight: bold" if bold[row.name] else ""] * len(row), axis=1)


def _joined(values: Sequence[Any], separator: str) -> str:
    return separator.join(format_setting(v) for v in values)


#: The GPU check's numbers as measured on a GPU (``benchmarks/gpu_check.sh``), shipped with the package.
GPU_CHECK_MEASURED = "measured/gpu_check_h100.json"


def gpu_check_values(measured: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The GPU check's numbers that the reproducibility chapter quotes, by glue key (``gpu_check.*``), from
    ``measured`` (the check's JSON; default: the one measured on a GPU, :data:`GPU_CHECK_MEASURED`).

    The inference rate counts the forward pass at the inference side from the training crop's FLOPs: the
    network is fully convolutional, so its operations grow with the pixels of a slice.
    """
    if measured is None:
        measured = json.loads(resources.files("cmbstudy").joinpath(GPU_CHECK_MEASURED).read_text(encoding="utf-8"))
    inference, step = measured["inference"], measured["training_step"]
    gflop = step["forward_gflop_per_slice"] * (inference["side"] / step["side"]) ** 2
    values = {"device": measured["device_name"], "torch": measured["torch"].split("+")[0], "cuda": measured["cuda"],
              "cpu_threads": str(measured["torch_threads"]), "side": str(inference["side"]),
              "slices": str(inference["slices"]), "batch": str(inference["batch"]),
              "step_side": str(step["side"]), "step_batch": str(step["batch"]),
              "step_seconds": f"{step['step_seconds']:.3f}",
              "step_slices_per_second": f"{step['slices_per_second']:.0f}",
              "step_gflop": f"{step['forward_gflop_per_slice']:.2f}", "step_tflops": f"{step['tflops']:.1f}",
              "peak_tflops": f"{step['peak_tflops']:.0f}", "share_of_peak": f"{step['share_of_peak']:.2%}"}
    for mode in ("eager", "compile"):
        times = inference[mode]
        values.update({f"{mode}.network_seconds": f"{times['network_seconds']:.2f}",
                       f"{mode}.post_seconds": f"{times['post_seconds']:.2f}",
                       f"{mode}.seconds_per_subject": f"{times['seconds_per_subject']:.2f}",
                       f"{mode}.tflops": f"{inference['slices'] * gflop / times['network_seconds'] / 1e3:.1f}"})
    saving = 1 - inference["compile"]["network_seconds"] / inference["eager"]["network_seconds"]
    values["compile_saving"] = f"{saving:.0%}"
    return {f"gpu_check.{key}": value for key, value in values.items()}


def compute_quoted_values() -> dict[str, Any]:
    """The values the book's markdown pages quote, by glue key, each read from where the code keeps it.

    The shipped profiles' fields (``smoke.*``, ``quick.*``, ``gpu.*``; the paper profile's are
    :func:`settings_values` under ``paper.*``) and the runs each trains, the synthetic
    cohort's physics, the ARIA-H categories, the small-lesion bound, the VALDO set's
    size from ``data_manifest.yaml``, the paper's data (:mod:`cmbstudy.study.paper`), and the GPU check's
    measured numbers (:func:`gpu_check_values`).
    """
    values: dict[str, Any] = dict(gpu_check_values())
    for name in ("smoke", "quick", "gpu", "paper"):
        profile = config.load_profile(name)
        if name != "paper":
            values.update(settings_values(profile, name))
        values[f"{name}.n_training_runs"] = len(training_instances(profile))
    voxel_mm = config.load_profile("quick").synth.voxel_mm
    values["quick.cmb_voxels_across"] = f"{min(chi.CMB_DIAMETER_MM) / voxel_mm:.1f}"
    values["quick.common_cmb_voxels_across"] = f"{chi.CMB_COMMON_DIAMETER_MM / voxel_mm:.1f}"
    slices = sorted({site.slice_mm for site in SITES})
    values.update({
        "synth.slice_mm": _joined((slices[0], slices[-1]), "–"),
        "synth.cmb_diameter_mm": _joined(chi.CMB_DIAMETER_MM, "–"),
        "synth.cmb_smallest_mm": format_setting(min(chi.CMB_DIAMETER_MM)),
        "synth.cmb_common_diameter_mm": format_setting(chi.CMB_COMMON_DIAMETER_MM),
        "synth.cmb_common_share": f"{chi.CMB_COMMON_SHARE:.0%}",
        "synth.cmb_chi_ppm": _joined(chi.CMB_CHI_PPM, "–"),
        "synth.cmb_chi_median_ppm": format_setting(chi.CMB_CHI_MEDIAN_PPM),
        "synth.region_margin_mm": format_setting(chi.REGION_MARGIN_MM),
        "synth.test_category_counts": _joined(tuple(PAPER_TEST_CATEGORY_COUNTS.values()), " / "),
        "aria_h_categories": format_aria_h_categories(" / "),
        "small_diameter_mm": format_setting(SMALL_DIAMETER_MM),
        "valdo.n_scans": load_manifest()["datasets"]["valdo2021-cmb"]["expected_subjects"],
        "paper_data.n_scans": PAPER_N_SCANS,
        "paper_data.n_sources": len(PAPER_SOURCES),
        "paper_data.sources_scans": sum(facts["scans"] for facts in PAPER_SOURCES.values()),
        "paper_data.test_subjects": int(TABLE6_CONFUSION.sum()),
        "paper_data.test_without_cmb": int(TABLE6_CONFUSION[0].sum()),
        "paper_data.test_by_category": _joined(tuple(int(n) for n in TABLE6_CONFUSION.sum(axis=1)), " / "),
        "paper_dataset_label": PAPER_DATASET_LABEL,
    })
    for source, facts in PAPER_SOURCES.items():
        slug = "_".join(source.lower().split())
        for fact, value in {**facts, "without_cmb": facts["scans"] - facts["with_cmb"]}.items():
            text = _joined(value, " and ") if isinstance(value, tuple) else format_setting(value)
            values[f"paper_data.{slug}.{fact}"] = text
    return values
