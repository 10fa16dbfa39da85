"""Tests for cmbstudy.evaluation.stats: Spearman + Fisher z, bootstrap, regression band, mean +/- sd."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmbstudy.evaluation.stats import (
    bootstrap_ci,
    bootstrap_detection_ci,
    format_mean_sd,
    linear_fit_with_band,
    mean_sd,
    spearman_with_ci,
)


def test_spearman_hand_computed_fisher_interval() -> None:
    # ranks of x: 1 2 3 4 5 6; y ranks: 2 1 4 3 6 5 -> d^2 sum = 6 -> rho = 1 - 6*6/(6*35) = 29/35
    x = [1, 2, 3, 4, 5, 6]
    y = [20, 10, 40, 30, 60, 50]
    rho, lo, hi, p, n = spearman_with_ci(x, y)
    assert n == 6 and rho == pytest.approx(29 / 35)
    z = math.atanh(29 / 35)
    half = 1.959963984540054 / math.sqrt(3)
    assert lo == pytest.approx(math.tanh(z - half)) and hi == pytest.approx(math.tanh(z + half))
    assert lo < rho < hi and 0 < p < 0.1


def test_spearman_ci_narrows_with_n(rng: np.random.Generator) -> None:
    widths = []
    for n in (15, 60, 240):
        x = rng.normal(size=n)
        y = x + 0.5 * rng.normal(size=n)
        rho, lo, hi, _, _ = spearman_with_ci(x, y)
        assert lo < rho < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_spearman_paper_figure_numbers() -> None:
    # the paper's rho 0.93 with n = 72 gives about [0.89, 0.96] with the Fisher z interval
    z = math.atanh(0.93)
    half = 1.959963984540054 / math.sqrt(69)
    assert round(math.tanh(z - half), 2) == 0.89 and round(math.tanh(z + half), 2) == 0.96


def test_spearman_edge_cases() -> None:
    rho, lo, hi, p, n = spearman_with_ci([1, 2, 3], [1, 3, 2])
    assert n == 3 and rho == pytest.approx(0.5) and math.isnan(lo) and math.isnan(hi)
    assert math.isnan(spearman_with_ci([1, 1, 1, 1], [1, 2, 3, 4])[0])
    with pytest.raises(ValueError, match="x has 3 values but y has 2"):
        spearman_with_ci([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        spearman_with_ci([1, 2, np.nan, 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="confidence 95"):
        spearman_with_ci([1, 2, 3, 4], [1, 2, 3, 4], confidence=95)


def test_bootstrap_deterministic_from_seed(rng: np.random.Generator) -> None:
    values = rng.normal(loc=2.0, size=40)
    a = bootstrap_ci(values, np.mean, n_resamples=300, seed=7)
    b = bootstrap_ci(values, np.mean, n_resamples=300, seed=7)
    c = bootstrap_ci(values, np.mean, n_resamples=300, seed=8)
    assert a == b and a != c
    estimate, lo, hi = a
    assert estimate == pytest.approx(values.mean()) and lo < estimate < hi


def test_bootstrap_single_subject_and_rows() -> None:
    # one subject: every resample is that subject -> degenerate interval
    assert bootstrap_ci(np.array([[3, 1, 0]]), lambda r: r[:, 0].sum(), 50, 0) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="at least one subject"):
        bootstrap_ci(np.zeros((0, 3)), lambda r: 0.0, 10, 0)


def test_bootstrap_detection_ci_estimates_and_determinism() -> None:
    # pooled tp 3, fp 3, fn 3 over 3 subjects: P = R = F1 = 0.5, FP/subject 1.0
    counts = [(2, 1, 0), (0, 0, 0), (1, 2, 3)]
    out = bootstrap_detection_ci(counts, n_resamples=200, seed=3)
    assert out["precision"][0] == pytest.approx(0.5)
    assert out["recall"][0] == pytest.approx(0.5)
    assert out["f1"][0] == pytest.approx(0.5)
    assert out["fp_per_subject"][0] == pytest.approx(1.0)
    for estimate, lo, hi in out.values():
        assert lo <= estimate <= hi
    # FP/subject can only range over resampled means of (1, 0, 2): within [0, 2]
    assert 0.0 <= out["fp_per_subject"][1] and out["fp_per_subject"][2] <= 2.0
    assert out == bootstrap_detection_ci(counts, n_resamples=200, seed=3)
    with pytest.raises(ValueError, match=r"shape \(n_subjects, 3\)"):
        bootstrap_detection_ci([(1, 2)], 10, 0)


def test_linear_fit_band_exact_line_and_noise(rng: np.random.Generator) -> None:
    # y = 2x + 1 exactly: slope 2, intercept 1, band of zero width
    x = np.arange(10.0)
    fit = linear_fit_with_band(x, 2 * x + 1, grid=[0, 5, 9])
    assert fit.slope == pytest.approx(2) and fit.intercept == pytest.approx(1)
    np.testing.assert_allclose(fit.fit, [1, 11, 19])
    np.testing.assert_allclose(fit.hi - fit.lo, 0, atol=1e-9)
    noisy = linear_fit_with_band(x, 2 * x + 1 + rng.normal(size=10), n_grid=21)
    width = noisy.hi - noisy.lo
    assert noisy.grid.shape == (21,) and (width > 0).all()
    # the band is narrowest at mean x (4.5, grid index 10) and widest at the ends
    assert np.argmin(width) == 10 and width[0] > width[10] < width[-1]
    with pytest.raises(ValueError, match="x is constant"):
        linear_fit_with_band([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 3 pairs"):
        linear_fit_with_band([1, 2], [1, 2])


def test_mean_sd_matches_paper_table_3() -> None:
    # per-fold F1 of the paper's Table 3: 0.887 +/- 0.013 (sample sd)
    folds = [0.897, 0.886, 0.871, 0.903, 0.880]
    mean, sd = mean_sd(folds)
    assert mean == pytest.approx(0.8874) and round(sd, 3) == 0.013
    assert format_mean_sd(folds) == "0.887 ± 0.013"
    assert math.isnan(mean_sd([0.5])[1])
