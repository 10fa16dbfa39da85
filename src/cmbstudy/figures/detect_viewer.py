"""The scan viewer beside ``cmbstudy detect``'s reports: ``OUT/index.html``, offline.

Each scan's volume and detections are written beside its report as ``<stem>_viewer.js``
(:func:`write_detection_viewer_data`, called with the reports for every scan), and the index page
(:func:`write_detection_index`) lists the scans with their counts, ARIA-H categories and reports, above
one viewer that reads a scan's file when it is picked. The viewer's scripts are copied into
``OUT/viewer/`` (:func:`cmbstudy.data.viewer_assets.install_viewer_assets`), so the folder opens
from disk, or from another machine it is copied to, with no network.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.viewer_assets import install_viewer_assets
from ..errors import InputError
from .viewer import ViewerEntry, viewer_html, write_scan_data, write_viewer_page
from .viewer_marks import detection_scan, table_marks

__all__ = ["INDEX_PAGE", "VIEWER_ASSETS", "write_detection_viewer_data", "write_detection_index"]

INDEX_PAGE = "index.html"
_SUFFIX = "_viewer.js"
VIEWER_ASSETS = "viewer"  # OUT/viewer/: NiiVue, the controls and the notice


def _title(subject_id: str, count: Any, category: Any) -> str:
    return f"sub-{subject_id}: {count} CMB(s), ARIA-H {category}"


def _key(data_file: Path) -> str:
    """The viewer's key of a scan: its output stem, with what is not a letter, digit, - or _ made -."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", data_file.name.removesuffix(_SUFFIX))


def write_detection_viewer_data(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, header: Mapping[str, Any],
                                table: pd.DataFrame, stem: str | Path) -> dict[str, Path]:
    """One scan's viewer file, ``{stem}_viewer.js``: its image and each detection outlined, in RAS orientation.

    The signature of :data:`cmbstudy.inference.detect.ReportWriter`, so that ``cmbstudy detect`` writes it
    with the reports.
    """
    path = Path(f"{stem}{_SUFFIX}")
    key = _key(path)
    scan = detection_scan(key, f"{key}: {header.get('count', '?')} CMB(s)", image, affine, labels, table,
                          caption=f"{header.get('scan', '')}: {header.get('method', '')}")
    return {"viewer": write_scan_data(path, scan)}


def write_detection_index(out: str | Path, scans: Sequence[Any], intended_use: str = "") -> Path:
    """``out/index.html``: a table of the scans and one viewer of them, offline.

    Args:
        out: ``cmbstudy detect``'s output folder.
        scans: its :class:`cmbstudy.inference.detect.ScanResult` objects (read by attribute: subject_id,
            scan, cmb_count, aria_h_category and files, with "viewer", "lesions" and the reports).
        intended_use: the model's research-use statement, shown at the top.

    Returns:
        The page's path.

    Raises:
        InputError: NiiVue not installed (:func:`cmbstudy.data.viewer_assets.find_niivue`), or a scan
            without its viewer file.
    """
    out = Path(out)
    install_viewer_assets(out / VIEWER_ASSETS)
    rows, entries, urls = [], [], []
    for result in scans:
        files = {kind: Path(path) for kind, path in result.files.items()}
        if "viewer" not in files or "lesions" not in files:
            raise InputError(f"scan {result.subject_id} has no viewer file or lesion table: the viewer page needs "
                             "the outputs of `cmbstudy detect`")
        link = {kind: Path(os.path.relpath(path, out)).as_posix() for kind, path in files.items()}
        table = pd.read_csv(files["lesions"], sep="\t")
        title = _title(result.subject_id, result.cmb_count, result.aria_h_category)
        entries.append(ViewerEntry(_key(files["viewer"]), title, table_marks(table)))
        urls.append(link["viewer"])
        reports = " ".join(f'<a href="{html.escape(link[kind])}">{name}</a>'
                           for kind, name in (("report_pdf", "PDF"), ("report", "PNG")) if kind in link)
        rows.append(f"<tr><td>sub-{html.escape(result.subject_id)}</td><td>{html.escape(Path(result.scan).name)}</td>"
                    f"<td>{result.cmb_count}</td><td>{html.escape(str(result.aria_h_category))}</td>"
                    f"<td>{reports}</td></tr>")
    summary = ("<table><thead><tr><th>subject</th><th>scan</th><th>CMBs</th><th>ARIA-H category</th>"
               f"<th>report</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    body = (f"<p>{html.escape(intended_use)}</p>{summary}<p>Each detection is outlined in yellow; pick a scan, "
            "scroll through its slices, switch the outlines off, and click a row to go to that CMB.</p>")
    viewer = viewer_html(entries, VIEWER_ASSETS, payloads=urls, label="detected CMBs") if entries else ""
    return write_viewer_page(out / INDEX_PAGE, "cmbstudy detect: CMBs found", body, viewer)
