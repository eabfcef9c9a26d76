"""The console for a radiologist who uses a screen reader, the keyboard alone, or the browser zoomed to 200 %, and
with a long worklist (Debian's Chromium under Playwright, uvicorn on a local port).

Checked from outside, as assistive technology sees the page: every control a person can reach has a name, and on
the study page no two name the same thing ("Accept" six times told a screen-reader user nothing of which
finding); at 200 % zoom (a 1360-pixel window shows 680 CSS pixels) the pages reflow instead of scrolling sideways
(WCAG 1.4.10), and the decision buttons stay reachable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, reported_study, serving, study_path
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.console import seed_worklist

pytestmark = [pytest.mark.e2e, needs_chromium]

#: For each reachable control: its role-ish kind and the name assistive technology announces (Chromium's own
#: accessible-name computation is not exposed to scripts; this follows its order: aria-labelledby, aria-label,
#: <label>, the button's text, title, placeholder).
NAMES = """() => Array.from(document.querySelectorAll('a[href], button, input, select, textarea'))
  .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
  .map((el) => {
    const by = el.getAttribute('aria-labelledby');
    const name = (by && by.split(' ').map((id) => document.getElementById(id)?.textContent || '').join(' '))
      || el.getAttribute('aria-label') || (el.labels && el.labels[0] && el.labels[0].textContent)
      || ((el.tagName === 'BUTTON' || el.tagName === 'A') && el.textContent) || el.title || el.placeholder || '';
    return [el.tagName.toLowerCase() + (el.name ? '[' + el.name + ']' : ''), name.replace(/\\s+/g, ' ').trim()];
  })"""


@dataclass
class Site:
    url: str
    study: str
    path: str  # the study page's address (by the study's handle)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-access")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(root, store, profile="deepmedix-r1")
    study = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=91,
                           stat=True, name="DOE^JANE")  # fmt: skip
    seed_worklist(store, 2000)  # a long night's worklist
    add_user(store, "dr.reader", "radiologist")
    with serving(store, settings) as url:
        yield Site(url, study, study_path(store, study))
    store.dispose()


def _names(page: Page) -> list[tuple[str, str]]:
    return [tuple(pair) for pair in page.evaluate(NAMES)]


def test_every_control_has_a_name_and_the_study_page_names_each_decision(browser: Any, site: Site) -> None:
    with tab(browser) as page:
        sign_in(page, site.url, "dr.reader")
        for path in ("/console/worklist", site.path, "/console/agreement"):
            page.goto(f"{site.url}{path}")
            unnamed = [kind for kind, name in _names(page) if not name]
            assert unnamed == [], (path, unnamed)
        page.goto(f"{site.url}{site.path}")
        controls = [(kind, name) for kind, name in _names(page) if kind.startswith(("button", "input", "select"))]
        repeated = sorted({pair for pair in controls if controls.count(pair) > 1})
        assert repeated == [], repeated
        label = page.locator("#findings tr.finding-row").first.get_attribute("data-label")
        expect(page.get_by_role("button", name=f"Accept {label}", exact=True)).to_be_visible()


@pytest.mark.parametrize("path", ["worklist", "study", "agreement"])
def test_at_200_percent_zoom_the_pages_reflow_and_decisions_stay_reachable(browser: Any, site: Site,
                                                                            path: str) -> None:  # fmt: skip
    context = browser.new_context(viewport={"width": 680, "height": 450})  # 1360 x 900 at 200 %
    page = context.new_page()
    try:
        sign_in(page, site.url, "dr.reader")
        url = {"worklist": "/console/worklist", "study": site.path,
               "agreement": "/console/agreement"}[path]  # fmt: skip
        page.goto(f"{site.url}{url}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path}: {overflow} CSS pixels wider than the window (sideways scrolling)"
        if path == "study":
            accept = page.locator("#findings tr.finding-row button.accept").first
            accept.scroll_into_view_if_needed()
            box = accept.bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= 680
            # and it is not under anything: in one column the image panel stayed in view (sticky) over the findings
            on_top = ("b => { const r = b.getBoundingClientRect(); "
                      "return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === b; }")  # fmt: skip
            for button in page.locator("#findings tr.finding-row button.accept").all():
                button.scroll_into_view_if_needed()
                assert button.evaluate(on_top), f"{button.get_attribute('aria-label')} is covered"
    finally:
        context.close()


def test_a_long_worklist_is_walked_with_the_keyboard_and_the_selection_stays_in_view(browser: Any, site: Site) -> None:
    # the seeded studies have worklist rows but no reading: opening one is a 404 page, which the test allows
    with tab(browser, height=600, allowed=("status of 404",)) as page:
        sign_in(page, site.url, "dr.reader")
        rows = page.locator("#worklist tr.row")
        expect(rows.first).to_have_class(re.compile(r"\bselected\b"))
        for _ in range(40):
            page.keyboard.press("j")
        selected = page.locator("#worklist tr.row.selected")
        expect(selected).to_have_count(1)
        expect(selected).to_be_in_viewport()
        href = selected.get_attribute("data-href")
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{site.url}{href}")


def test_a_screen_reader_hears_what_j_and_k_select(browser: Any, site: Site) -> None:
    with tab(browser) as page:
        sign_in(page, site.url, "dr.reader")
        page.goto(f"{site.url}{site.path}")
        rows = page.locator("#findings tr.finding-row")
        second = rows.nth(1).get_attribute("data-label")
        page.keyboard.press("j")
        expect(rows.nth(1)).to_have_attribute("aria-current", "true")
        expect(rows.nth(0)).not_to_have_attribute("aria-current", "true")
        announce = page.locator("#announce")
        expect(announce).to_have_attribute("aria-live", "polite")
        expect(announce).to_have_text(re.compile(rf"^Selected: {re.escape(str(second))}, model says \w+, not decided$"))
        page.goto(f"{site.url}/console/worklist")
        expect(announce).to_have_text(re.compile(r"^Selected: (STAT|routine), .+, accession \S+$"))
