"""Open every chapter of the rendered smoke-profile book in headless Chromium.

For each document of ``book/_toc.yml`` the page is loaded from disk and checked:
it has a title and is not a "404" page, and every ``<img>`` in it points to a file
that exists and that the browser decoded (``naturalWidth > 0``). Chromium's
``--dump-dom`` prints the DOM only, so the image check runs in the page itself: a
copy of the page, written beside it (relative paths resolve the same), gets a
script that makes every image load eagerly, waits for all of them, and appends a
``<pre id="cmbstudy-image-report">`` with ``[src, naturalWidth]`` per image to the
DOM that Chromium then dumps. The rendered pages must be exactly the toc's.

Chromium is the Debian package ``chromium`` (``make test`` installs it when
``apt-get`` is available); without it the test is skipped.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
REPORT_ID = "cmbstudy-image-report"
# Runs in the page: load every image (lazy ones too), then write what the browser decoded.
IMAGE_PROBE = f"""<script>
(function () {{
  const images = Array.from(document.images);
  images.forEach(function (img) {{ img.loading = "eager"; }});
  const settled = images.map(function (img) {{
    return img.complete ? Promise.resolve() : new Promise(function (done) {{ img.onload = img.onerror = done; }});
  }});
  Promise.all(settled).then(function () {{
    const report = document.createElement("pre");
    report.id = "{REPORT_ID}";
    report.textContent = JSON.stringify(images.map(function (img) {{
      return [img.getAttribute("src"), img.naturalWidth];
    }}));
    document.body.appendChild(report);
  }});
}})();
</script>"""
# Pages Sphinx writes besides the documents.
SPHINX_PAGES = {"genindex.html", "search.html", "py-modindex.html"}


def find_browser() -> str | None:
    """Path of a headless-capable Chromium, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def toc_documents(toc: dict) -> list[str]:
    """Every document of a jb-book ``_toc.yml``: the root, then each chapter of each part."""
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def dump_dom(browser: str, page: Path, profile_dir: Path) -> str:
    """The DOM of ``page`` after load, as headless Chromium serialises it."""
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-dev-shm-usage", f"--user-data-dir={profile_dir}", "--virtual-time-budget=10000",
               "--dump-dom", page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"chromium failed on {page}: {result.stderr[-2000:]}"
    return result.stdout


def check_page(browser: str, page: Path, profile_dir: Path) -> list[tuple[str, int]]:
    """Load ``page`` in Chromium; assert it is a real chapter and its images decode. Returns [src, width]."""
    source = page.read_text(encoding="utf-8")
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(source.replace("</body>", IMAGE_PROBE + "</body>", 1), encoding="utf-8")
    try:
        dom = dump_dom(browser, probe, profile_dir)
    finally:
        probe.unlink()
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and title.group(1).strip(), f"{page.name}: no title"
    heading = re.search(r"<h1[^>]*>(.*?)</h1>", dom, re.S)
    assert heading, f"{page.name}: no heading"
    for text in (title.group(1), heading.group(1)):
        assert "404" not in text and "not found" not in text.lower(), f"{page.name}: looks like an error page"
    report = re.search(rf'<pre id="{REPORT_ID}"[^>]*>(.*?)</pre>', dom, re.S)
    assert report, f"{page.name}: the image probe did not finish (page scripts failed or took too long)"
    images = [(src, int(width)) for src, width in json.loads(html_lib.unescape(report.group(1)))]
    for src, width in images:
        if src.startswith("data:"):
            assert width > 0, f"{page.name}: an inline image did not decode"
            continue
        target = (page.parent / src.split("#")[0].split("?")[0]).resolve()
        assert target.is_file(), f"{page.name}: image {src} does not exist ({target})"
        assert width > 0, f"{page.name}: image {src} did not load in the browser (naturalWidth 0)"
    return images


def check_book(browser: str, book_dir: Path, profile_dir: Path) -> dict[str, list[tuple[str, int]]]:
    """Check every toc document of a built book (``book_dir/_build/html``); returns images per document."""
    html_dir = book_dir / "_build" / "html"
    documents = toc_documents(yaml.safe_load((book_dir / "_toc.yml").read_text()))
    relative = [p.relative_to(html_dir) for p in html_dir.rglob("*.html")]
    rendered = {p.with_suffix("").as_posix() for p in relative
                if p.name not in SPHINX_PAGES and not any(part.startswith(("_", ".")) for part in p.parts)}
    pages = rendered - {"index"}  # index.html is Jupyter Book's redirect to the root document
    assert pages == set(documents) and len(pages) == len(documents), (
        f"rendered pages differ from the toc: missing {sorted(set(documents) - pages)}, "
        f"extra {sorted(pages - set(documents))}"
    )
    return {doc: check_page(browser, html_dir / f"{doc}.html", profile_dir) for doc in documents}


def test_every_chapter_opens_in_chromium(smoke_study, tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no Chromium found (tried {', '.join(BROWSERS)}): `apt-get install chromium` or run `make test`")
    images = check_book(browser, smoke_study.project / "book", tmp_path / "chromium-profile")
    assert len(images) == len(toc_documents(yaml.safe_load((smoke_study.project / "book" / "_toc.yml").read_text())))
    figures = [src for doc, found in images.items() if doc.startswith("executed/") for src, _ in found]
    assert len(figures) >= 4, "the results chapters lost their figures"
