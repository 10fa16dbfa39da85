"""Figures of the study: detection overlays, ARIA-H confusion, count scatter, FROC, training curves.

Every function draws on a given matplotlib Axes or builds its own
:class:`matplotlib.figure.Figure` (never through pyplot's global state, never
``show``), so the module runs under the Agg backend and a notebook displays the
returned Figure once.

Axis conventions: volumes are (X, Y, Z) arrays in canonical RAS orientation
(:func:`cmbstudy.io.to_canonical`; X grows to the patient's right, Y to
anterior, Z to superior) and an axial slice is ``volume[:, :, z]`` (the last
axis). :func:`plot_subject_detections` shows it transposed with
``origin="lower"``: columns are X (patient's right on the right of the image,
neurological convention), rows are Y (anterior at the top). The 2D functions
take slices already in display orientation, (H, W) = (rows, columns), and draw
them with the ``origin`` they are given.

Colour code of the paper's Figs. 2-3 (Cho et al. 2025): true positives blue,
false positives yellow, false negatives red.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle
from matplotlib.ticker import NullFormatter
from scipy import ndimage

from .errors import ConfigError, InputError
from .evaluation import VolumeEvaluation
from .metrics import ARIA_H_CATEGORIES, FrocCurve, Match
from .stats import LinearFit, linear_fit_with_band, spearman_with_ci

__all__ = [
    "DETECTION_COLORS",
    "PAPER_DATASET_LABEL",
    "show_slice",
    "select_lesion_slices",
    "plot_detection_overlay",
    "plot_subject_detections",
    "plot_aria_h_confusion",
    "plot_count_scatter",
    "plot_froc",
    "plot_training_history",
    "format_comparison_table",
]

#: Paper Figs. 2-3: TP blue, FP yellow, FN red.
DETECTION_COLORS: dict[str, str] = {"TP": "dodgerblue", "FP": "yellow", "FN": "red"}
#: Row / column label of the paper's numbers in every comparison.
PAPER_DATASET_LABEL = "paper (VALDO + private cohorts)"
_HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "val_precision", "val_recall", "val_f1", "val_fp_per_subject")


def _as_2d(array: np.ndarray, name: str) -> np.ndarray:
    """Squeeze leading singleton axes ((1, 1, H, W) -> (H, W)); InputError unless 2D remains."""
    arr = np.asarray(array)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2D slice (H, W), got shape {np.shape(array)}")
    return arr


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _set_limits(ax: Axes, box: tuple[float, float, float, float], origin: str) -> None:
    """Show columns x0..x1 and rows y0..y1 (pixel centres) with the image's origin."""
    x0, x1, y0, y1 = box
    ax.set_xlim(x0 - 0.5, x1 + 0.5)
    ax.set_ylim((y0 - 0.5, y1 + 0.5) if origin == "lower" else (y1 + 0.5, y0 - 0.5))


def show_slice(
    ax: Axes, image_slice: np.ndarray, origin: str = "upper", percentiles: tuple[float, float] = (1.0, 99.5)
) -> None:
    """Draw an (H, W) slice in grey with a robust display range (percentiles of its non-zero pixels).

    Raises:
        InputError: the slice is not 2D.
        ConfigError: ``origin`` is not "upper" or "lower".
    """
    if origin not in ("upper", "lower"):
        raise ConfigError(f"origin {origin!r} must be 'upper' or 'lower'")
    img = _as_2d(image_slice, "image slice").astype(float)
    values = img[np.isfinite(img) & (img != 0)]
    lo, hi = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin=origin, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _regions(ref: np.ndarray, pred: np.ndarray, match: Match) -> list[tuple[str, np.ndarray]]:
    """(kind, (H, W) bool) per outcome visible in the slice; a TP is its prediction united with its reference."""
    n_pred, n_ref = match.n_tp + match.n_fp, match.n_tp + match.n_fn
    if pred.max(initial=0) > n_pred or ref.max(initial=0) > n_ref:
        raise InputError(
            f"label slices hold labels up to {pred.max(initial=0)} (prediction) and {ref.max(initial=0)} "
            f"(reference) but the match knows {n_pred} and {n_ref} lesions: pass the labels the match was made from"
        )
    in_pred, in_ref = set(np.unique(pred).tolist()), set(np.unique(ref).tolist())
    out: list[tuple[str, np.ndarray]] = []
    for p, r in match.pairs.tolist():
        if p + 1 in in_pred or r + 1 in in_ref:
            out.append(("TP", (pred == p + 1) | (ref == r + 1)))
    out += [("FP", pred == p + 1) for p in match.fp.tolist() if p + 1 in in_pred]
    out += [("FN", ref == r + 1) for r in match.fn.tolist() if r + 1 in in_ref]
    return out


def _draw_regions(ax: Axes, regions: list[tuple[str, np.ndarray]], outline: str, min_radius: float) -> None:
    for kind, mask in regions:
        color = DETECTION_COLORS[kind]
        if outline == "contour":
            contours = ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.2)
            contours.set_gid(kind)
        else:
            rows, cols = np.nonzero(mask)
            # radius (pixels): equivalent-disc radius of the lesion plus a margin, at least min_radius
            radius = max(float(np.sqrt(rows.size / np.pi)) + 2.0, min_radius)
            centre = (cols.mean(), rows.mean())
            ax.add_patch(Circle(centre, radius, fill=False, edgecolor=color, linewidth=1.3, gid=kind))


def plot_detection_overlay(
    image_slice: np.ndarray,
    ref_labels_slice: np.ndarray,
    pred_labels_slice: np.ndarray,
    match: Match,
    ax: Axes | None = None,
    zoom_box: tuple[float, float, float, float] | None = None,
    origin: str = "upper",
    outline: str = "circle",
    legend: bool = True,
    title: str | None = None,
) -> Figure:
    """One slice with TP (blue), FP (yellow) and FN (red) lesions outlined (paper Figs. 2-3).

    Args:
        image_slice: (H, W) image in display orientation (rows, columns).
        ref_labels_slice: (H, W) the same slice of the reference instance labels
            (``VolumeEvaluation.ref.labels``: 1..n_ref, 0 background).
        pred_labels_slice: (H, W) the same slice of the predicted instance labels.
        match: the volume's match; label ``i + 1`` is lesion index ``i`` of ``match``.
        ax: Axes to draw on; None makes a new Figure.
        zoom_box: (x0, x1, y0, y1) columns and rows (pixels, inclusive) shown enlarged in
            an inset (in the corner farthest from it), for small (< 3 mm) lesions as in Fig. 3.
        origin: "upper" (row 0 at the top) or "lower".
        outline: "circle" (a circle around each lesion, visible even for one voxel) or
            "contour" (the lesion's boundary).
        legend: add a TP / FP / FN legend.
        title: Axes title.

    Returns:
        The Figure holding the Axes. Outlines carry ``gid`` "TP", "FP" or "FN".

    Raises:
        InputError: slices of different shapes, labels the match does not know, a bad zoom box.
        ConfigError: unknown ``outline`` or ``origin``.
    """
    if outline not in ("circle", "contour"):
        raise ConfigError(f"outline {outline!r} must be 'circle' or 'contour'")
    image = _as_2d(image_slice, "image slice")
    ref = _as_2d(ref_labels_slice, "reference label slice").astype(np.int64)
    pred = _as_2d(pred_labels_slice, "predicted label slice").astype(np.int64)
    if not image.shape == ref.shape == pred.shape:
        raise InputError(
            f"image {image.shape}, reference {ref.shape} and prediction {pred.shape} slices differ in shape"
        )
    regions = _regions(ref, pred, match)
    h, w = image.shape
    fig, ax = _new_axes(ax, (4.0, 4.0 * h / w))
    show_slice(ax, image, origin)
    _draw_regions(ax, regions, outline, min_radius=0.025 * max(h, w))
    _set_limits(ax, (0, w - 1, 0, h - 1), origin)
    if zoom_box is not None:
        x0, x1, y0, y1 = (float(v) for v in zoom_box)
        if not (0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1):
            raise InputError(
                f"zoom box {tuple(zoom_box)} must satisfy 0 <= x0 < x1 <= {w - 1}, 0 <= y0 < y1 <= {h - 1}"
            )
        # inset in the corner of the Axes farthest from the zoomed region
        fx = (x0 + x1) / 2 / w
        fy = (y0 + y1) / 2 / h if origin == "lower" else 1 - (y0 + y1) / 2 / h
        inset = ax.inset_axes([0.6 if fx < 0.5 else 0.02, 0.6 if fy < 0.5 else 0.02, 0.38, 0.38])
        show_slice(inset, image, origin)
        _draw_regions(inset, regions, outline, min_radius=0.08 * max(x1 - x0, y1 - y0))
        _set_limits(inset, (x0, x1, y0, y1), origin)
        for spine in inset.spines.values():
            spine.set_edgecolor("white")
        ax.indicate_inset_zoom(inset, edgecolor="white")
    if legend:
        handles = [
            Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor=c, label=k)
            for k, c in DETECTION_COLORS.items()
        ]
        ax.legend(
            handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize="x-small", frameon=False
        )
    if title:
        ax.set_title(title, fontsize="small")
    return fig


def select_lesion_slices(labels: Sequence[np.ndarray], n_slices: int = 4) -> list[int]:
    """Axial slices (last axis) crossed by the most lesions, at most ``n_slices``, in ascending order.

    A slice's score is the number of components of all ``labels`` volumes that
    touch it (ties: lower index first). Without any lesion, ``n_slices`` evenly
    spaced slices from the central 40 % of the volume.

    Args:
        labels: (X, Y, Z) instance-label volumes, e.g. ``(evaluation.ref.labels, evaluation.pred.labels)``.
        n_slices: how many slices at most.

    Raises:
        InputError: no volume, volumes of different shapes, or ``n_slices`` < 1.
    """
    if n_slices < 1:
        raise InputError(f"n_slices must be >= 1, got {n_slices}")
    shapes = {np.shape(v) for v in labels}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise InputError(f"label volumes must be 3D (X, Y, Z) of one shape, got {sorted(shapes)}")
    nz = next(iter(shapes))[2]
    counts = np.zeros(nz, dtype=np.int64)
    for volume in labels:
        for box in ndimage.find_objects(np.asarray(volume, dtype=np.int64)):
            if box is not None:
                counts[box[2]] += 1
    if counts.any():
        order = np.lexsort((np.arange(nz), -counts))
        return sorted(int(z) for z in order[: min(n_slices, int((counts > 0).sum()))])
    return sorted({int(z) for z in np.linspace(0.3 * (nz - 1), 0.7 * (nz - 1), n_slices).round()})


def _small_lesion_box(
    evaluation: VolumeEvaluation, z: int, shape_xy: tuple[int, int]
) -> tuple[float, float, float, float] | None:
    """Zoom box (display x0, x1, y0, y1) around the first small reference lesion in slice z, or None."""
    ref_slice = evaluation.ref.labels[:, :, z]
    small = np.flatnonzero(evaluation.ref_small)
    present = [i for i in small.tolist() if (ref_slice == i + 1).any()]
    if not present:
        return None
    xs, ys = np.nonzero(ref_slice == present[0] + 1)  # display: column = X, row = Y
    nx, ny = shape_xy
    half = max(6.0, 0.08 * max(nx, ny))
    cx = float(np.clip(xs.mean(), half, nx - 1 - half))
    cy = float(np.clip(ys.mean(), half, ny - 1 - half))
    return (max(cx - half, 0.0), min(cx + half, nx - 1.0), max(cy - half, 0.0), min(cy + half, ny - 1.0))


def plot_subject_detections(
    image: np.ndarray,
    evaluation: VolumeEvaluation,
    slices: Sequence[int] | None = None,
    n_slices: int = 4,
    title: str | None = None,
    zoom_small: bool = True,
    outline: str = "circle",
) -> Figure:
    """Axial slices of one subject: the image (top row) and its detections (bottom row), paper Fig. 2.

    Args:
        image: (X, Y, Z) image in canonical RAS on the grid of the evaluation (axial = last axis).
        evaluation: the :class:`cmbstudy.evaluation.VolumeEvaluation` of this subject
            (``ref``, ``pred`` lesions, ``match``, ``ref_small``).
        slices: axial indices to show; None picks the slices with the most lesions
            (:func:`select_lesion_slices`, at most ``n_slices``).
        n_slices: number of slices when ``slices`` is None.
        title: figure title.
        zoom_small: add a zoom inset around a reference lesion <= 3 mm in slices that hold one (Fig. 3).
        outline: "circle" or "contour" (see :func:`plot_detection_overlay`).

    Returns:
        Figure with 2 x len(slices) image Axes (plus one inset per zoomed slice).

    Raises:
        InputError: ``image`` is not 3D, its shape differs from the evaluation's, a slice is out of range.
    """
    image = np.asarray(image)
    labels_shape = evaluation.ref.labels.shape
    if image.ndim != 3 or image.shape != labels_shape:
        raise InputError(f"image shape {image.shape} must be the evaluated volume's (X, Y, Z) shape {labels_shape}")
    if slices is None:
        slices = select_lesion_slices([evaluation.ref.labels, evaluation.pred.labels], n_slices)
    slices = [int(z) for z in slices]
    bad = [z for z in slices if not 0 <= z < image.shape[2]]
    if not slices or bad:
        raise InputError(f"axial slices {bad or slices} must be non-empty and within 0..{image.shape[2] - 1}")
    nx, ny = image.shape[:2]
    fig = Figure(figsize=(2.6 * len(slices), 2.6 * 2 * ny / nx + 0.4), layout="constrained")
    axes = fig.subplots(2, len(slices), squeeze=False)
    for col, z in enumerate(slices):
        show_slice(axes[0, col], image[:, :, z].T, origin="lower")
        axes[0, col].set_title(f"z = {z}", fontsize="small")
        box = _small_lesion_box(evaluation, z, (nx, ny)) if zoom_small else None
        plot_detection_overlay(
            image[:, :, z].T, evaluation.ref.labels[:, :, z].T, evaluation.pred.labels[:, :, z].T,
            evaluation.match, ax=axes[1, col], zoom_box=box, origin="lower", outline=outline,
            legend=col == 0,
        )
    if title:
        fig.suptitle(title)
    return fig


def _check_confusion(matrix: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(matrix)
    if arr.shape != (4, 4) or not np.all(np.isfinite(arr)) or (arr < 0).any() or not np.all(arr == np.round(arr)):
        raise InputError(f"{name} ARIA-H confusion must be a 4x4 matrix of non-negative counts, got {arr.tolist()}")
    return arr.astype(np.int64)


def plot_aria_h_confusion(
    confusion: np.ndarray,
    paper: np.ndarray | None = None,
    ours_label: str = "ours",
    paper_label: str = PAPER_DATASET_LABEL,
) -> Figure:
    """Heatmap of the 4x4 ARIA-H confusion (rows reference, columns predicted; paper Table 6), the paper's beside it.

    Each title gives the agreement: subjects on the diagonal / all subjects.

    Args:
        confusion: (4, 4) subject counts, categories :data:`cmbstudy.metrics.ARIA_H_CATEGORIES`.
        paper: optional (4, 4) matrix of the paper, drawn on a second Axes.
        ours_label, paper_label: the titles' dataset labels.

    Raises:
        InputError: a matrix is not 4x4 non-negative counts.
    """
    panels = [(ours_label, _check_confusion(confusion, "our"))]
    if paper is not None:
        panels.append((paper_label, _check_confusion(paper, "the paper's")))
    fig = Figure(figsize=(3.6 * len(panels), 3.4), layout="constrained")
    for ax, (label, matrix) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        frame = pd.DataFrame(matrix, index=list(ARIA_H_CATEGORIES), columns=list(ARIA_H_CATEGORIES))
        sns.heatmap(frame, annot=True, fmt="d", cmap="Blues", cbar=False, square=True, linewidths=0.5, ax=ax)
        total = int(matrix.sum())
        agree = int(np.trace(matrix))
        share = f" ({100 * agree / total:.0f}%)" if total else ""
        ax.set_title(f"{label}\n{agree}/{total} agree{share}", fontsize="small")
        ax.set_xlabel("predicted ARIA-H category")
        ax.set_ylabel("reference ARIA-H category")
    return fig


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def plot_count_scatter(
    true_counts: Sequence[float],
    pred_counts: Sequence[float],
    fit: LinearFit | None = None,
    ax: Axes | None = None,
    paper: Mapping[str, float] | None = None,
    confidence: float = 0.95,
) -> Figure:
    """Predicted vs reference CMB count per subject with Spearman rho, Fisher-z CI and a regression band (paper Fig. 4).

    Args:
        true_counts, pred_counts: (n,) CMB counts per subject.
        fit: regression of predicted on reference counts
            (:func:`cmbstudy.stats.linear_fit_with_band`); None computes it, and leaves
            the line out when it is undefined (fewer than 3 subjects, constant counts).
        ax: Axes to draw on; None makes a new Figure.
        paper: optional paper values with keys ``rho``, ``ci_low``, ``ci_high``, ``n``
            (0.93, 0.89, 0.96, 72), printed under ours.
        confidence: coverage of the CI and of the band.

    Returns:
        The Figure; the line has ``gid`` "fit", the band "band".

    Raises:
        ValueError: from :func:`cmbstudy.stats.spearman_with_ci` (lengths differ, fewer than 2 subjects).
    """
    rho, lo, hi, p, n = spearman_with_ci(true_counts, pred_counts, confidence)
    x, y = np.asarray(true_counts, dtype=float), np.asarray(pred_counts, dtype=float)
    if fit is None:
        try:
            fit = linear_fit_with_band(x, y, confidence=confidence)
        except ValueError:
            fit = None
    fig, ax = _new_axes(ax, (4.2, 4.0))
    top = max(float(x.max()), float(y.max()), 1.0)
    ax.plot([0, top], [0, top], linestyle=":", color="grey", linewidth=1, label="y = x")
    ax.scatter(x, y, s=22, alpha=0.6, color="tab:blue", edgecolor="none", label="subjects")
    if fit is not None:
        band = f"{confidence:.0%} band"
        ax.fill_between(fit.grid, fit.lo, fit.hi, color="tab:red", alpha=0.2, gid="band", label=band)
        ax.plot(fit.grid, fit.fit, color="tab:red", gid="fit", label=f"fit y = {fit.slope:.2f} x + {fit.intercept:.2f}")
    p_text = "p < 0.001" if np.isfinite(p) and p < 1e-3 else f"p = {_fmt(p, 3)}"
    lines = [f"Spearman ρ = {_fmt(rho)} ({confidence:.0%} CI {_fmt(lo)}–{_fmt(hi)}), {p_text}, n = {n}"]
    if paper is not None:
        lines.append(
            f"paper: ρ = {_fmt(paper['rho'])} (CI {_fmt(paper['ci_low'])}–{_fmt(paper['ci_high'])}), "
            f"n = {int(paper['n'])}"
        )
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, va="top", fontsize="x-small", gid="stats")
    ax.set_xlabel("reference CMB count")
    ax.set_ylabel("predicted CMB count")
    ax.legend(loc="lower right", fontsize="x-small")
    return fig


def plot_froc(
    curves: Mapping[str, FrocCurve],
    ax: Axes | None = None,
    fp_rates: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0),
    title: str | None = None,
) -> Figure:
    """FROC curves of several methods on one Axes: sensitivity vs false positives per subject (log x).

    Points with 0 FP/subject are drawn near the left edge of the log axis (at half
    the smallest positive value shown). Dotted verticals mark ``fp_rates``.

    Args:
        curves: method name -> :class:`cmbstudy.metrics.FrocCurve`; each line has ``gid`` = its name.
        ax: Axes to draw on; None makes a new Figure.
        fp_rates: FP/subject rates to mark.
        title: Axes title.

    Raises:
        InputError: no curve.
    """
    if not curves:
        raise InputError("plot_froc needs at least one FROC curve")
    positive = [c.fp_per_subject[c.fp_per_subject > 0] for c in curves.values()]
    smallest = min([float(v.min()) for v in positive if v.size] + [min(fp_rates, default=1.0)])
    floor = smallest / 2
    fig, ax = _new_axes(ax, (4.8, 3.6))
    for name, curve in curves.items():
        ax.step(np.maximum(curve.fp_per_subject, floor), curve.sensitivity, where="post", label=name, gid=name)
    for rate in fp_rates:
        ax.axvline(rate, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlim(left=floor / 1.5)
    if len(fp_rates):
        ax.set_xticks(list(fp_rates), [f"{r:g}" for r in fp_rates])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per subject")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_training_history(history: pd.DataFrame, title: str | None = None) -> Figure:
    """Loss, learning rate, validation P/R/F1 and validation FP/subject per epoch (``RUN/history.csv``).

    Four Axes (2 x 2). Validation columns are empty on epochs without validation;
    those epochs are skipped. The best validation F1 (the selected checkpoint) is starred.

    Args:
        history: columns epoch, lr, train_loss, val_precision, val_recall, val_f1,
            val_fp_per_subject (val_loss drawn when present), as written by :mod:`cmbstudy.training`.
        title: figure title.

    Raises:
        InputError: a column is missing or the history is empty.
    """
    missing = [c for c in _HISTORY_COLUMNS if c not in history.columns]
    if missing or history.empty:
        raise InputError(f"training history lacks column(s) {missing} or rows: read a history.csv written by training")
    fig = Figure(figsize=(8.0, 5.6), layout="constrained")
    (ax_loss, ax_lr), (ax_f1, ax_fp) = fig.subplots(2, 2)
    epoch = history["epoch"].to_numpy()
    ax_loss.plot(epoch, history["train_loss"], label="train")
    if "val_loss" in history.columns and history["val_loss"].notna().any():
        val = history.dropna(subset=["val_loss"])
        ax_loss.plot(val["epoch"], val["val_loss"], marker=".", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss (Dice + focal)")
    ax_loss.legend(fontsize="small")
    ax_lr.plot(epoch, history["lr"], color="tab:green")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", yscale="log")
    val = history.dropna(subset=["val_f1"])
    for column in ("val_precision", "val_recall", "val_f1"):
        ax_f1.plot(val["epoch"], val[column], marker=".", label=column.removeprefix("val_"))
    if not val.empty:
        best = val.loc[val["val_f1"].idxmax()]
        ax_f1.plot(
            [best["epoch"]], [best["val_f1"]], marker="*", markersize=12, color="k", linestyle="none", label="best F1"
        )
    ax_f1.set(xlabel="epoch", ylabel="validation (lesion-wise)", ylim=(0, 1.02))
    ax_f1.legend(fontsize="small")
    ax_fp.plot(val["epoch"], val["val_fp_per_subject"], marker=".", color="tab:orange")
    ax_fp.set(xlabel="epoch", ylabel="validation FP per subject")
    if title:
        fig.suptitle(title)
    return fig


def format_comparison_table(
    ours: Mapping[str, float],
    paper: Mapping[str, float],
    dataset_label: str,
    paper_label: str = PAPER_DATASET_LABEL,
) -> pd.DataFrame:
    """The paper's figures beside ours, one row per metric, each column labelled by its dataset.

    Columns: ``paper_label`` (default "paper (VALDO + private cohorts)"),
    ``"ours (<dataset_label>)"`` (e.g. "ours (synthetic cohort)") and
    ``"ours - paper"``. Rows: the paper's metrics in its order, then any metric only
    we report; a metric one side lacks is NaN.

    Raises:
        ConfigError: ``dataset_label`` is empty.
    """
    if not str(dataset_label).strip():
        raise ConfigError("dataset_label must name the data our numbers come from, e.g. 'synthetic cohort'")
    metrics = list(paper) + [k for k in ours if k not in paper]
    ours_col = f"ours ({dataset_label})"
    frame = pd.DataFrame(
        {
            paper_label: [float(paper.get(m, np.nan)) for m in metrics],
            ours_col: [float(ours.get(m, np.nan)) for m in metrics],
        },
        index=pd.Index(metrics, name="metric"),
    )
    frame["ours - paper"] = frame[ours_col] - frame[paper_label]
    return frame
