"""The QA lead's pages on a 1366 by 768 laptop at 200 % zoom (683 by 384 CSS pixels), in Debian's Chromium: the
dashboard, the audit explorer and a study's timeline reflow instead of scrolling the whole page sideways (WCAG
1.4.10); a wide table scrolls in its own named region, which the keyboard reaches.

Before, the audit explorer's event table made the page 754 CSS pixels wider than the window, a study's timeline 272
and the dashboard's agreement by model version 26 (measured against 'radtrace serve' with the demo model and the
real films of tests/data): the filters and headings scrolled away with the table. A reading by the demo pipeline, a
radiologist's decision through the study page, then the qa account's pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from browser_support import needs_chromium, sign_in, tab
from console_support import ServedStudy, served_study

pytestmark = [pytest.mark.e2e, needs_chromium]

#: 1366 x 768 at 200 %
WIDTH, HEIGHT = 683, 384


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStudy]:
    with served_study(tmp_path_factory.mktemp("qa-zoom"), 41, {"dr.reader": "radiologist", "qa.lead": "qa"}) as served:
        yield served


def _overflow(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def test_the_qa_pages_reflow_at_200_percent_and_wide_tables_scroll_in_a_named_region(
    browser: Any, site: ServedStudy
) -> None:
    with tab(browser) as page:  # a decision, so that the agreement tables have a row
        sign_in(page, site.url, "dr.reader")
        page.goto(f"{site.url}{site.path}")
        page.locator("#findings tr.finding-row button.accept").first.click()
        page.wait_for_url("**#finding-*")
    with tab(browser) as page:
        page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
        sign_in(page, site.url, "qa.lead")
        page.goto(f"{site.url}/console/audit")
        timeline = page.locator("a.timeline-link").first.get_attribute("href")
        pages = {"dashboard": ("/console/dashboard", "#agreement-models"),
                 "audit explorer": ("/console/audit", "#audit-events"),
                 "timeline": (timeline, "#timeline-events")}  # fmt: skip
        for name, (path, table) in pages.items():
            page.goto(f"{site.url}{path}")
            assert page.locator(table).count() == 1, name
            assert _overflow(page) <= 0, f"{name}: {_overflow(page)} CSS pixels wider than the window"
            region = page.locator(f".table-scroll:has({table})")
            assert region.count() == 1, f"{name}: {table} is not in a scroll region"
            assert region.get_attribute("role") == "region"
            assert region.get_attribute("aria-label")
            assert region.get_attribute("tabindex") == "0"  # the keyboard can scroll it
