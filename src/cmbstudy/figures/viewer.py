"""Interactive scan viewers that work offline: in the book, and beside ``cmbstudy detect``'s reports.

A viewer shows a scan (and its phase, where there is one) in NiiVue, with an outline around each
*mark*: the study's true positives, false positives and missed CMBs in the colours of Figs. 2-3
(TP blue, FP yellow, FN red), a user's detections, or the synthetic cohort's CMBs and mimics.
Beside the canvas are the plane buttons (axial, coronal, sagittal, all three), the outline toggle
and a table of the marks: a click on a row moves the crosshair to the mark, and the mark nearest
the crosshair or the pointer is named with its probability and diameter.

The page carries everything it needs: the volumes as base64 gzipped NIfTI (the image windowed to
8 bits, the outlines as 8-bit codes of their marks' kinds), in the page or in a data file beside it that is read when
its scan is picked (:func:`write_linked_viewer`), and two scripts beside it, ``niivue.umd.js`` (NiiVue, from
the npm registry, the version pinned in the project's ``package-lock.json``, BSD-2-Clause; ``npm ci``
in the project's root, which ``make setup`` runs, puts it in ``node_modules/``) and ``cmb-viewer.js``
(the controls); :func:`cmbstudy.data.viewer_assets.install_viewer_assets` copies both, with a notice
of NiiVue's version and licence. No address outside the page's folder is used, so a
reader needs no network.

The marks are built from the study's arrays by :mod:`cmbstudy.figures.viewer_marks`.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from matplotlib.colors import to_rgb
from scipy import ndimage

from ..data.io import write_text_atomically
from ..data.viewer_assets import NIIVUE_SCRIPT, VIEWER_SCRIPT
from ..errors import InputError
from .overlays import DETECTION_COLORS

__all__ = [
    "KIND_COLORS",
    "ViewerMark",
    "ViewerScan",
    "ViewerEntry",
    "outline_regions",
    "encode_nifti",
    "content_box",
    "scan_payload",
    "viewer_html",
    "write_viewer_page",
    "write_scan_data",
    "write_linked_viewer",
]

#: Outline colour of each kind of mark: the study's outcomes as in Figs. 2-3, a user's detections,
#: and the synthetic cohort's CMBs and mimics (:data:`cmbstudy.synth.phantom.MIMIC_LABELS`).
KIND_COLORS: dict[str, str] = {
    **DETECTION_COLORS, "detection": "yellow", "CMB": "dodgerblue", "vein": "magenta",
    "calcification": "cyan", "air-tissue artefact": "orange", "deep-nuclei iron": "lime",
}
_IMAGE_PERCENTILES = (0.5, 99.5)  # the 8-bit window of an image, over its non-zero voxels
_BOX_MARGIN = 4  # voxels kept around the head and the marks when a scan is cropped for the viewer


@dataclass(frozen=True)
class ViewerMark:
    """One outlined place of a scan, a row of the viewer's table."""

    kind: str  # a key of KIND_COLORS: TP, FP, FN, detection, CMB or a mimic
    name: str  # shown in the table and the read-out, e.g. "FP 3"
    voxel: tuple[int, int, int]  # where the crosshair goes: the mark's centre, array indices of the scan
    probability: float | None = None  # the detector's highest probability in it
    diameter_mm: float | None = None
    note: str = ""


@dataclass(frozen=True)
class ViewerScan:
    """A scan as a viewer shows it.

    Attributes:
        key: a short name unique on the page (letters, digits, ``-`` and ``_``).
        title: what the scan picker says.
        images: (name, (X, Y, Z) array) pairs; the first is shown first, e.g. magnitude then phase.
        affine: 4x4 voxel-to-mm affine shared by the images and ``regions``.
        regions: (X, Y, Z) int, 0 outside every mark, ``k`` on the voxels of ``marks[k - 1]``.
        marks: the outlined places, in table order.
        caption: a sentence under the table (what the marks are, where they came from).
        focus: the 1-based mark the viewer opens at (its first when 0 or out of range).
    """

    key: str
    title: str
    images: tuple[tuple[str, np.ndarray], ...]
    affine: np.ndarray
    regions: np.ndarray
    marks: tuple[ViewerMark, ...]
    caption: str = ""
    focus: int = 0


@dataclass(frozen=True)
class ViewerEntry:
    """What a page needs of a scan whose volumes are in a data file (:func:`write_scan_data`): its table."""

    key: str
    title: str
    marks: tuple[ViewerMark, ...]
    caption: str = ""


def outline_regions(regions: np.ndarray, radius: int = 2) -> np.ndarray:
    """A ring around each region in its own axial slices, leaving the region itself uncovered.

    Args:
        regions: (X, Y, Z) int labels, 0 background.
        radius: in-plane distance (voxels) of the ring's outer edge from the region.

    Returns:
        (X, Y, Z) uint16: a region's label on the voxels 2..``radius`` voxels from it in the same
        axial slice (the highest label where rings meet), 0 elsewhere and on every region.

    Raises:
        InputError: not 3D, negative labels or labels beyond 16 bits.
    """
    regions = np.asarray(regions)
    if regions.ndim != 3 or (regions.size and (regions.min() < 0 or regions.max() > np.iinfo(np.uint16).max)):
        raise InputError(f"regions must be 3D labels in 0..65535, got shape {regions.shape}")
    ring = np.zeros(regions.shape, dtype=np.uint16)
    found = np.argwhere(regions > 0)
    if not found.size:
        return ring
    # only the block around the regions is dilated: a detection's scan can be 512 x 512 x 200 voxels
    lo = np.maximum(found.min(axis=0) - [radius, radius, 0], 0)
    hi = np.minimum(found.max(axis=0) + [radius + 1, radius + 1, 1], regions.shape)
    block = tuple(slice(a, b) for a, b in zip(lo, hi))
    disc = np.zeros((2 * radius + 1, 2 * radius + 1, 1), dtype=bool)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc[..., 0] = xx ** 2 + yy ** 2 <= radius ** 2 + radius
    square = np.zeros((3, 3, 3), dtype=bool)
    square[:, :, 1] = True  # the 8 in-plane neighbours
    near = ndimage.binary_dilation(regions[block] > 0, structure=square)
    around = ndimage.grey_dilation(regions[block].astype(np.uint16), footprint=disc)
    around[near] = 0
    ring[block] = around
    return ring


def encode_nifti(array: np.ndarray, affine: np.ndarray, labels: bool = False) -> str:
    """A volume as base64 gzipped NIfTI: an image windowed to 8 bits, or labels (0..255) as 8 bits.

    The window runs from the 0.5th to the 99.5th percentile of the non-zero voxels, mapped to 1..255
    (``cal_min`` 0 and ``cal_max`` 255 in the header, so the viewer shows that window; a constant
    image is mid-grey). The gzip stream carries no time, so the same volume gives the same text.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"a viewer shows 3D volumes, got shape {array.shape}")
    if labels:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise InputError(f"viewer labels must lie in 0..255, got {array.min()}..{array.max()}")
        data = array.astype(np.uint8)
    else:  # to 1..255: NiiVue leaves an overlay's zeros transparent, and the phase is drawn as an overlay
        values = array[np.isfinite(array) & (array != 0)]
        lo, hi = np.percentile(values, _IMAGE_PERCENTILES) if values.size else (0.0, 0.0)
        scaled = (np.nan_to_num(array.astype(np.float64)) - lo) / (hi - lo) if hi > lo else np.full(array.shape, 0.5)
        data = np.clip(np.rint(1 + scaled * 254), 1, 255).astype(np.uint8)
    image = nib.Nifti1Image(data, np.asarray(affine, dtype=float))
    image.header["cal_min"], image.header["cal_max"] = (0, 255) if not labels else (0, max(int(data.max()), 1))
    return base64.b64encode(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)).decode("ascii")


def content_box(image: np.ndarray, regions: np.ndarray, voxels: Sequence[Sequence[int]] = (),
                margin: int = _BOX_MARGIN) -> tuple[slice, slice, slice]:
    """The part of a scan a viewer shows: the head and every mark, ``margin`` voxels around them.

    The head is the largest connected piece of the voxels above the image's Otsu threshold
    (scikit-image), after a one-voxel opening that drops speckles of background noise; a
    skull-stripped scan's head is its brain. ``regions`` (non-zero voxels) and ``voxels`` (the marks'
    centres) are always inside. A viewer in a browser without a GPU spends its time in proportion to
    the voxels it shows, and the air around a head is a quarter or more of a scan's field of view.
    An image with one value is kept whole.
    """
    from skimage.filters import threshold_otsu

    image = np.asarray(image, dtype=np.float32)  # a user's scan can be 512 x 512 x 200 voxels
    finite = np.isfinite(image)
    values = image[finite]
    whole = tuple(slice(0, n) for n in image.shape)
    if values.size == 0 or values.min() == values.max():
        return whole  # type: ignore[return-value]
    above = ndimage.binary_opening(finite & (np.where(finite, image, values.min()) > threshold_otsu(values)))
    pieces, n = ndimage.label(above)
    keep = pieces == (np.argmax(np.bincount(pieces.ravel())[1:]) + 1) if n else above
    keep |= np.asarray(regions) != 0
    for voxel in voxels:
        keep[tuple(int(v) for v in voxel)] = True
    if not keep.any():
        return whole  # type: ignore[return-value]
    box = []
    for axis, size in enumerate(image.shape):
        along = np.flatnonzero(keep.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(along[0]) - margin, 0), min(int(along[-1]) + margin + 1, size)))
    return tuple(box)  # type: ignore[return-value]


def _check_key(key: str) -> None:
    if not key or not all(c.isalnum() or c in "-_" for c in key):
        raise InputError(f"viewer key {key!r}: use letters, digits, '-' and '_'")


def _number(value: float | None) -> float | None:
    """A JSON number, or None for a missing or NaN value (JSON has no NaN)."""
    return None if value is None or not np.isfinite(value) else float(value)


def _json(data: object) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element (no ``<`` at all)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _rgb(kind: str) -> list[int]:
    return [int(round(255 * c)) for c in to_rgb(KIND_COLORS.get(kind, "white"))]


def scan_payload(scan: ViewerScan) -> dict:
    """The JSON a viewer reads for ``scan``: its volumes (base64 NIfTI), marks and colours.

    The volumes are cropped to :func:`content_box`; ``origin`` is the box's first voxel, and the marks'
    voxels stay on the scan's own grid (the viewer subtracts the origin to place them, and adds it to
    the voxel it names), so the viewer, the table and the scan's files give the same voxel.

    Raises:
        InputError: a key with other characters, images and regions on different grids, or
            regions that name a mark the scan lacks.
    """
    _check_key(scan.key)
    shapes = {np.shape(image) for _, image in scan.images} | {np.shape(scan.regions)}
    if len(shapes) != 1:
        raise InputError(f"{scan.key}: images and regions must share one grid, got shapes {sorted(shapes)}")
    if int(np.max(scan.regions, initial=0)) > len(scan.marks):
        raise InputError(f"{scan.key}: regions label up to {int(np.max(scan.regions))} but {len(scan.marks)} marks")
    kinds = sorted({m.kind for m in scan.marks})
    box = (content_box(scan.images[0][1], scan.regions, [m.voxel for m in scan.marks]) if scan.images
           else tuple(slice(0, n) for n in np.shape(scan.regions)))
    origin = [b.start for b in box]
    affine = np.asarray(scan.affine, dtype=float).copy()
    affine[:3, 3] += affine[:3, :3] @ np.asarray(origin, dtype=float)  # the box's first voxel on the scan's grid
    marks = [{"id": i + 1, "kind": m.kind, "name": m.name, "voxel": [int(v) for v in m.voxel],
              "probability": _number(m.probability), "diameter_mm": _number(m.diameter_mm), "note": m.note}
             for i, m in enumerate(scan.marks)]
    return {
        "key": scan.key, "title": scan.title,
        "images": [{"name": name, "data": encode_nifti(np.asarray(image)[box], affine)} for name, image in scan.images],
        "outline": _outline(scan, kinds, box, affine) if scan.marks else None,
        "origin": origin,
        "marks": marks, "focus": scan.focus if 1 <= scan.focus <= len(marks) else (1 if marks else 0),
        "colors": {kind: _rgb(kind) for kind in kinds},
        "outline_kinds": kinds,
    }


def _outline(scan: ViewerScan, kinds: list[str], box: tuple[slice, ...], affine: np.ndarray) -> str:
    """The rings around ``scan``'s marks as the 1-based code of each mark's kind in ``kinds`` (8 bits: the
    viewer draws them as NiiVue's drawing layer, which costs a browser without a GPU far less than an
    overlay volume)."""
    code = np.zeros(len(scan.marks) + 1, dtype=np.uint8)
    code[1:] = [kinds.index(m.kind) + 1 for m in scan.marks]
    return encode_nifti(code[outline_regions(scan.regions)][box], affine, labels=True)


def _table(scan: ViewerScan | ViewerEntry) -> str:
    """The marks of one scan as an HTML table (readable without scripts), rows linked to the viewer."""
    head = "".join(f"<th>{c}</th>" for c in ("mark", "kind", "probability", "diameter (mm)", "voxel (i, j, k)", "note"))
    rows = []
    for i, mark in enumerate(scan.marks):
        swatch = f'<span class="cmb-swatch" style="background:rgb({",".join(map(str, _rgb(mark.kind)))})"></span>'
        cells = [f"{swatch}{html.escape(mark.name)}", html.escape(mark.kind),
                 "" if _number(mark.probability) is None else f"{mark.probability:.2f}",
                 "" if _number(mark.diameter_mm) is None else f"{mark.diameter_mm:.1f}",
                 ", ".join(str(int(v)) for v in mark.voxel), html.escape(mark.note)]
        rows.append(f'<tr data-scan-part="{scan.key}" data-mark="{i + 1}" tabindex="0">'
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    caption = f"<caption>{html.escape(scan.caption)}</caption>" if scan.caption else ""
    body = "".join(rows) or f'<tr><td colspan="6">no marks in this scan</td></tr>'
    return (f'<div class="cmb-table" data-scan-part="{scan.key}"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


_STYLE = """<style>
.cmb-viewer{font-size:0.9rem;margin:1em 0}
.cmb-bar{display:flex;flex-wrap:wrap;gap:0.4em 1em;align-items:center;margin-bottom:0.4em}
.cmb-bar button{padding:0.1em 0.6em;border:1px solid #888;border-radius:3px;background:#f4f4f4;cursor:pointer}
.cmb-bar button[aria-pressed=true]{background:#333;color:#fff}
.cmb-bar select{max-width:100%}
.cmb-canvas{width:100%;height:min(460px,90vw);background:#000}
.cmb-canvas canvas{width:100%;height:100%;display:block}
.cmb-status{min-height:1.4em;font-family:monospace}
.cmb-table{overflow-x:auto;max-height:16em;overflow-y:auto}
.cmb-table table{border-collapse:collapse;font-size:0.85rem}
.cmb-table td,.cmb-table th{padding:0.1em 0.6em;border-bottom:1px solid #ddd;white-space:nowrap}
.cmb-table tr[data-mark]{cursor:pointer}
.cmb-table tr.cmb-selected{background:#ffe9a8}
.cmb-swatch{display:inline-block;width:0.8em;height:0.8em;margin-right:0.4em;border:1px solid #333}
.cmb-viewer[data-state=error] .cmb-status{color:#b00}
</style>"""


def viewer_html(scans: Sequence[ViewerScan | ViewerEntry], asset_url: str,
                payloads: Sequence[dict | str] | None = None, label: str = "scan viewer") -> str:
    """An HTML fragment: one viewer of ``scans`` (a picker when several), its controls, table and data.

    Args:
        scans: the scans, the first shown first (a :class:`ViewerEntry` when its payload is a URL).
        asset_url: the folder of :func:`~cmbstudy.data.viewer_assets.install_viewer_assets`, relative to
            the page (e.g. ``"../viewer"``).
        payloads: per scan, its :func:`scan_payload` (None: computed here, embedded in the page) or the
            relative URL of its :func:`write_scan_data` file, read when the scan is picked.
        label: the viewer's accessible name.

    Raises:
        InputError: no scan, or keys used twice.
    """
    if not scans:
        raise InputError("a viewer needs at least one scan")
    for scan in scans:
        _check_key(scan.key)
    if len({s.key for s in scans}) != len(scans):
        raise InputError(f"viewer keys must be unique, got {[s.key for s in scans]}")
    if payloads is not None and len(payloads) != len(scans):
        raise InputError(f"{len(payloads)} payloads for {len(scans)} scans: give one per scan")
    if payloads is None and not all(isinstance(s, ViewerScan) for s in scans):
        raise InputError("a ViewerEntry has no volumes: give the URL of its data file in payloads")
    payloads = list(payloads) if payloads is not None else [scan_payload(s) for s in scans]
    data = {"scans": [p if isinstance(p, dict) else {"key": s.key, "title": s.title, "src": p}
                      for s, p in zip(scans, payloads)]}
    picker = ""
    if len(scans) > 1:
        options = "".join(f'<option value="{i}">{html.escape(s.title)}</option>' for i, s in enumerate(scans))
        picker = f'<label>Scan <select data-control="scan">{options}</select></label>'
    planes = "".join(f'<button type="button" data-plane="{p}" aria-pressed="false">{name}</button>'
                     for p, name in (("axial", "axial"), ("coronal", "coronal"), ("sagittal", "sagittal"),
                                     ("all", "all three")))
    text = _json(data)
    return (f'{_STYLE}<div class="cmb-viewer" role="group" aria-label="{html.escape(label)}">'
            f'<div class="cmb-bar">{picker}<label>Image <select data-control="image"></select></label>'
            f'<span>{planes}</span><label><input type="checkbox" data-control="outline" checked> outlines</label>'
            f"</div>"
            f'<div class="cmb-canvas"><canvas></canvas></div>'
            f'<div class="cmb-status" aria-live="polite">The viewer needs JavaScript; the tables below list the '
            f"marks.</div>{''.join(_table(s) for s in scans)}"
            f'<script type="application/json" class="cmb-viewer-data">{text}</script></div>'
            f'<script src="{asset_url}/{NIIVUE_SCRIPT}"></script><script src="{asset_url}/{VIEWER_SCRIPT}"></script>')


def write_viewer_page(path: str | Path, title: str, body_html: str, viewer: str) -> Path:
    """A standalone HTML page: ``title``, the prose ``body_html``, then ``viewer`` (:func:`viewer_html`)."""
    path = Path(path)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title>"
            f"<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:0 auto;padding:0.5em 1em}}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>{body_html}{viewer}</body></html>\n")
    write_text_atomically(path, page)
    return path


def write_scan_data(path: str | Path, scan: ViewerScan) -> Path:
    """``scan``'s payload as a script that registers it (read from ``file://`` pages, where fetch is refused)."""
    path = Path(path)
    write_text_atomically(path, f"cmbViewer.register({json.dumps(scan.key)},{_json(scan_payload(scan))});\n")
    return path


def write_linked_viewer(scans: Sequence[ViewerScan], asset_url: str, data_dir: str | Path,
                        label: str = "scan viewer") -> str:
    """A viewer whose scans are read from data files, each only when it is picked: a light page.

    Each scan's :func:`write_scan_data` file is written to ``data_dir/<key>.js`` (the folder's other
    ``.js`` files, from an earlier choice of scans, are removed first); the page finds them at
    ``<asset_url>/data/<data_dir's name>/``, where the book's build copies them.

    Returns:
        The viewer's HTML fragment (:func:`viewer_html`).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("*.js"):
        old.unlink()
    urls = [f"{asset_url}/data/{data_dir.name}/{write_scan_data(data_dir / f'{scan.key}.js', scan).name}"
            for scan in scans]
    return viewer_html(scans, asset_url, payloads=urls, label=label)
