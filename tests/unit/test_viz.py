"""Study figures: detection overlay colour code, slice choice, Fig. 4 scatter, FROC, history, tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from cmbstudy import figures as viz
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.evaluation.evaluate import evaluate_volume
from cmbstudy.evaluation.matching import Match
from cmbstudy.evaluation.scores import compute_froc
from cmbstudy.evaluation.stats import compute_count_agreement, linear_fit_with_band
from cmbstudy.figures import overlays

SHAPE = (31, 32, 33)  # (X, Y, Z), uneven so that axis mix-ups fail


def _patches(ax, kind: str) -> list:
    return [p for p in ax.patches if p.get_gid() == kind]


def _slice_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, Match]:
    """(20, 24) slice: pred 1 matches ref 1 (TP), pred 2 is FP, ref 2 is FN."""
    image = np.arange(20 * 24, dtype=float).reshape(20, 24)
    pred = np.zeros((20, 24), int)
    ref = np.zeros((20, 24), int)
    pred[3:5, 4:6] = 1
    ref[3:5, 5:7] = 1
    pred[15, 20] = 2
    ref[10:12, 2] = 2
    match = Match(np.array([[0, 0]]), np.array([1]), np.array([1]), 1, 1, 1)
    return image, ref, pred, match


def test_overlay_colour_code_and_positions() -> None:
    image, ref, pred, match = _slice_case()
    fig = overlays.plot_detection_overlay(image, ref, pred, match)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    for kind, colour in (("TP", "dodgerblue"), ("FP", "yellow"), ("FN", "red")):
        (circle,) = _patches(ax, kind)
        assert circle.get_edgecolor() == to_rgba(colour)
    r, g, b, _ = _patches(ax, "TP")[0].get_edgecolor()
    assert b > r and b > g  # blue
    # the TP circle surrounds the union of prediction (cols 4-5) and reference (cols 5-6), rows 3-4
    assert _patches(ax, "TP")[0].center == pytest.approx((5.0, 3.5))
    assert _patches(ax, "FP")[0].center == pytest.approx((20.0, 15.0))
    assert _patches(ax, "FN")[0].center == pytest.approx((2.0, 10.5))
    assert len(ax.get_legend().get_texts()) == 3


def test_overlay_contours_zoom_and_errors() -> None:
    image, ref, pred, match = _slice_case()
    fig = overlays.plot_detection_overlay(image, ref, pred, match, outline="contour", zoom_box=(1, 9, 1, 7), legend=False)
    ax = fig.axes[0]
    contours = {c.get_gid(): c for c in ax.collections if c.get_gid() in overlays.DETECTION_COLORS}
    assert set(contours) == {"TP", "FP", "FN"}
    assert tuple(contours["FN"].get_edgecolor()[0]) == to_rgba("red")
    (inset,) = ax.child_axes
    assert inset.get_xlim() == pytest.approx((0.5, 9.5))
    assert inset.get_ylim() == pytest.approx((7.5, 0.5))  # origin "upper": rows grow downwards
    with pytest.raises(InputError, match="zoom box"):
        overlays.plot_detection_overlay(image, ref, pred, match, zoom_box=(5, 2, 0, 4))
    with pytest.raises(InputError, match="match knows"):
        overlays.plot_detection_overlay(image, ref, np.where(pred == 2, 3, pred), match)
    with pytest.raises(ConfigError, match="outline"):
        overlays.plot_detection_overlay(image, ref, pred, match, outline="box")
    with pytest.raises(InputError, match="differ in shape"):
        overlays.plot_detection_overlay(image[:, :-1], ref, pred, match)


def test_select_lesion_slices_hand_counted() -> None:
    ref = np.zeros(SHAPE, int)
    pred = np.zeros(SHAPE, int)
    ref[2, 2, 10:13] = 1  # z 10, 11, 12
    ref[9, 9, 11] = 2  # z 11
    pred[2, 2, 11:13] = 1  # z 11, 12
    pred[20, 20, 30] = 2  # z 30
    # counts: z10 1, z11 3, z12 2, z30 1
    assert overlays.select_lesion_slices([ref, pred], 2) == [11, 12]
    assert overlays.select_lesion_slices([ref, pred], 3) == [10, 11, 12]
    assert overlays.select_lesion_slices([ref, pred], 10) == [10, 11, 12, 30]
    assert overlays.select_lesion_slices([np.zeros(SHAPE, int)], 3) == [10, 16, 22]
    with pytest.raises(InputError, match="one shape"):
        overlays.select_lesion_slices([ref, pred[:, :, :5]])


def _evaluation() -> tuple[np.ndarray, object]:
    ref = np.zeros(SHAPE, np.uint8)
    prob = np.zeros(SHAPE, np.float32)
    ref[5:7, 20:22, 10] = 1  # TP at x 5.5, y 20.5
    prob[5:7, 20:22, 10] = 0.9
    ref[25, 3, 10:12] = 1  # FN
    prob[14:16, 8:10, 12] = 0.8  # FP
    return np.random.default_rng(3).normal(size=SHAPE), evaluate_volume(prob, ref, np.eye(4))


def test_subject_detections_axes_and_orientation() -> None:
    image, ev = _evaluation()
    fig = overlays.plot_subject_detections(image, ev, n_slices=4, title="sub-001")
    assert len(fig.axes) == 6  # 3 lesion slices (z 10, 11, 12), image and overlay rows
    assert [a.get_title() for a in fig.axes[:3]] == ["z = 10", "z = 11", "z = 12"]
    overlay_z10 = fig.axes[3]
    (tp,) = _patches(overlay_z10, "TP")
    # display: columns = X, rows = Y, origin lower
    assert tp.center == pytest.approx((5.5, 20.5))
    assert overlay_z10.get_ylim()[0] < overlay_z10.get_ylim()[1]
    assert overlay_z10.child_axes  # the 1-voxel-thick lesions are <= 3 mm: zoom inset
    assert _patches(fig.axes[5], "FP") and not _patches(fig.axes[5], "TP")
    fig = overlays.plot_subject_detections(image, ev, slices=[12], zoom_small=False)
    assert len(fig.axes) == 2 and not fig.axes[1].child_axes
    with pytest.raises(InputError, match="shape"):
        overlays.plot_subject_detections(image[:, :, :-1], ev)
    with pytest.raises(InputError, match="within 0..32"):
        overlays.plot_subject_detections(image, ev, slices=[33])


def test_aria_h_confusion() -> None:
    paper = np.array([[6, 2, 0, 0], [2, 46, 2, 0], [0, 2, 6, 1], [0, 0, 1, 4]])
    ours = np.array([[3, 1, 0, 0], [0, 5, 1, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    fig = viz.plot_aria_h_confusion(ours, paper=paper, ours_label="ours (synthetic cohort)")
    assert len(fig.axes) == 2
    assert "11/13 agree (85%)" in fig.axes[0].get_title()
    assert "62/72 agree (86%)" in fig.axes[1].get_title()
    assert "46" in [t.get_text() for t in fig.axes[1].texts]
    assert len(viz.plot_aria_h_confusion(ours).axes) == 1
    with pytest.raises(InputError, match="4x4"):
        viz.plot_aria_h_confusion(np.ones((3, 4)))
    with pytest.raises(InputError, match="non-negative"):
        viz.plot_aria_h_confusion(-ours)


def test_count_scatter_statistics_and_band() -> None:
    true = [0, 1, 2, 3, 5, 8, 12]
    pred = [0, 2, 3, 4, 6, 9, 15]  # strictly increasing with true: rho = 1
    fig = viz.plot_count_scatter(true, pred, compute_count_agreement(true, pred),
                                 paper={"rho": 0.93, "ci_low": 0.89, "ci_high": 0.96, "n": 72})
    ax = fig.axes[0]
    (text,) = [t for t in ax.texts if t.get_gid() == "stats"]
    assert "ρ = 1.00" in text.get_text() and "n = 7" in text.get_text()
    assert "paper: ρ = 0.93 (CI 0.89–0.96), n = 72" in text.get_text()
    (line,) = [l for l in ax.lines if l.get_gid() == "fit"]
    fit = linear_fit_with_band(true, pred)
    assert line.get_ydata() == pytest.approx(fit.fit)
    assert [c for c in ax.collections if c.get_gid() == "band"]
    # constant reference counts: no regression line, rho undefined
    fig = viz.plot_count_scatter([2, 2, 2], [1, 2, 3], compute_count_agreement([2, 2, 2], [1, 2, 3]))
    assert not [l for l in fig.axes[0].lines if l.get_gid() == "fit"]
    assert "ρ = n/a" in fig.axes[0].texts[0].get_text()


def test_froc_curves_on_log_axis() -> None:
    a = compute_froc([np.array([0.9, 0.8, 0.3]), np.array([0.7, 0.2])],
                     [np.array([1, 1, 0], bool), np.array([1, 0], bool)], 4, 2)
    b = compute_froc([np.array([0.9, 0.6])], [np.array([True, False])], 2, 1)
    fig = viz.plot_froc({"with CBAM": a, "without CBAM": b})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {l.get_gid(): l for l in ax.lines if l.get_gid()}
    assert set(lines) == {"with CBAM", "without CBAM"}
    # zero FP/subject is drawn at half the smallest positive value (0.5 / 2)
    assert lines["with CBAM"].get_xdata()[0] == pytest.approx(0.25)
    assert lines["with CBAM"].get_ydata()[-1] == pytest.approx(0.75)
    with pytest.raises(InputError, match="at least one"):
        viz.plot_froc({})


def test_training_history() -> None:
    nan = np.nan
    history = pd.DataFrame({
        "epoch": [0, 1, 2, 3], "lr": [1e-7, 5e-5, 1e-4, 8e-5], "train_loss": [1.0, 0.7, 0.5, 0.4],
        "val_loss": [nan, 0.6, nan, 0.5], "val_precision": [nan, 0.4, nan, 0.5],
        "val_recall": [nan, 0.6, nan, 0.5], "val_f1": [nan, 0.48, nan, 0.5],
        "val_fp_per_subject": [nan, 3.0, nan, 2.0], "seconds": [1.0] * 4,
    })
    fig = viz.plot_training_history(history)
    assert len(fig.axes) == 4
    ax_f1 = fig.axes[2]
    (star,) = [l for l in ax_f1.lines if l.get_label() == "best F1"]
    assert list(star.get_xdata()) == [3]
    assert fig.axes[1].get_yscale() == "log"
    with pytest.raises(InputError, match="val_f1"):
        viz.plot_training_history(history.drop(columns="val_f1"))


def test_count_difference_bias_and_limits() -> None:
    from cmbstudy.figures.burden import plot_count_difference

    fig = plot_count_difference([0, 2, 4], [1, 2, 7])  # differences 1, 0, 3: bias 4/3, sd sqrt(7/3)
    ax = fig.axes[0]
    bias = [line.get_ydata()[0] for line in ax.lines if line.get_gid() == "bias"]
    loa = sorted(line.get_ydata()[0] for line in ax.lines if line.get_gid() == "loa")
    assert bias == pytest.approx([4 / 3])
    half = 1.96 * np.sqrt(7 / 3)
    assert loa == pytest.approx([4 / 3 - half, 4 / 3 + half])
    assert not [line for line in plot_count_difference([1], [2]).axes[0].lines if line.get_gid() == "loa"]
    with pytest.raises(InputError, match="as many predicted"):
        plot_count_difference([1, 2], [1])


def test_fp_breakdown_bars() -> None:
    from cmbstudy.figures.false_positives import plot_fp_breakdown

    summary = pd.DataFrame({"per_subject": [2.0, 0.5]}, index=pd.Index(["vein", "other"], name="mimic"))
    ax = plot_fp_breakdown(summary, title="t").axes[0]
    assert [p.get_width() for p in ax.patches] == [2.0, 0.5]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["vein", "other"]
    with pytest.raises(InputError, match="per_subject"):
        plot_fp_breakdown(pd.DataFrame())


def test_froc_marks_each_operating_point() -> None:
    curve = compute_froc([np.array([0.9, 0.5])], [np.array([True, False])], 1, 1)
    fig = viz.plot_froc({"ours": curve, "floor": curve}, marks={"ours": (0.0, 1.0), "floor": (float("nan"), 0.5)})
    ax = fig.axes[0]
    marks = [line for line in ax.lines if line.get_gid() == "ours operating point"]
    assert len(marks) == 1 and marks[0].get_ydata()[0] == 1.0
    assert marks[0].get_xdata()[0] > 0  # 0 FP/subject drawn at the left edge of the log axis
    assert not [line for line in ax.lines if line.get_gid() == "floor operating point"]  # unknown: not drawn


def test_learning_curve_and_time_breakdown() -> None:
    points = pd.DataFrame({"seed": [0, 0, 1, 1], "epochs": [5, 10, 5, 10], "train_seconds": [60, 120, 61, 119],
                           "f1": [0.3, 0.4, 0.32, 0.38], "f1_ci_low": [0.2, 0.3, 0.22, 0.28],
                           "f1_ci_high": [0.4, 0.5, 0.42, 0.48]})
    fig = viz.plot_learning_curve(points, marked_epochs=10)
    gids = [line.get_gid() for line in fig.axes[0].lines]
    assert gids.count("seed 0") == 1 and "seed 1 profile point" in gids
    ringed = next(line for line in fig.axes[0].lines if line.get_gid() == "seed 0 profile point")
    assert ringed.get_xdata()[0] == pytest.approx(2.0) and ringed.get_ydata()[0] == pytest.approx(0.4)
    with pytest.raises(InputError, match="lack column"):
        viz.plot_learning_curve(points.drop(columns="f1_ci_low"))
    runs = pd.DataFrame({"training": [120.0, 60.0], "test prediction": [90.0, 30.0], "other": [30.0, 10.0],
                         "notebook": [240.0, 100.0]}, index=pd.Index(["a-fold0", "b-fold0"], name="run"))
    fig = viz.plot_time_breakdown(runs)
    bars = [p for p in fig.axes[0].patches if p.get_gid() == "other"]
    assert len(bars) == 2 and bars[0].get_x() + bars[0].get_width() == pytest.approx(4.0)  # minutes, stacked
    with pytest.raises(InputError, match="one row per run"):
        viz.plot_time_breakdown(runs.iloc[:0])


def test_candidates_figure_draws_every_kind_and_refuses_an_unknown_one(rng: np.random.Generator) -> None:
    import matplotlib.pyplot as plt

    from cmbstudy.figures.candidates import CANDIDATE_STYLES, plot_candidates

    image = rng.normal(size=(40, 30))
    points = {"screened out": np.array([[2.0, 3.0], [30.0, 4.0]]),
              "dropped": np.array([[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]), "kept, CMB": np.array([[20.0, 15.0]]),
              "kept, not a CMB": np.zeros((0, 2)), "reference": np.array([[20.0, 15.5]])}
    fig = plot_candidates(image, points, title="two looks")
    ax = fig.axes[0]
    drawn = {c.get_gid(): len(c.get_offsets()) for c in ax.collections}
    assert drawn == {kind: len(points[kind]) for kind in CANDIDATE_STYLES}
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["dropped by the screen (2)",
                                                                       "dropped by the second look (3)"]
    assert ax.images[0].get_array().shape == (30, 40)  # drawn transposed: rows Y, columns X
    with pytest.raises(InputError, match="unknown kinds"):
        plot_candidates(image, {"maybe": np.zeros((0, 2))})
    with pytest.raises(InputError, match=r"\(n, 2\)"):
        plot_candidates(image, {"dropped": np.zeros((3, 3))})
    plt.close("all")
