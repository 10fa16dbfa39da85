"""Open a page's scan viewers in headless Chromium, offline, and say what they drew (Playwright).

Used by tests/integration/test_viewer_browser.py and benchmarks/scan_viewers.py. Chromium is the
Debian package (``make test`` installs it); Playwright drives it through ``executable_path`` and
downloads no browser of its own. Each page is opened in a context with the network off
(``offline=True``); every request the page makes is recorded, so a test can check that none left
the page's folder.

What :func:`inspect_viewers` reports per viewer (``.cmb-viewer`` element), read from the WebGL
canvas with ``readPixels`` right after a draw:

- its state ("ready" or "error", and the error), and ``ready_ms``, the milliseconds from the page's
  start to its first scan drawn and shown by the browser (the viewer records it);
- the share of canvas pixels that are not the black background and the number of grey levels
  (a blank canvas has one);
- how many pixels change when the outline checkbox is clicked off (``toggled``), and again on
  (``restored``: 0 when the picture comes back exactly), and when the coronal plane is picked;
- the name of the mark on the status line after a click on the last row of the table, and that row's
  mark name;
- how many volumes NiiVue holds (the image shown) and whether it holds the outlines (its drawing layer).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
DESKTOP, PHONE = (1280, 900), (390, 844)  # CSS px
SETTLED = ("[...document.querySelectorAll('.cmb-viewer')].every("
           "e => (e.dataset.state === 'ready' && !e.dataset.busy) || e.dataset.state === 'error')")
PROBE = """async () => {
  function pixels(v) {
    v.nv.drawScene();
    const gl = v.nv.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight, px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    return px;
  }
  function drawn(px) {
    let lit = 0; const greys = new Set();
    for (let i = 0; i < px.length; i += 4) {
      if (px[i] || px[i + 1] || px[i + 2]) lit++;
      if (px[i] === px[i + 1] && px[i + 1] === px[i + 2]) greys.add(px[i]);
    }
    return [lit / (px.length / 4), greys.size];
  }
  function differ(a, b) {
    let n = 0;
    for (let i = 0; i < a.length; i += 4) if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2]) n++;
    return n;
  }
  const out = [];
  for (const element of document.querySelectorAll('.cmb-viewer')) {
    const v = (window.cmbViewer ? window.cmbViewer.viewers : []).find(x => x.element === element);
    const report = {state: element.dataset.state || 'none', error: element.dataset.error || '',
                    ready_ms: Number(element.dataset.readyMs || -1), scan: element.dataset.scan || '',
                    image: element.dataset.image || ''};
    if (v && report.state === 'ready') {
      const box = element.querySelector('[data-control=outline]');
      const on = pixels(v); box.click(); const off = pixels(v); box.click(); const back = pixels(v);
      element.querySelector('[data-plane=coronal]').click(); const coronal = pixels(v);
      element.querySelector('[data-plane=axial]').click();
      const rows = [...element.querySelectorAll('tr[data-mark]')].filter(r => !r.hidden);
      if (rows.length) rows[rows.length - 1].click();
      Object.assign(report, {lit: drawn(on)[0], greys: drawn(on)[1], toggled: differ(on, off),
                             restored: differ(on, back), coronal: differ(on, coronal), rows: rows.length,
                             last_row: rows.length ? rows[rows.length - 1].cells[0].textContent.trim() : '',
                             named: element.querySelector('.cmb-status').textContent.split(' · ')[0]
                               .split(' — ')[0].trim(),
                             volumes: v.nv.volumes.length, outlined: Boolean(v.nv.drawBitmap)});
    }
    out.push(report);
  }
  return out;
}"""


@dataclass(frozen=True)
class PageViewers:
    """What the viewers of one page did: one report per viewer, the page's requests and errors."""

    viewers: list[dict]
    requests: list[str]  # every URL the page asked for
    errors: list[str]  # uncaught exceptions and console errors


def find_browser() -> str | None:
    """Path of a headless-capable Chromium, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@contextmanager
def open_browser(executable: str) -> Iterator[object]:
    """A Playwright Chromium on ``executable`` (closed on exit)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def inspect_viewers(browser: object, page_path: Path, window: tuple[int, int] = DESKTOP,
                    picks: tuple[str, ...] = (), image: str | None = None, screenshot: Path | None = None, timeout_ms: int = 60_000) -> PageViewers:
    """Open ``page_path`` offline in a ``window`` (width, height) and probe its viewers.

    Args:
        picks: values to choose in the first viewer's scan picker, one right after the other (no wait
            between them: a reader clicking through), before the probe waits for the last to be drawn.
        image: the value to choose in the first viewer's image picker after that (e.g. "1", the phase).
        screenshot: where to save a PNG of the whole page, after the probe.
    """
    context = browser.new_context(offline=True, viewport={"width": window[0], "height": window[1]})
    try:
        page = context.new_page()
        requests: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(Path(page_path).resolve().as_uri())
        page.wait_for_function(SETTLED, timeout=timeout_ms)
        for pick in picks:
            page.select_option(".cmb-viewer [data-control=scan]", pick)
        page.wait_for_function(SETTLED, timeout=timeout_ms)
        if image is not None:
            page.select_option(".cmb-viewer [data-control=image]", image)
            page.wait_for_function(SETTLED, timeout=timeout_ms)
        viewers = page.evaluate(PROBE)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        return PageViewers(viewers, requests, errors)
    finally:
        context.close()
