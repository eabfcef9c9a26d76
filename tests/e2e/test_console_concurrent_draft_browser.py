"""Two radiologists on a night shift decide the same whole draft at the same moment, each in their own browser
(Debian's Chromium under Playwright, two contexts, uvicorn on a local port): both forms are submitted before
either answer comes back. One decision is recorded and one assessment SR kept; the other radiologist sees the
conflict page naming the decision recorded, with their own comment given back, and after reloading sees the
current state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from browser_support import expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, reported_study, serving, study_path
from radtrace.audit.schema import AuditEventRow
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = [pytest.mark.e2e, needs_chromium]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Store, Path, str]]:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=91)
    for name in ("dr.night", "dr.day"):
        add_user(store, name, "radiologist")
    with serving(store, settings) as url:
        yield url, store, settings.data_dir / "assessments", study_uid
    store.dispose()


def test_two_radiologists_deciding_one_draft_at_once_one_is_recorded_the_other_sees_who(
    browser: Any, site: tuple[str, Store, Path, str]
) -> None:
    url, store, assessments, study_uid = site
    page_url = f"{url}{study_path(store, study_uid)}"
    with tab(browser, allowed=("status of 409",)) as night, tab(browser, allowed=("status of 409",)) as day:
        sign_in(night, url, "dr.night")
        sign_in(day, url, "dr.day")
        night.goto(page_url)
        day.goto(page_url)
        day.locator("#draft-reason").select_option("RT-R2")
        day.get_by_label("comment on the draft").fill("misses the line tip")
        night.locator("#draft-accept").click(no_wait_after=True)  # both sent before either answer is back
        day.locator("#draft-reject").click(no_wait_after=True)
        for page in (night, day):  # each answer shown: the conflict page, or the study with the decision recorded
            expect(page.locator("#conflict-reason, [data-testid=draft-decision]")).to_be_visible()
        refused = [p for p in (night, day) if p.locator("#conflict-reason").count()]
        assert len(refused) == 1
        winner = "dr.day" if refused[0] is night else "dr.night"
        wording = "rejected" if winner == "dr.day" else "accepted"
        expect(refused[0].locator("#conflict-reason")).to_contain_text(f"{winner} recorded “{wording}”")
        if refused[0] is day:  # what dr.day typed is given back, to copy
            expect(day.locator("body")).to_contain_text("misses the line tip")
        refused[0].locator("#reload-study").click()
        expect(refused[0].locator("#draft")).to_contain_text(winner)
    with store.session() as session:
        drafts = session.execute(
            sa.select(AuditEventRow.actor_user, AuditEventRow.payload).where(
                AuditEventRow.study_uid == study_uid, AuditEventRow.event_type == "draft_assessed"
            )
        ).all()
    assert [user for user, _payload in drafts] == [winner]
    kept = sorted(p.stem for p in assessments.glob("*/*/*.dcm"))
    assert kept == [json.loads(drafts[0][1])["assessment_sr"]["sop_instance_uid"]]
