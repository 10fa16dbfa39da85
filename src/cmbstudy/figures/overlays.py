"""Detection overlays of the study: TP blue, FP yellow, FN red (the paper's Figs. 2-3).

Axis conventions: volumes are (X, Y, Z) arrays in canonical RAS orientation
(:func:`cmbstudy.data.io.to_canonical`; X grows to the patient's right, Y to
anterior, Z to superior) and an axial slice is ``volume[:, :, z]`` (the last
axis). :func:`plot_subject_detections` shows it transposed with
``origin="lower"``: columns are X (patient's right on the right of the image,
neurological convention), rows are Y (anterior at the top). The 2D functions
take slices already in display orientation, (H, W) = (rows, columns), and draw
them with the ``origin`` they are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle
from scipy import ndimage

from ..arrays import as_2d
from ..errors import ConfigError, InputError
from .axes import new_axes, set_view_limits, show_slice

if TYPE_CHECKING:  # types only: figures import no compute module
    from ..evaluation.evaluate import VolumeEvaluation
    from ..evaluation.matching import Match

__all__ = [
    "DETECTION_COLORS",
    "select_lesion_slices",
    "plot_detection_overlay",
    "plot_subject_detections",
]

#: Paper Figs. 2-3: TP blue, FP yellow, FN red.
DETECTION_COLORS: dict[str, str] = {"TP": "dodgerblue", "FP": "yellow", "FN": "red"}


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
    image = as_2d(image_slice, "image slice")
    ref = as_2d(ref_labels_slice, "reference label slice").astype(np.int64)
    pred = as_2d(pred_labels_slice, "predicted label slice").astype(np.int64)
    if not image.shape == ref.shape == pred.shape:
        raise InputError(
            f"image {image.shape}, reference {ref.shape} and prediction {pred.shape} slices differ in shape"
        )
    regions = _regions(ref, pred, match)
    h, w = image.shape
    fig, ax = new_axes(ax, (4.0, 4.0 * h / w))
    show_slice(ax, image, origin)
    _draw_regions(ax, regions, outline, min_radius=0.025 * max(h, w))
    set_view_limits(ax, (0, w - 1, 0, h - 1), origin)
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
        set_view_limits(inset, (x0, x1, y0, y1), origin)
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
        evaluation: the :class:`cmbstudy.evaluation.evaluate.VolumeEvaluation` of this subject
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
