"""The published numbers of Cho et al. (2025) that the study prints beside its own.

Transcribed from the paper's tables (Tables 2-8 and Fig. 4): precision, recall,
F1 and false positives per subject (``fp_per_subject``) on the paper's test
data, which is not the data our numbers come from. Every table of the study
labels the two columns by their dataset (:data:`PAPER_DATASET_LABEL`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..evaluation.scores import DETECTION_METRICS

__all__ = [
    "PAPER_DATASET_LABEL",
    "METRICS",
    "TABLE2",
    "TABLE3_FOLD_F1",
    "TABLE3_MEAN_SD",
    "TABLE4",
    "TABLE5",
    "TABLE6_CONFUSION",
    "FIG4_SPEARMAN",
    "TABLE7",
    "TABLE8",
    "INFERENCE_SECONDS",
]

#: Column / row label of the paper's numbers in every comparison.
PAPER_DATASET_LABEL = "paper (VALDO + private cohorts)"

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

#: Table 3: F1 of folds 1-5 (the paper numbers folds from 1; the study from 0).
TABLE3_FOLD_F1: tuple[float, ...] = (0.897, 0.886, 0.871, 0.903, 0.880)
#: Table 3: mean and standard deviation of the fold F1 as printed (0.887 +- 0.013).
TABLE3_MEAN_SD: tuple[float, float] = (0.887, 0.013)

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

#: Fig. 4: Spearman rho of predicted vs reference counts, its 95% CI (Fisher z), subjects.
FIG4_SPEARMAN: Mapping[str, float] = MappingProxyType({"rho": 0.93, "ci_low": 0.89, "ci_high": 0.96, "n": 72})

#: Table 7: without and with CBAM.
TABLE7: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "without CBAM": _row(0.783, 0.855, 0.812, 1.80),
    "with CBAM": _row(0.891, 0.887, 0.887, 0.83),
})

#: Table 8: CBAM on 0, 1, 2 or all (3) skips: F1 and FP per subject (the paper gives no P/R).
TABLE8: Mapping[int, Mapping[str, float]] = MappingProxyType({
    0: MappingProxyType({"f1": 0.812, "fp_per_subject": 1.80}),
    1: MappingProxyType({"f1": 0.850, "fp_per_subject": 1.23}),
    2: MappingProxyType({"f1": 0.860, "fp_per_subject": 1.11}),
    3: MappingProxyType({"f1": 0.887, "fp_per_subject": 0.83}),
})

#: Inference time per subject on an RTX A5000 Ada, post-processing included (s).
INFERENCE_SECONDS: float = 0.22
