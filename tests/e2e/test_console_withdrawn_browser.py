"""A withdrawn draft in the browser at 1366x768 (Debian's Chromium under Playwright, uvicorn on a free local port).

The PACS re-sent the image of the oldest draft under another patient. "Start reading" opens the next draft a
radiologist can sign, not the withdrawn one (before: the withdrawn one, first by age); the worklist row of the
withdrawn draft says it is not offered, without widening the page. A radiologist rejects a finding of the withdrawn
draft (rejecting is always taken): QA's dashboard leaves that decision out of the agreement table and says so
(before: counted as a rejection of the model's finding), and its note lists the decision (reader, decision, why)
without widening the page, with a CSV and a link to the study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from browser_support import expect, needs_chromium, screenshot
from console_support import PASSWORD, add_user, console_settings, reported_study, serving, study_path
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision, Study

pytestmark = [pytest.mark.e2e, needs_chromium]

WIDTH, HEIGHT = 1366, 768


def _sign_in(page: Any, url: str, name: str) -> None:
    page.goto(f"{url}/console/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("who")).to_contain_text(name)


def _fits(page: Any) -> None:
    """The page does not scroll sideways at 1366 pixels."""
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH


def test_start_reading_skips_a_withdrawn_draft_and_the_dashboard_leaves_its_decision_out(
    browser: Any, tmp_path: Path
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(tmp_path, store, sync_interval_s=0)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    withdrawn = reported_study(settings, store, reader, seed=311, age_s=900, name="OLDEST^DRAFT")
    readable = reported_study(settings, store, reader, seed=312, age_s=300, name="NEXT^DRAFT")
    with store.session("the PACS re-sent the image under another patient (as the listener marks it)") as session:
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == withdrawn))
        session.execute(sa.update(Revision).where(Revision.study_id == study_id).values(reassigned_at=utc_now()))
    add_user(store, "dr.read", "radiologist")
    add_user(store, "qa.watch", "qa")
    errors: list[str] = []
    try:
        with serving(store, settings) as url:
            context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
            context.set_default_timeout(15_000)
            page = context.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            _sign_in(page, url, "dr.read")
            page.goto(f"{url}/console/worklist")
            note = page.get_by_test_id("not-offered")
            expect(note).to_have_count(1)
            expect(note).to_be_visible()
            expect(note).to_have_text("withdrawn: not offered by Start reading until checked")
            _fits(page)
            screenshot(page, tmp_path, "withdrawn-worklist.png")

            page.click("#start")
            page.wait_for_url(f"**{study_path(store, readable)}**")

            page.goto(f"{url}{study_path(store, withdrawn)}")
            expect(page.get_by_test_id("image-reassigned")).to_be_visible()
            page.locator("form.finding-form button.reject").first.click()
            page.wait_for_load_state()
            _fits(page)
            context.close()

            context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
            context.set_default_timeout(15_000)
            page = context.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            _sign_in(page, url, "qa.watch")
            page.goto(f"{url}/console/dashboard")
            left_out = page.locator("#agreement-left-out")
            expect(left_out).to_be_visible()
            expect(left_out).to_contain_text("1 decision on 1 draft withdrawn as wrong-patient")
            expect(page.locator("#agreement-table tbody td.empty")).to_have_text("No decision recorded in this window.")
            _fits(page)
            left_out.scroll_into_view_if_needed()
            screenshot(page, tmp_path, "withdrawn-dashboard.png")
            left_out.get_by_role("link", name="List them").click()  # the decision behind the note
            rows = page.locator("#left-out tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("dr.read")
            expect(rows.first).to_contain_text("rejected")
            expect(rows.first).to_contain_text("re-sent by the PACS under another patient or study")
            _fits(page)  # the Study UID column scrolls inside its region, not the page
            for cell in ("accession", "reader"):  # read whole: before, "ACC00031 / 1" and "dr.rea / d" at 1366
                tops = rows.first.get_by_test_id(cell).evaluate(
                    "e => { const r = document.createRange(); r.selectNodeContents(e);"
                    " return new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size; }"
                )
                assert tops == 1, cell
            screenshot(page, tmp_path, "withdrawn-left-out.png")
            with page.expect_download() as download:
                page.locator('a[data-csv="left-out"]').click()
            assert Path(download.value.path()).read_text(encoding="utf-8").count("\n") == 2  # header and the row
            rows.first.get_by_test_id("study-link").click()
            page.wait_for_url(f"**{study_path(store, withdrawn)}")
            expect(page.get_by_test_id("image-reassigned")).to_be_visible()
            page.goto(f"{url}/console/dashboard")
            page.goto(f"{url}/console/agreement")
            expect(page.locator("#agreement-left-out")).to_contain_text("1 decision on 1 draft")
            _fits(page)
            context.close()
    finally:
        store.dispose()
    assert errors == []
