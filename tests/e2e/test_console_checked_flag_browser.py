"""A flagged draft a radiologist checked keeps its flag on the worklist, drawn as checked by them (Debian's
Chromium under Playwright, uvicorn on a free local port).

Before, after "Checked" on the study page the worklist row's flag was drawn exactly as before. Now the flag stays
visible, reads "image rejected by the PACS · checked by dr.check", with a dashed border.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from browser_support import expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, reported_study, serving, study_path
from radtrace.console.worklist import sync_review_items
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision, Study

pytestmark = [pytest.mark.e2e, needs_chromium]


def test_a_checked_flag_is_drawn_checked_by_its_radiologist_on_the_worklist(browser: Any, tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(tmp_path, store, sync_interval_s=0)
    study = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=81)
    add_user(store, "dr.check", "radiologist")
    with store.session("the PACS rejected the image (as a rejection note marks it)") as session:
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == study))
        session.execute(sa.update(Revision).where(Revision.study_id == study_id).values(rejected_at=utc_now()))
    sync_review_items(store, settings.spool_dir)
    try:
        with serving(store, settings) as url, tab(browser) as page:
            sign_in(page, url, "dr.check")
            page.goto(f"{url}/console/worklist?filter=flagged")
            flag = page.locator("#worklist tr.row .pill.flag").filter(has_text="image rejected by the PACS")
            expect(flag).to_have_count(1)
            expect(page.get_by_test_id("flag-checked")).to_have_count(0)

            page.goto(f"{url}{study_path(store, study)}")
            page.fill("#flags-check-reason", "PACS: film withdrawn by the technologist; nothing else moved")
            page.click("#flags-checked-button")
            page.wait_for_load_state()

            page.goto(f"{url}/console/worklist?filter=flagged")
            checked = page.get_by_test_id("flag-checked")
            expect(checked).to_be_visible()
            expect(checked).to_have_text("image rejected by the PACS · checked by dr.check")
            assert checked.evaluate("(e) => getComputedStyle(e).borderTopStyle") == "dashed"
            box = checked.bounding_box()
            assert box is not None
            assert box["width"] > 0
            assert box["height"] > 0
    finally:
        store.dispose()
