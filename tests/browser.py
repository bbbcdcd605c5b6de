"""Open a page in a real headless Chromium (Debian's `chromium`, driven by Playwright) and report
what a person would see: console errors, failed requests, a screenshot."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The machines' closed network refuses Chromium's background connections; these flags stop them.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def render_in_chromium(path: str, screenshot: str) -> dict:
    """Load a local HTML file; returns {"errors": [...], "requests": [...], "title": ..., "images": n}."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors, requests = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto("file://" + os.path.abspath(path), wait_until="load")
            loaded = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
            images = page.evaluate("document.images.length")
            page.screenshot(path=screenshot, full_page=True)
            title = page.title()
        finally:
            browser.close()
    return {"errors": errors, "requests": requests, "title": title, "images": images, "loaded_images": loaded}
