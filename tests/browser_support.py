"""What the console's browser tests share: Debian's Chromium under Playwright, a checked tab, sign-in, screenshots.

Playwright for Python drives the distribution's ``chromium`` (``playwright install`` cannot download browsers
here). A module importing this one is skipped when Playwright is not installed, and marks itself
:data:`needs_chromium` (skipped without the ``chromium`` package); it uses Playwright's :data:`Page` and
:data:`expect` from here. :func:`chromium` launches the browser (once per test module: the ``browser`` fixture of
tests/e2e/conftest.py); :func:`tab` opens a fresh context and, when the block ends, fails on any
console error the page raised (a CSP violation, a failed asset) except those the test says it provokes;
:func:`sign_in` goes through the login form; :func:`wait_until` waits for a script expression to hold;
:func:`screenshot` writes a picture to the test's directory, and to
``docs/`` as a 256-colour PNG when ``CONSOLE_SCREENSHOTS=docs`` (how docs/ui.md's pictures are made).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console_support import PASSWORD

playwright_sync = pytest.importorskip("playwright.sync_api")
Page = playwright_sync.Page
expect = playwright_sync.expect
#: Every browser test module's skip mark (with ``pytest.mark.e2e`` in its ``pytestmark``).
needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium package is not installed"
)
DOCS = Path(__file__).resolve().parents[1] / "docs"


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, launched headless through Playwright."""
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def tab(browser: Any, *, height: int = 900, timeout_ms: int = 15_000, allowed: tuple[str, ...] = ()) -> Iterator[Any]:
    """A fresh tab (1360 by ``height`` pixels, downloads accepted); afterwards no console error may have occurred
    but those containing one of ``allowed`` (e.g. ``"status of 403"`` for a refusal the test provokes)."""
    context = browser.new_context(viewport={"width": 1360, "height": height}, accept_downloads=True)
    context.set_default_timeout(timeout_ms)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert [e for e in errors if not any(a in e for a in allowed)] == []


def sign_in(page: Any, url: str, name: str) -> None:
    """Sign in through the login form and wait for the signed-in page."""
    page.goto(f"{url}/console/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("who")).to_contain_text(name)


def screenshot(page: Any, directory: Path, name: str, **options: Any) -> Path:
    """A screenshot of ``page`` (Playwright's ``options``: full_page, clip, …) into ``directory``, and into docs/
    when ``CONSOLE_SCREENSHOTS=docs``."""
    shot = directory / name
    page.screenshot(path=str(shot), **options)
    assert shot.stat().st_size > 10_000
    if os.environ.get("CONSOLE_SCREENSHOTS") == "docs":  # a 256-colour palette keeps the repository small
        from PIL import Image

        with Image.open(shot) as picture:
            picture.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(DOCS / name, optimize=True)
    return shot


def wait_until(page: Any, expression: str, timeout_ms: int = 10_000) -> None:
    """Wait until the JavaScript ``expression`` is true in ``page``, checking every 50 ms with ``page.evaluate``.

    Not Playwright's ``wait_for_function``: when the expression is not true at once, its polling evaluates the
    string again inside the page, which the console's Content Security Policy (no 'unsafe-eval') refuses with an
    EvalError: a test that failed only when the page was slower than its first check (microsoft/playwright#7395).
    """
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true within {timeout_ms} ms: {expression}"
        time.sleep(0.05)
