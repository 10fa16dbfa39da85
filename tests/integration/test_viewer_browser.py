"""The scan viewers in headless Chromium with the network off: a hand-made page, `detect`'s index.html, the book.

Each viewer must draw the scan (a canvas of many grey levels, not a blank or an error), change its
picture when the outlines are switched off and give the same picture back when they are switched on,
change it when another plane is picked, and name a mark when its table row is clicked. No request
may leave the page's folder (in the book, MathJax's included). Without NiiVue's script the viewer must say it failed, so these checks
can fail. Screenshots at desktop and phone widths are written for a person to look at: the smoke
book's to ``book/_build/screenshots/viewer-*.png`` beside its ``html/``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from viewer_probe import DESKTOP, PHONE, find_browser, inspect_viewers, open_browser

from cmbstudy.data.viewer_assets import NIIVUE_SCRIPT, install_viewer_assets
from cmbstudy.figures.detect_viewer import write_detection_index, write_detection_viewer_data
from cmbstudy.figures.report import write_detection_reports
from cmbstudy.figures.viewer import viewer_html, write_viewer_page
from cmbstudy.figures.viewer_marks import cohort_scan
from cmbstudy.study.book import BOOK_VIEWER_DIR

SHAPE = (48, 52, 20)
CMB = (16, 20, 10)


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright", reason="playwright is a test dependency: pip install -e '.[test]'")
    executable = find_browser()
    if executable is None:
        pytest.skip("no Chromium found: `apt-get install chromium` or run `make test`")
    with open_browser(executable) as opened:
        yield opened


def _head(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright ellipsoid 'brain' with noise, a dark sphere (the CMB) and a dark tube (a vein)."""
    grid = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(float)
    brain = ((grid[0] - 24) / 20) ** 2 + ((grid[1] - 26) / 22) ** 2 + ((grid[2] - 10) / 9) ** 2 <= 1
    image = np.where(brain, 100.0, 5.0) + rng.normal(0, 4, SHAPE)
    cmb = ((grid[0] - CMB[0]) ** 2 + (grid[1] - CMB[1]) ** 2 + (grid[2] - CMB[2]) ** 2) <= 2.0 ** 2
    vein = ((grid[0] - 30) ** 2 + (grid[1] - 30) ** 2 <= 1.5 ** 2) & brain
    image[cmb | vein] = 20.0
    return image.astype(np.float32), cmb, vein.astype(np.int64)


def _assert_drawn_and_live(report: dict, name: str) -> None:
    assert report["state"] == "ready", f"{name}: the viewer did not open its scan: {report['error']}"
    assert report["lit"] > 0.1 and report["greys"] > 20, f"{name}: the canvas is blank: {report}"
    assert report["toggled"] > 0, f"{name}: switching the outlines off changed nothing"
    assert report["restored"] == 0, f"{name}: switching them on again did not give the same picture back"
    assert report["coronal"] > 0, f"{name}: picking the coronal plane changed nothing"
    assert report["rows"] > 0 and report["named"] == report["last_row"], \
        f"{name}: a click on row {report['last_row']!r} named {report['named']!r}"


def _assert_offline(found, folder: Path, errors: bool = True) -> None:
    """No request left ``folder``; and, with ``errors``, no script error (the book's theme logs its own)."""
    outside = [url for url in found.requests if not url.startswith(folder.resolve().as_uri())]
    assert outside == [], f"requests outside the page's folder: {outside}"
    assert not errors or found.errors == [], f"script errors: {found.errors}"


@pytest.fixture(scope="module")
def cohort_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("viewer-page")
    image, cmb, vein = _head(np.random.default_rng(3))
    affine = np.diag([0.9, 0.9, 2.5, 1.0])
    scan = cohort_scan("sub-1", "a hand-made head", [("magnitude", image), ("phase", -image)], affine, cmb, vein,
                       {1: "vein"})
    install_viewer_assets(folder / "viewer")
    return write_viewer_page(folder / "page.html", "viewer", "<p>a CMB and a vein</p>",
                             viewer_html([scan], "viewer"))


def test_the_viewer_draws_the_scan_and_its_outlines_offline(browser, cohort_page: Path) -> None:
    shots = cohort_page.parent / "screenshots"
    found = inspect_viewers(browser, cohort_page, DESKTOP, screenshot=shots / "desktop.png")
    assert len(found.viewers) == 1
    _assert_drawn_and_live(found.viewers[0], "hand-made page")
    assert found.viewers[0]["last_row"] == "vein" and found.viewers[0]["image"] == "magnitude"
    phase = inspect_viewers(browser, cohort_page, DESKTOP, image="1")
    assert phase.viewers[0]["image"] == "phase"
    _assert_drawn_and_live(phase.viewers[0], "hand-made page, phase")
    _assert_offline(found, cohort_page.parent)
    phone = inspect_viewers(browser, cohort_page, PHONE, screenshot=shots / "phone.png")
    _assert_drawn_and_live(phone.viewers[0], "hand-made page, phone")
    assert (shots / "desktop.png").read_bytes()[:4] == b"\x89PNG" and (shots / "phone.png").stat().st_size > 0


def test_without_niivue_the_viewer_says_it_failed(browser, cohort_page: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "page.html").write_text(cohort_page.read_text())
    install_viewer_assets(broken / "viewer")
    (broken / "viewer" / NIIVUE_SCRIPT).unlink()
    found = inspect_viewers(browser, broken / "page.html", timeout_ms=20_000)
    assert found.viewers[0]["state"] == "error" and "niivue" in found.viewers[0]["error"]


def test_detect_writes_an_index_page_that_opens_each_scan(browser, tmp_path: Path) -> None:
    image, cmb, _ = _head(np.random.default_rng(4))
    labels = cmb.astype(np.int16)
    out = tmp_path / "detect"
    # stored L-P-S: the viewer must turn the scan to RAS, or a row's click lands on the mirrored voxel
    affine = np.diag([-0.9, -0.9, 2.5, 1.0])
    header = {"count": 1, "category": "1-4", "scan": "sub-7_T2starw.nii.gz", "model": "hand-made",
              "threshold": 0.5, "method": "one stage", "intended_use": "research use only", "modality": "gre"}
    results = []
    for sid, found_labels in (("7", labels), ("8", np.zeros_like(labels))):
        stem = out / f"sub-{sid}" / "anat" / f"sub-{sid}"
        stem.parent.mkdir(parents=True)
        n = int(found_labels.max())
        table = pd.DataFrame({
            "lesion_id": np.arange(1, n + 1), "x_vox": [float(CMB[0])] * n, "y_vox": [float(CMB[1])] * n,
            "z_vox": [float(CMB[2])] * n, "max_prob": [0.9] * n, "equivalent_diameter_mm": [3.0] * n,
            "location": ["lobar"] * n})
        lesions = Path(f"{stem}_lesions.tsv")
        table.to_csv(lesions, sep="\t", index=False)
        files = {**write_detection_reports(image, found_labels, affine, header, table, stem),
                 **write_detection_viewer_data(image, found_labels, affine, header, table, stem), "lesions": lesions}
        results.append(SimpleNamespace(subject_id=sid, scan=Path(f"sub-{sid}_T2starw.nii.gz"), cmb_count=n,
                                       aria_h_category="1-4" if n else "0", files=files))  # as detect's ScanResult
    index = write_detection_index(out, results, "research use only")
    assert index == out / "index.html" and (out / "viewer" / NIIVUE_SCRIPT).is_file()
    page = index.read_text()
    assert 'href="sub-7/anat/sub-7_report.pdf"' in page and "sub-8/anat/sub-8_viewer.js" in page
    found = inspect_viewers(browser, index)
    _assert_drawn_and_live(found.viewers[0], "detect's index.html")
    assert found.viewers[0]["scan"] == "sub-7" and found.viewers[0]["last_row"] == "CMB 1"
    _assert_offline(found, out)
    other = inspect_viewers(browser, index, picks=("1",))
    assert other.viewers[0]["state"] == "ready" and other.viewers[0]["scan"] == "sub-8"
    assert other.viewers[0]["lit"] > 0.1 and other.viewers[0]["rows"] == 0  # nothing found: no outline, no row
    assert not other.viewers[0]["outlined"]
    back_and_forth = inspect_viewers(browser, index, picks=("1", "0", "1", "0"))  # faster than the scans load
    assert back_and_forth.viewers[0]["scan"] == "sub-7" and back_and_forth.viewers[0]["volumes"] == 1
    assert back_and_forth.viewers[0]["outlined"]  # sub-7's outlines, not sub-8's none
    _assert_drawn_and_live(back_and_forth.viewers[0], "detect's index.html after quick picks")


@pytest.mark.slow
def test_the_book_s_viewers_open_offline(browser, smoke_study) -> None:
    html_dir = smoke_study.project / "book" / "_build" / "html"
    shots = smoke_study.project / "book" / "_build" / "screenshots"
    assert (html_dir / "viewer" / NIIVUE_SCRIPT).is_file(), f"the build did not copy {BOOK_VIEWER_DIR}"
    for chapter in ("executed/16_cohort_viewer", "executed/11_qualitative"):
        page = html_dir / f"{chapter}.html"
        name = Path(chapter).name
        found = inspect_viewers(browser, page, DESKTOP, screenshot=shots / f"viewer-{name}-desktop.png")
        assert len(found.viewers) == 1, f"{chapter}: {len(found.viewers)} viewers"
        _assert_drawn_and_live(found.viewers[0], chapter)
        _assert_offline(found, html_dir, errors=False)  # MathJax too is the book's own copy
        phone = inspect_viewers(browser, page, PHONE, screenshot=shots / f"viewer-{name}-phone.png")
        assert phone.viewers[0]["state"] == "ready" and phone.viewers[0]["lit"] > 0.1
