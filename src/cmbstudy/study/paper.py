"""The published numbers of Cho et al. (2026) that the study prints beside its own.

Transcribed from the paper's tables (Tables 2-8 and Fig. 4): precision, recall,
F1 and false positives per subject (``fp_per_subject``) on the paper's data,
which is not the data our numbers come from. Every table of the study labels
the two columns by their dataset (:data:`PAPER_DATASET_LABEL`). A test reads
every number here back from the paper's text.

What the paper says of its data (section 3.1): 506 scans from three sources,
a test set of 72 subjects "constructed" from them (Table 6 spreads it over the
ARIA-H categories 8 / 50 / 9 / 5) and 5-fold cross-validation on the rest. It
does not say which sources the test subjects came from. Its Table 2 row of the
proposed network, Table 7's "With CBAM" and Table 8's "CBAM-AllSkip" equal the
average row of Table 3 (the cross-validation) to the last digit.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..evaluation.scores import DETECTION_METRICS

__all__ = [
    "PAPER_N_SCANS",
    "PAPER_SOURCES",
    "PAPER_DATASET_LABEL",
    "METRICS",
    "TABLE2",
    "TABLE3_FOLDS",
    "TABLE3_MEAN_SD",
    "TABLE4",
    "TABLE5",
    "TABLE6_CONFUSION",
    "FIG4_SPEARMAN",
    "TABLE7",
    "TABLE8",
    "INFERENCE_SECONDS",
    "AUTHORS_CODE",
]

#: Detection metrics in the paper's order.
METRICS: tuple[str, ...] = DETECTION_METRICS


def _row(p: float, r: float, f1: float, fp: float) -> Mapping[str, float]:
    return MappingProxyType(dict(zip(METRICS, (p, r, f1, fp))))


#: Table 2: all lesions, by the study's variant name of each method (``Profile.variants``), in the
#: paper's order. The paper has no nnU-Net row, so ``nnunet`` is printed without a paper figure.
TABLE2: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "dou2016": _row(0.521, 0.740, 0.611, 5.22),
    "fan2022": _row(0.714, 0.765, 0.739, 2.35),
    "wei2022": _row(0.822, 0.863, 0.842, 1.43),
    "tsuchida2024": _row(0.767, 0.730, 0.749, 1.71),
    "rlk_unet_cbam": _row(0.891, 0.887, 0.887, 0.83),
})

#: Table 4: lesions of at most 3 mm, keyed as :data:`TABLE2`.
TABLE4: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "dou2016": _row(0.492, 0.731, 0.587, 5.31),
    "fan2022": _row(0.773, 0.754, 0.763, 2.55),
    "wei2022": _row(0.805, 0.849, 0.826, 1.66),
    "tsuchida2024": _row(0.747, 0.717, 0.732, 1.91),
    "rlk_unet_cbam": _row(0.854, 0.883, 0.869, 0.91),
})

#: Table 3: the five folds of the cross-validation, numbered from 1 (the study numbers folds from 0).
TABLE3_FOLDS: tuple[Mapping[str, float], ...] = (
    _row(0.901, 0.893, 0.897, 0.75),
    _row(0.889, 0.884, 0.886, 0.85),
    _row(0.873, 0.870, 0.871, 0.97),
    _row(0.910, 0.897, 0.903, 0.68),
    _row(0.882, 0.893, 0.880, 0.90),
)
#: Table 3's average row, mean and standard deviation of each metric as printed (section 4.2).
TABLE3_MEAN_SD: Mapping[str, tuple[float, float]] = MappingProxyType({
    "precision": (0.891, 0.015), "recall": (0.887, 0.011), "f1": (0.887, 0.013), "fp_per_subject": (0.83, 0.016),
})

#: Table 5: train on one modality, test on the other.
TABLE5: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "GRE -> SWI": _row(0.758, 0.771, 0.765, 2.18),
    "SWI -> GRE": _row(0.813, 0.827, 0.820, 1.83),
})

#: Table 6: subjects by ARIA-H category (0, 1-4, 5-9, >=10); rows reference, columns predicted.
TABLE6_CONFUSION: np.ndarray = np.array(
    [[6, 2, 0, 0], [2, 46, 2, 0], [0, 2, 6, 1], [0, 0, 1, 4]], dtype=np.int64
)
TABLE6_CONFUSION.setflags(write=False)

#: Scans of the paper's data in all, as its section 3.1 states it (the sources below add up to more).
PAPER_N_SCANS: int = 506

#: The paper's sources (section 3.1), each with its scans, those of them with CMBs, its sequence and
#: its scanners' field strengths (T). Cavas is the 154 scans with CMBs selected from its 270.
PAPER_SOURCES: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "MICCAI 2021 VALDO": MappingProxyType(
        {"scans": 72, "with_cmb": 50, "sequence": "2D and 3D T2*-GRE", "field_tesla": (1.5, 3.0)}),
    "Cavas": MappingProxyType({"scans": 154, "with_cmb": 154, "sequence": "2D T2*-GRE", "field_tesla": (3.0,)}),
    "Yongin Severance Hospital": MappingProxyType(
        {"scans": 374, "with_cmb": 294, "sequence": "3D SWI", "field_tesla": (3.0,)}),
})

#: Column / row label of the paper's numbers in every comparison: its test set (the subjects of
#: Table 6), drawn from the sources of :data:`PAPER_SOURCES`.
PAPER_DATASET_LABEL = f"paper ({int(TABLE6_CONFUSION.sum())}-subject test set, {len(PAPER_SOURCES)} sources)"

#: Fig. 4: Spearman rho of predicted vs reference counts, its 95% CI (Fisher z), subjects.
FIG4_SPEARMAN: Mapping[str, float] = MappingProxyType({"rho": 0.93, "ci_low": 0.89, "ci_high": 0.96, "n": 72})

#: Table 7: without and with CBAM.
TABLE7: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "Without CBAM": _row(0.783, 0.855, 0.812, 1.80),
    "With CBAM": _row(0.891, 0.887, 0.887, 0.83),
})

#: Table 8: CBAM on no skip, on the deepest, on the two deepest, and on every skip, by the paper's row labels.
TABLE8: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "Without CBAM": _row(0.783, 0.855, 0.812, 1.80),
    "CBAM-Skip1": _row(0.841, 0.857, 0.850, 1.23),
    "CBAM-Skip2": _row(0.856, 0.864, 0.860, 1.11),
    "CBAM-AllSkip": _row(0.891, 0.887, 0.887, 0.83),
})

#: Inference time per subject on an RTX A5000 Ada, post-processing included (s).
INFERENCE_SECONDS: float = 0.22

#: Where the authors' public code departs from the paper, as read from it (the study follows the paper):
#: its deep-supervision weights (final output first), batch size, epochs, and its per-slice match distance.
AUTHORS_CODE: Mapping[str, object] = MappingProxyType({
    "deep_supervision_weights": (0.65, 0.35), "batch_size": 1, "epochs": 3000, "match_distance_pixels": 4,
})
