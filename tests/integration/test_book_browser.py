"""Read the rendered smoke-profile book in headless Chromium, as a reader would.

The rendered pages must be exactly the documents of ``book/_toc.yml``. Each of them is
loaded from disk in a window 390 px wide, the width of a phone, and checked:

- it has a title and a heading and is not a "404" page;
- every ``<img>`` points to a file that exists and that the browser decoded
  (``naturalWidth > 0``);
- no ``<table>`` runs past the right edge of the window, losing the reader its last
  columns, unless it scrolls sideways by itself: its nearest element with a computed
  ``overflow-x`` of ``auto`` or ``scroll`` ends within the window and holds no heading
  (a scrolling section or article moves the text sideways with the table, which does
  not count); ``book/_static/tables.css`` makes tables scroll;
- every image of the page's content (an ``<img>`` in ``article.bd-article``; the
  theme's buttons and logos lie outside it) has alt text other than its own path,
  which is what Sphinx writes when none was given, and sits in a ``<figure>`` whose
  ``<figcaption>`` has text besides the figure number.

Chromium's ``--dump-dom`` prints the DOM only, so the measurements run in the page
itself: a copy of the page, written beside it (relative paths resolve the same), gets a
script that makes every image load eagerly, waits for all of them, measures every
table and posts a JSON report, with the page's DOM, to the page around it. That page
holds the copy in a 390 x 844 px frame, since headless Chromium makes no window
narrower than 500 px, and appends the report as ``<pre id="cmbstudy-page-report">`` to
the DOM that Chromium then dumps. The figure check reads the page's DOM with
``html.parser``, so it is tested here on hand-written HTML without a browser.

Screenshots of the toc's root page (the abstract) and of one results chapter
(``executed/05_method_comparison``), 1280 px wide (desktop) and 390 px wide (phone),
are written to ``book/_build/screenshots/<page>-<desktop|phone>.png`` of the built
book, beside ``html/`` so they are not published, for a person to look at; the test
checks that each is a PNG of the size asked for.

Chromium is the Debian package ``chromium`` (``make test`` installs it when
``apt-get`` is available); without it the browser tests are skipped.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import struct
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from viewer_probe import BROWSERS, find_browser

REPORT_ID = "cmbstudy-page-report"
PHONE = (390, 844)  # CSS px: a phone held upright (iPhone 12 to 14)
# Screenshots: (name, width, height) in px; 1600 px is about two phone screens of the page.
SCREENSHOT_SIZES = (("desktop", 1280, 1600), ("phone", 390, 1600))
SCREENSHOT_PAGES = ("root", "executed/05_method_comparison")  # "root" stands for the toc's root
# Runs in the page: load every image (lazy ones too), then report what the browser decoded,
# where each table ends against the width of the window, and the DOM, to the frame around it.
PAGE_PROBE = """<script>
(function () {
  const images = Array.from(document.images);
  images.forEach(function (img) { img.loading = "eager"; });
  const settled = images.map(function (img) {
    return img.complete ? Promise.resolve() : new Promise(function (done) { img.onload = img.onerror = done; });
  });
  function describe(node) {
    return node.tagName.toLowerCase() + Array.from(node.classList).map(function (c) { return "." + c; }).join("");
  }
  function scroller(table) {
    for (let node = table; node && node !== document.body; node = node.parentElement) {
      const overflow = getComputedStyle(node).overflowX;
      if (overflow === "auto" || overflow === "scroll") return node;
    }
    return null;
  }
  Promise.all(settled).then(function () {
    const tables = Array.from(document.querySelectorAll("table")).map(function (table, index) {
      const box = scroller(table);
      const label = table.caption ? table.caption.textContent : (table.rows.length ? table.rows[0].textContent : "");
      return {
        index: index,
        id: table.id,
        label: label.replace(/\\s+/g, " ").trim().slice(0, 80),
        shown: table.getClientRects().length > 0,
        right: table.getBoundingClientRect().right,
        scroller_right: box ? box.getBoundingClientRect().right : null,
        scroller: box ? describe(box) : null,
        scroller_has_heading: box ? box.querySelector("h1, h2, h3, h4, h5, h6") !== null : false,
      };
    });
    window.parent.postMessage({kind: "REPORT_ID", report: JSON.stringify({
      viewport: document.documentElement.clientWidth,
      images: images.map(function (img) { return [img.getAttribute("src"), img.naturalWidth]; }),
      tables: tables,
      dom: document.documentElement.outerHTML,
    })}, "*");
  });
})();
</script>""".replace("REPORT_ID", REPORT_ID)
# Holds the probed page in a frame of the phone's size (headless Chromium makes no window
# narrower than 500 px) and writes the frame's report where --dump-dom prints it.
FRAME_PAGE = """<!DOCTYPE html><html><head><title>probe</title></head><body style="margin:0">
<script>
addEventListener("message", function (event) {{
  if (!event.data || event.data.kind !== "{report_id}" || document.getElementById("{report_id}")) return;
  const report = document.createElement("pre");
  report.id = "{report_id}";
  report.textContent = event.data.report;
  document.body.appendChild(report);
}});
</script>
<iframe src="{src}" style="border:0; display:block; width:{width}px; height:{height}px"></iframe>
</body></html>"""
MIN_WINDOW_WIDTH = 500  # px; headless Chromium widens narrower windows to this
# Pages Sphinx writes besides the documents.
SPHINX_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                  "--virtual-time-budget=10000")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class PageReport:
    """What Chromium made of one page: its DOM after load and the probe's report."""

    dom: str
    viewport: int  # width of the window's content area, CSS px
    images: list[tuple[str, int]]  # [src, naturalWidth] per <img>
    # per <table>: index, id, label (caption or first row), shown, right (CSS px), and its nearest
    # horizontal scroller's right (CSS px), name and whether it holds a heading (None, None, False if none)
    tables: list[dict]


@dataclass(frozen=True)
class BookReport:
    """The toc's documents, the pages the build rendered and Chromium's report on each."""

    book_dir: Path
    documents: list[str]
    rendered: set[str]
    pages: dict[str, PageReport]


def toc_documents(toc: dict) -> list[str]:
    """Every document of a jb-book ``_toc.yml``: the root, then each chapter of each part."""
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def rendered_documents(html_dir: Path) -> set[str]:
    """The documents a build rendered, as toc names (``executed/05_method_comparison``)."""
    relative = [p.relative_to(html_dir) for p in html_dir.rglob("*.html")]
    rendered = {p.with_suffix("").as_posix() for p in relative
                if p.name not in SPHINX_PAGES and not any(part.startswith(("_", ".")) for part in p.parts)}
    return rendered - {"index"}  # index.html is Jupyter Book's redirect to the root document


def run_chromium(browser: str, profile_dir: Path, *arguments: str) -> str:
    """Run headless Chromium with ``arguments``; returns its stdout."""
    command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"chromium failed ({' '.join(arguments)}): {result.stderr[-2000:]}"
    return result.stdout


def read_page(browser: str, page: Path, profile_dir: Path, window: tuple[int, int] = PHONE) -> PageReport:
    """Load a copy of ``page`` with the probe in a frame of ``window`` (width, height) px; its report."""
    source = page.read_text(encoding="utf-8")
    probe = page.with_name(f".probe-{page.name}")
    frame = page.with_name(f".frame-{page.name}")
    probe.write_text(source.replace("</body>", PAGE_PROBE + "</body>", 1), encoding="utf-8")
    frame.write_text(FRAME_PAGE.format(report_id=REPORT_ID, src=probe.name, width=window[0], height=window[1]),
                     encoding="utf-8")
    try:
        dom = run_chromium(browser, profile_dir, f"--window-size={max(window[0], MIN_WINDOW_WIDTH)},{window[1]}",
                           "--dump-dom", frame.resolve().as_uri())
    finally:
        probe.unlink()
        frame.unlink()
    found = re.search(rf'<pre id="{REPORT_ID}"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, f"{page.name}: the page probe did not finish (page scripts failed or took too long)"
    report = json.loads(html_lib.unescape(found.group(1)))
    return PageReport(dom=report["dom"], viewport=int(report["viewport"]),
                      images=[(src, int(width)) for src, width in report["images"]], tables=report["tables"])


def read_book(browser: str, book_dir: Path, profile_dir: Path) -> BookReport:
    """Load every toc document that the build of ``book_dir`` rendered (``book_dir/_build/html``)."""
    html_dir = book_dir / "_build" / "html"
    documents = toc_documents(yaml.safe_load((book_dir / "_toc.yml").read_text()))
    rendered = rendered_documents(html_dir)
    pages = {doc: read_page(browser, html_dir / f"{doc}.html", profile_dir) for doc in documents if doc in rendered}
    return BookReport(book_dir, documents, rendered, pages)


def toc_problems(book: BookReport) -> list[str]:
    """How the rendered pages differ from the toc's documents; empty when they are the same."""
    missing, extra = sorted(set(book.documents) - book.rendered), sorted(book.rendered - set(book.documents))
    problems = [f"toc document not rendered: {doc}" for doc in missing]
    problems += [f"rendered page not in the toc: {doc}" for doc in extra]
    if len(set(book.documents)) != len(book.documents):
        problems.append("the toc lists a document twice")
    return problems


def page_problems(doc: str, page: Path, report: PageReport) -> list[str]:
    """Why ``page`` (document ``doc``) is not a chapter a reader can read, image by image."""
    problems = []
    title = re.search(r"<title>(.*?)</title>", report.dom, re.S)
    heading = re.search(r"<h1[^>]*>(.*?)</h1>", report.dom, re.S)
    if not (title and title.group(1).strip()):
        problems.append(f"{doc}: no title")
    if not heading:
        problems.append(f"{doc}: no heading")
    for text in (title.group(1) if title else "", heading.group(1) if heading else ""):
        if "404" in text or "not found" in text.lower():
            problems.append(f"{doc}: looks like an error page")
    for src, width in report.images:
        if src.startswith("data:"):
            if width <= 0:
                problems.append(f"{doc}: an inline image did not decode")
            continue
        target = (page.parent / src.split("#")[0].split("?")[0]).resolve()
        if not target.is_file():
            problems.append(f"{doc}: image {src} does not exist ({target})")
        elif width <= 0:
            problems.append(f"{doc}: image {src} did not load in the browser (naturalWidth 0)")
    return problems


def overflowing_tables(report: PageReport, slack: float = 1.0) -> list[str]:
    """Tables whose right edge passes the window and that do not scroll by themselves.

    A table is held when its nearest horizontal scroller ends within the window and holds
    no heading. A scroller with a heading is a section or the whole article, which moves
    the text sideways with the table (pydata-sphinx-theme makes its article container
    scroll so; sphinx-book-theme undoes that).
    """
    lost = []
    for table in report.tables:
        if not table["shown"] or table["right"] <= report.viewport + slack:
            continue
        scroller = table["scroller"]
        if scroller is None:
            why = "and nothing scrolls"
        elif table["scroller_has_heading"]:
            why = f"and only the whole {scroller} scrolls"
        elif table["scroller_right"] > report.viewport + slack:
            why = f"and its scroller {scroller} ends at {table['scroller_right']:.0f} px"
        else:
            continue
        name = f"#{table['id']}" if table["id"] else f"no. {table['index'] + 1}"
        lost.append(f"table {name} ({table['label']!r}) ends at {table['right']:.0f} px "
                    f"in a {report.viewport} px window {why}")
    return lost


class _FigureAudit(HTMLParser):
    """Collect each content image's src, alt and figure caption from an HTML page."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    NOT_CAPTION = {"caption-number", "headerlink"}  # "Fig. 1" and the "#" link are not a caption

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, set[str]]] = []  # open elements: tag, classes
        self.figures: list[dict] = []  # open <figure>s, innermost last: caption text, images
        self.images: list[dict] = []  # every content image: src, alt, figure (None outside one)

    def _inside(self, tag: str, css_class: str | None = None) -> bool:
        return any(t == tag and (css_class is None or css_class in c) for t, c in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        if tag == "img":
            if self._inside("article", "bd-article"):
                figure = self.figures[-1] if self.figures else None
                image = {"src": attributes.get("src") or "", "alt": attributes.get("alt"), "figure": figure}
                self.images.append(image)
            return
        if tag in self.VOID:
            return
        if tag == "figure":
            self.figures.append({"caption": ""})
        self.stack.append((tag, classes))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID and self.stack and self.stack[-1][0] == tag:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID or not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            closed, _ = self.stack.pop()
            if closed == "figure":
                self.figures.pop()
            if closed == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.figures and self._inside("figcaption") and not any(c & self.NOT_CAPTION for _, c in self.stack):
            self.figures[-1]["caption"] += data


def figure_problems(dom: str) -> list[str]:
    """Images of the page's content that lack alt text or a captioned ``<figure>``, by src.

    Alt text equal to the image's path (or its file name) counts as none: Sphinx writes the
    path when no alt text was given.
    """
    audit = _FigureAudit()
    audit.feed(dom)
    audit.close()
    problems = []
    for image in audit.images:
        src, alt = image["src"], (image["alt"] or "").strip()
        if not alt or alt in (src, src.rsplit("/", 1)[-1]):
            problems.append(f"image {src}: no alt text")
        if image["figure"] is None:
            problems.append(f"image {src}: not in a <figure>")
        elif not image["figure"]["caption"].strip():
            problems.append(f"image {src}: its <figure> has no caption")
    return problems


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; raises ValueError when ``path`` is not a PNG."""
    header = path.read_bytes()[:24]
    if len(header) < 24 or header[:8] != PNG_SIGNATURE or header[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", header[16:24])


def take_screenshots(browser: str, book_dir: Path, profile_dir: Path) -> dict[Path, tuple[int, int]]:
    """Screenshot ``SCREENSHOT_PAGES`` at ``SCREENSHOT_SIZES`` into ``book_dir/_build/screenshots``.

    Returns the size asked for, (width, height) in px, per file written.
    """
    root = toc_documents(yaml.safe_load((book_dir / "_toc.yml").read_text()))[0]
    out_dir = book_dir / "_build" / "screenshots"
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = {}
    for doc in (root if name == "root" else name for name in SCREENSHOT_PAGES):
        page = book_dir / "_build" / "html" / f"{doc}.html"
        for size_name, width, height in SCREENSHOT_SIZES:
            path = out_dir / f"{Path(doc).name}-{size_name}.png"
            path.unlink(missing_ok=True)
            run_chromium(browser, profile_dir, f"--window-size={width},{height}", f"--screenshot={path}",
                         page.resolve().as_uri())
            shots[path] = (width, height)
    return shots


# --- on hand-written HTML, without a browser ---------------------------------------------

FIGURES_PAGE = """<html><body>
<header><img src="_static/logo.svg"></header>
<article class="bd-article">
<figure class="align-default" id="fig-froc">
  <img alt="FROC curves of the five methods" src="../_images/froc.png" />
  <figcaption><p><span class="caption-number">Fig. 1 </span><span class="caption-text">FROC on the test
  set.</span><a class="headerlink" href="#fig-froc">#</a></p></figcaption>
</figure>
<figure class="align-default" id="fig-empty">
  <img alt="Burden scatter" src="../_images/burden.png">
  <figcaption><p><span class="caption-number">Fig. 2 </span><a class="headerlink" href="#fig-empty">#</a></p>
  </figcaption>
</figure>
<div class="cell_output docutils container">
  <img alt="../_images/bare.png" src="../_images/bare.png" />
</div>
<p><img src="../_images/inline.png"></p>
</article>
</body></html>"""


def test_figure_problems_names_each_image_that_lacks_caption_or_alt() -> None:
    assert figure_problems(FIGURES_PAGE) == [
        "image ../_images/burden.png: its <figure> has no caption",
        "image ../_images/bare.png: no alt text",  # Sphinx's placeholder: the path itself
        "image ../_images/bare.png: not in a <figure>",
        "image ../_images/inline.png: no alt text",
        "image ../_images/inline.png: not in a <figure>",
    ]


def test_figure_problems_passes_a_captioned_figure_and_ignores_the_theme() -> None:
    start, end = FIGURES_PAGE.index('<figure class="align-default" id="fig-empty">'), FIGURES_PAGE.index("</article>")
    assert figure_problems(FIGURES_PAGE[:start] + FIGURES_PAGE[end:]) == []


def test_overflowing_tables_spares_tables_that_scroll_by_themselves() -> None:
    def table(index: int, right: float, scroller: str | None = None, scroller_right: float | None = None,
              has_heading: bool = False, shown: bool = True) -> dict:
        return {"index": index, "id": "", "label": "precision recall", "shown": shown, "right": right,
                "scroller": scroller, "scroller_right": scroller_right, "scroller_has_heading": has_heading}

    report = PageReport(dom="", viewport=390, images=[], tables=[
        table(0, 380.0),  # fits
        table(1, 900.0, "div.output.text_html", 370.0),  # wide, scrolls in its output
        table(2, 900.0),  # wide, nothing scrolls: columns lost
        table(3, 900.0, "div.wide", 900.0),  # its scroller is itself off the page
        table(4, 900.0, "div.bd-article-container", 374.0, has_heading=True),  # the article scrolls
        table(5, 900.0, shown=False),  # hidden (a collapsed cell)
    ])
    assert overflowing_tables(report) == [
        "table no. 3 ('precision recall') ends at 900 px in a 390 px window and nothing scrolls",
        "table no. 4 ('precision recall') ends at 900 px in a 390 px window and its scroller div.wide ends at 900 px",
        "table no. 5 ('precision recall') ends at 900 px in a 390 px window "
        "and only the whole div.bd-article-container scrolls",
    ]


def test_png_size_reads_the_header(tmp_path: Path) -> None:
    png = tmp_path / "one.png"
    png.write_bytes(PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 390, 1600) + b"\x08\x02")
    assert png_size(png) == (390, 1600)
    (tmp_path / "not.png").write_text("GIF89a")
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(tmp_path / "not.png")


# --- in Chromium ---------------------------------------------------------------------------

def require_browser() -> str:
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no Chromium found (tried {', '.join(BROWSERS)}): `apt-get install chromium` or run `make test`")
    return browser


def test_page_probe_measures_tables_against_a_phone_window(tmp_path: Path) -> None:
    wide = "<table><tr>" + "<td>0.123456</td>" * 40 + "</tr></table>"
    page = tmp_path / "tables.html"
    page.write_text(f'<html><head><title>t</title></head><body style="margin:0"><h1>t</h1>{wide}'
                    f'<div class="output" style="overflow-x:auto">{wide}</div>'
                    f'<section style="overflow-x:auto"><h2>s</h2>{wide}</section>'
                    f'<table><tr><td>narrow</td></tr></table></body></html>', encoding="utf-8")
    report = read_page(require_browser(), page, tmp_path / "chromium-profile")
    assert report.viewport == PHONE[0]
    assert [(t["index"], t["scroller"], t["scroller_has_heading"]) for t in report.tables] == [
        (0, None, False), (1, "div.output", False), (2, "section", True), (3, None, False)]
    assert report.tables[0]["right"] > PHONE[0] and report.tables[3]["right"] < PHONE[0]
    assert [problem.split(" (")[0] for problem in overflowing_tables(report)] == ["table no. 1", "table no. 3"]
    assert "<h1>t</h1>" in report.dom


@pytest.fixture(scope="module")
def chromium_book(smoke_study, tmp_path_factory: pytest.TempPathFactory) -> BookReport:
    """Every page of the smoke book as Chromium loads it in a phone-wide window."""
    browser = require_browser()
    return read_book(browser, smoke_study.project / "book", tmp_path_factory.mktemp("chromium-profile"))


@pytest.mark.slow
def test_every_chapter_opens_in_chromium(chromium_book: BookReport) -> None:
    html_dir = chromium_book.book_dir / "_build" / "html"
    assert toc_problems(chromium_book) == []
    problems = [problem for doc, report in chromium_book.pages.items()
                for problem in page_problems(doc, html_dir / f"{doc}.html", report)]
    assert problems == []
    figures = [src for doc, report in chromium_book.pages.items() if doc.startswith("executed/")
               for src, _ in report.images if "_images/" in src]
    assert len(figures) >= 4, "the results chapters lost their figures"


@pytest.mark.slow
def test_no_table_runs_off_a_phone_screen(chromium_book: BookReport) -> None:
    assert chromium_book.pages, "no page was rendered"
    lost = [f"{doc}: {problem}" for doc, report in chromium_book.pages.items()
            for problem in overflowing_tables(report)]
    assert lost == [], "tables wider than a 390 px screen that do not scroll:\n" + "\n".join(lost)


@pytest.mark.slow
def test_every_figure_has_a_caption_and_alt_text(chromium_book: BookReport) -> None:
    assert chromium_book.pages, "no page was rendered"
    problems = [f"{doc}: {problem}" for doc, report in chromium_book.pages.items()
                for problem in figure_problems(report.dom)]
    assert problems == [], "figures without a caption or alt text:\n" + "\n".join(problems)


@pytest.mark.slow
def test_screenshots_of_the_abstract_and_a_results_chapter(smoke_study, tmp_path: Path) -> None:
    browser = require_browser()
    shots = take_screenshots(browser, smoke_study.project / "book", tmp_path / "chromium-profile")
    assert len(shots) == len(SCREENSHOT_PAGES) * len(SCREENSHOT_SIZES)
    for path, size in shots.items():
        assert path.is_file() and path.stat().st_size > 0, f"no screenshot at {path}"
        assert png_size(path) == size, f"{path.name}: {png_size(path)} px, asked for {size}"
