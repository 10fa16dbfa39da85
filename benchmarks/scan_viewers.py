"""Which scan viewer for the book and `detect`: NiiVue or nilearn's HTML view, by page weight and load time.

Usage::

    python benchmarks/scan_viewers.py                         # the quick study's results/ in this checkout
    python benchmarks/scan_viewers.py --results DIR --book book/_build/html --repeats 5

Both viewers are built for the same test subject (the first of the main run's test predictions
with a TP, an FP or an FN, canonical RAS), with the study's outlines around each TP, FP and FN:

* ``niivue``: cmbstudy's viewer (:mod:`cmbstudy.figures.viewer`), the page, its scan's data file and
  the two scripts (NiiVue 2.3 MB, the controls);
* ``nilearn``: ``nilearn.plotting.view_img(outlines, bg_img=scan)``, a single self-contained HTML
  file (brainsprite and jQuery inlined, the volume as PNG sprites).

Each page is opened ``--repeats`` times in headless Chromium with the network off (Playwright on
the system's Chromium, as the browser tests do), and the load time is the time from the page's start
to its first scan on screen: for NiiVue the viewer's own mark (``data-ready-ms``, set once the browser has
composited the frame with the scan: software WebGL does most of its work then); for nilearn, the
first moment its canvas (in the iframe the saved page holds) has more than one grey level (polled
every 10 ms). Also measured, when
``--book`` names a rendered book: the load time of each chapter with a viewer, and the size of its
viewer folder (the two scripts and every scan's data), with screenshots of each such chapter at
desktop and phone widths in the book's ``_build/screenshots/``; and, when ``--detect`` names an output
folder of ``cmbstudy detect``, the load time of its ``index.html`` (bytes: the page, the scripts and the
first scan's data). Prints one table; writes it to ``--out``.

What each shows (from their documentation and pages, not measured here): NiiVue draws one plane or
all three, scrolls slices with the wheel, takes label volumes with a colour per label, and the
cmbstudy controls add the outline toggle, the magnitude/phase picker and the linked table; nilearn's
view shows the three planes at once, moves by clicks, and shows one stat map over one background,
with no toggle and no table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # the browser probe the tests use

from viewer_probe import DESKTOP, PHONE, find_browser, inspect_viewers, open_browser  # noqa: E402

from cmbstudy.data.datasets import load_subjects  # noqa: E402
from cmbstudy.data.viewer_assets import install_viewer_assets  # noqa: E402
from cmbstudy.figures.viewer import outline_regions, write_linked_viewer, write_viewer_page  # noqa: E402
from cmbstudy.figures.viewer_marks import evaluation_scan  # noqa: E402
from cmbstudy.study.examples import load_subject_evaluation  # noqa: E402
from cmbstudy.study.runs import TEST_PREDICTIONS, TEST_PREDICTIONS_TWO_STAGE  # noqa: E402

NILEARN_DRAWN = """() => {
  const canvas = document.querySelector('canvas');
  if (!canvas || !canvas.width) return false;
  const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const greys = new Set();
  for (let i = 0; i < px.length; i += 4 * 97) greys.add(px[i]);
  return greys.size > 1;
}"""


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def _subject(results: Path, test_root: Path, run: str):
    run_dir = results / "runs" / run
    pred = run_dir / (TEST_PREDICTIONS_TWO_STAGE if (run_dir / TEST_PREDICTIONS_TWO_STAGE).is_dir() else TEST_PREDICTIONS)
    for subject in load_subjects(test_root):
        if (pred / f"sub-{subject.subject_id}").is_dir():
            image, evaluation, _ = load_subject_evaluation(subject, pred)
            if evaluation.pred.n or evaluation.ref.n:
                return subject, image, evaluation
    raise SystemExit(f"no predicted test subject in {pred}: run `make study` first")


def _nilearn_load_ms(browser, page: Path) -> float:
    context = browser.new_context(offline=True, viewport={"width": DESKTOP[0], "height": DESKTOP[1]})
    try:
        tab = context.new_page()
        tab.goto(page.resolve().as_uri())
        frame = tab.wait_for_selector("iframe").content_frame()  # nilearn's page holds the view in an iframe
        frame.wait_for_function(NILEARN_DRAWN, polling=10, timeout=60_000)
        return float(tab.evaluate("performance.now()"))
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--test-root", type=Path, default=None, help="default: RESULTS/data/synthetic-quick-test")
    parser.add_argument("--run", default="rlk_unet_cbam-fold0")
    parser.add_argument("--book", type=Path, default=ROOT / "book" / "_build" / "html")
    parser.add_argument("--detect", type=Path, default=None, help="an output folder of `cmbstudy detect`: its index.html")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scan_viewers.tsv")
    args = parser.parse_args()
    from nilearn.plotting import view_img

    browser_path = find_browser()
    if browser_path is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    test_root = args.test_root or args.results / "data" / "synthetic-quick-test"
    subject, image, evaluation = _subject(args.results, test_root, args.run)
    affine = nib.as_closest_canonical(nib.load(subject.image_path)).affine
    scan = evaluation_scan(f"sub-{subject.subject_id}", f"sub-{subject.subject_id}", [("magnitude", image)], affine,
                           evaluation)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, open_browser(browser_path) as browser:
        folder = Path(tmp)
        assets = install_viewer_assets(folder / "viewer")
        fragment = write_linked_viewer([scan], "viewer", folder / "viewer" / "data" / "bench")
        page = write_viewer_page(folder / "niivue.html", "NiiVue", "", fragment)
        files = [page, *assets.values(), *(folder / "viewer" / "data" / "bench").glob("*.js")]
        times = [inspect_viewers(browser, page).viewers[0]["ready_ms"] for _ in range(args.repeats)]
        rows.append(("niivue", subject.subject_id, _size(files), statistics.median(times), max(times)))
        outlines = nib.Nifti1Image(outline_regions(scan.regions).astype(np.float32), affine)
        nilearn_page = folder / "nilearn.html"
        view_img(outlines, bg_img=nib.Nifti1Image(image, affine), threshold=0.5, symmetric_cmap=False,
                 colorbar=False, black_bg=True, cmap="autumn").save_as_html(str(nilearn_page))
        times = [_nilearn_load_ms(browser, nilearn_page) for _ in range(args.repeats)]
        rows.append(("nilearn view_img", subject.subject_id, _size([nilearn_page]), statistics.median(times),
                     max(times)))
        shots = args.book.parent / "screenshots"
        for chapter in ("executed/16_cohort_viewer", "executed/11_qualitative"):
            chapter_page = args.book / f"{chapter}.html"
            if chapter_page.is_file():
                name = Path(chapter).name
                for size, window in (("desktop", DESKTOP), ("phone", PHONE)):
                    inspect_viewers(browser, chapter_page, window, screenshot=shots / f"viewer-{name}-{size}.png")
                times = [inspect_viewers(browser, chapter_page).viewers[0]["ready_ms"] for _ in range(args.repeats)]
                rows.append((f"book: {chapter}", "", chapter_page.stat().st_size, statistics.median(times),
                             max(times)))
        if args.detect is not None:
            index = args.detect / "index.html"
            times = [inspect_viewers(browser, index).viewers[0]["ready_ms"] for _ in range(args.repeats)]
            first = sorted(args.detect.rglob("*_viewer.js"))[:1]
            rows.append(("detect: index.html", first[0].name.removesuffix("_viewer.js") if first else "",
                         _size([index, *(args.detect / "viewer").glob("*"), *first]), statistics.median(times),
                         max(times)))
    if (args.book / "viewer").is_dir():
        rows.append(("book: viewer/ (scripts and every scan)", "",
                     _size([p for p in (args.book / "viewer").rglob("*") if p.is_file()]), float("nan"), float("nan")))
    header = ("viewer", "subject", "bytes", "load_ms_median", "load_ms_max")
    lines = ["\t".join(header)] + ["\t".join(f"{v:.0f}" if isinstance(v, float) else str(v) for v in row)
                                   for row in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"(headless Chromium, offline, {args.repeats} loads each; bytes: the page with everything it loads) "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
