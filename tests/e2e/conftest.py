"""Fixtures of the end-to-end tier: ``browser``, Debian's Chromium for the console's browser tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium under Playwright, launched once per test module (see tests/browser_support.py)."""
    # Imported here, not at the top: without Playwright, importing browser_support skips the module that does,
    # and here that would be every end-to-end test, not only the browser tests.
    from browser_support import chromium

    with chromium() as launched:
        yield launched
