"""Every number of cmbstudy.study.paper read back from the paper's text (``../shared/paper/``).

The text holds the tables as rows of numbers (some row labels were lost in its extraction) and
repeats the proposed network's rows in the prose; both are read here. Skipped where the paper's
text is not beside the checkout.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cmbstudy.study import paper

TEXT = Path(__file__).resolve().parents[3] / "shared" / "paper" / "cho2025_rlkunet_cbam_cmb.txt"
pytestmark = pytest.mark.skipif(not TEXT.is_file(), reason=f"the paper's text is not at {TEXT}")
NUMBER = re.compile(r"^\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def text() -> str:
    return TEXT.read_text()


@pytest.fixture(scope="module")
def rows(text: str) -> list[tuple[str, list[float]]]:
    """(label, numbers) of every table row of the text, in order; the label is "" when it was lost."""
    out = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        numbers = [float(c) for c in cells if NUMBER.match(c)]
        labels = [c for c in cells if c and not NUMBER.match(c) and not set(c) <= set("-")]
        if numbers:
            out.append((" ".join(labels), numbers))
    return out


def _metrics(row: dict) -> list[float]:
    return [row[m] for m in paper.METRICS]


def test_table2_and_table4_baselines(rows) -> None:
    unlabeled = [numbers for label, numbers in rows if not label and len(numbers) == 4]
    baselines = ["dou2016", "fan2022", "wei2022", "tsuchida2024"]
    # the first four such rows are Table 2's baselines, the next four (after Table 3) Table 4's
    assert unlabeled[:4] == [_metrics(paper.TABLE2[b]) for b in baselines]
    assert unlabeled[4:8] == [_metrics(paper.TABLE4[b]) for b in baselines]


def test_the_proposed_network_in_the_prose(text: str) -> None:
    assert "precision of 0.891, recall of 0.887, and F1-score of 0.887 with a reduced false positive rate of 0.83" \
        in text
    assert _metrics(paper.TABLE2["rlk_unet_cbam"]) == [0.891, 0.887, 0.887, 0.83]
    assert "precision of 0.854, sensitivity of 0.883, and F1-score of 0.869" in text and "FP_avg = 0.91" in text
    assert _metrics(paper.TABLE4["rlk_unet_cbam"]) == [0.854, 0.883, 0.869, 0.91]


def test_table3_folds_and_average(rows, text: str) -> None:
    folds = [numbers for label, numbers in rows if label.startswith("Fold")]
    assert folds == [_metrics(row) for row in paper.TABLE3_FOLDS]
    average = re.search(r"average precision of (\S+) (\S+), sensitivity of (\S+) (\S+), and F1-score of (\S+) "
                        r"(\S+), while maintaining a low false positive rate of = (\S+) (\S+)\.", text)
    assert average is not None
    values = [float(v.rstrip(",")) for v in average.groups()]
    assert values == [v for m in paper.METRICS for v in paper.TABLE3_MEAN_SD[m]]


def test_table5_cross_modality(rows) -> None:
    got = {label: numbers for label, numbers in rows if label in ("T2*-GRE SWI", "SWI T2*-GRE")}
    assert got["T2*-GRE SWI"] == _metrics(paper.TABLE5["GRE -> SWI"])
    assert got["SWI T2*-GRE"] == _metrics(paper.TABLE5["SWI -> GRE"])


def test_table6_confusion(rows) -> None:
    start = next(i for i, (label, _) in enumerate(rows) if label.startswith("Prediction GT"))
    body = [numbers for _, numbers in rows[start + 1:start + 5]]
    # the first cell of each row is its category (0, 1-4, 5-9; the >=10 label was lost)
    confusion = [numbers[1:] if len(numbers) == 5 else numbers for numbers in body]
    np.testing.assert_array_equal(np.array(confusion), paper.TABLE6_CONFUSION)


def test_tables7_and_8_ablation(rows) -> None:
    labelled = [(label, numbers) for label, numbers in rows if "CBAM" in label]
    table7, table8 = labelled[:2], labelled[2:]
    assert {label: numbers for label, numbers in table7} == {k: _metrics(v) for k, v in paper.TABLE7.items()}
    assert [label for label, _ in table8] == list(paper.TABLE8)
    assert [numbers for _, numbers in table8] == [_metrics(v) for v in paper.TABLE8.values()]


def test_fig4_inference_time_and_test_set(text: str) -> None:
    rho = re.search(r"ρ = (0\.\d+)\) with its 95% confidence interval \(\[(0\.\d\d)(0\.\d\d)\]\)", text)
    assert rho is not None
    assert [float(v) for v in rho.groups()] == [paper.FIG4_SPEARMAN[k] for k in ("rho", "ci_low", "ci_high")]
    assert f"a test set comprising {paper.FIG4_SPEARMAN['n']} subjects" in text
    assert paper.TABLE6_CONFUSION.sum() == paper.FIG4_SPEARMAN["n"] == 72
    assert f"an average of {paper.INFERENCE_SECONDS} s per subject" in text
    assert "506 brain MRI scans collected from three sources" in text
