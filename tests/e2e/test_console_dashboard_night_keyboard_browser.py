"""QA staff on a night shift use the dashboard by keyboard alone, at 1366x768, in Debian's Chromium.

Every Tab stop of the dashboard's date fields shows where the focus is. Chromium gives a date field four stops
(month, day, year, and its calendar button); on the calendar button ``:focus-visible`` did not match the field, so
the focus ring vanished there and the next Tab seemed to do nothing visible. And a failed study whose reason holds
CR/LF, markup and a right-to-left override shows on one line of the volume table, in stored order, escapes visible.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, serving
from dashboard_support import _event, draft_tables, insert_story
from radtrace.audit.events import EventType
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision

pytestmark = [pytest.mark.e2e, needs_chromium]

HOSTILE = "model server said:\r\n<b>bold</b> \u202eLIAF\u202c 500"
#: The focused element's name, outline style and width, and whether it matches :focus, :focus-within, :focus-visible.
FOCUS = """() => { const e = document.activeElement; const s = getComputedStyle(e);
                   return [e.name || e.textContent.trim(), s.outlineStyle, s.outlineWidth, e.matches(":focus"),
                           e.matches(":focus-within"), e.matches(":focus-visible")]; }"""


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    with tab(browser, height=768) as opened:
        opened.set_viewport_size({"width": 1366, "height": 768})
        yield opened


def test_each_tab_stop_of_the_date_fields_shows_the_focus_and_a_hostile_reason_reads_on_one_line(
    page: Page, tmp_path: Path
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    uids, tables = draft_tables("1.2.826.0.1.3680043.10.1207.97", start, {"failed": {1: {}}})
    tables[Revision][0].update(state="failed", reason=HOSTILE, finished_at=start, reported_at=None)
    failed = _event(
        EventType.STUDY_FAILED, uids["failed"], {"revision": 1, "reason": HOSTILE}, outcome="serious_failure"
    )
    insert_story(store, tables, [failed], start)
    add_user(store, "qa.night", "qa")
    with serving(store, console_settings(tmp_path, store)) as url:
        sign_in(page, url, "qa.night")
        page.get_by_role("link", name="Dashboard").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="QA dashboard")).to_be_visible()
        page.locator('input[name="from"]').focus()
        stops = [page.evaluate(FOCUS)]
        while stops[-1][0] in ("from", "to"):
            page.keyboard.press("Tab")
            stops.append(page.evaluate(FOCUS))
        fields = [stop for stop in stops if stop[0] in ("from", "to")]
        assert len(fields) >= 2, stops
        # before: ['from', 'none', '3px', False, True, False] at each field's calendar button
        assert all(stop[1] != "none" for stop in fields), fields

        row = page.locator("tr.bad").filter(has_text="failed attempt")
        expect(row).to_have_count(1)
        cell = row.locator("td").first
        expect(cell).to_contain_text("model server said:⟨U+000D⟩⟨U+000A⟩<b>bold</b> ⟨U+202E⟩LIAF⟨U+202C⟩ 500")
        read = page.locator("tr").filter(has_text="received (revisions opened)").locator("td").first
        assert cell.bounding_box()["height"] == read.bounding_box()["height"]  # one line, as the row above
    store.dispose()
