"""The review page of a site in America/New_York (``qa.time_zone``), in Debian's Chromium under Playwright: the
revisions list and the conflict page's decision time are written in New York time with the zone named (EST, EDT),
as the QA dashboard and the audit explorer write them; a UTC site's page says UTC as before.

Before: "reported 2026-01-10 03:30 UTC" and "at 2026-07-10 03:30:05 UTC" on a New York site.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit_support import frozen_clock
from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, reported_study, serving, study_path
from radtrace.audit.events import Actor
from radtrace.console.decisions import decide_finding
from radtrace.console.review import load_review
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision, Study

pytestmark = [pytest.mark.e2e, needs_chromium]

WINTER = datetime(2026, 1, 10, 3, 30, tzinfo=UTC)  # 2026-01-09 22:30 EST
SUMMER = datetime(2026, 7, 10, 3, 30, 5, tzinfo=UTC)  # 2026-07-09 23:30:05 EDT


@dataclass
class Site:
    url: str
    store: Store
    study_uid: str


def _site(root: Path, zone: str) -> Iterator[Site]:
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    base = console_settings(root, store)
    settings = base.model_copy(update={"qa": base.qa.model_copy(update={"time_zone": zone})})
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    study_uid = reported_study(settings, store, reader, seed=151, name="ZONE^REVIEW")
    with store.session() as session:
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == study_uid))
        session.execute(sa.update(Revision).where(Revision.study_id == study_id).values(reported_at=WINTER))
    add_user(store, "dr.zone", "radiologist")
    with serving(store, settings) as url:
        yield Site(url, store, study_uid)
    store.dispose()


@pytest.fixture(scope="module")
def new_york(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from _site(tmp_path_factory.mktemp("review-new-york"), "America/New_York")


@pytest.fixture(scope="module")
def utc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from _site(tmp_path_factory.mktemp("review-utc"), "UTC")


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    with tab(browser, height=900, allowed=("status of 409",)) as opened:  # the conflict page is a 409
        yield opened


def _decided_elsewhere(site: Site) -> None:
    """dr.other accepts the first finding at SUMMER, after the browser's page was loaded."""
    review = load_review(site.store, site.study_uid, 1)
    assert review is not None
    with frozen_clock(SUMMER):
        decide_finding(site.store, review, Actor(user="dr.other"), review.findings[0].label, "accept", None, None)


def _open_then_conflict(page: Page, site: Site) -> None:
    sign_in(page, site.url, "dr.zone")
    page.goto(f"{site.url}{study_path(site.store, site.study_uid)}")
    expect(page.locator("#finding-0")).to_be_visible()
    _decided_elsewhere(site)
    page.locator("#finding-0").get_by_role("button", name="Reject").click()
    expect(page.get_by_role("heading", name="Not recorded: the page was out of date")).to_be_visible()


def test_a_new_york_site_reads_new_york_times_with_the_zone_named(page: Page, new_york: Site) -> None:
    sign_in(page, new_york.url, "dr.zone")
    page.goto(f"{new_york.url}{study_path(new_york.store, new_york.study_uid)}")
    expect(page.locator("ul.revisions li").first).to_contain_text("reported 2026-01-09 22:30:00 EST")
    expect(page.get_by_test_id("times-zone")).to_have_text(
        "Times are in America/New_York (the setting qa.time_zone), as on the QA dashboard and in the audit explorer."
    )
    _open_then_conflict(page, new_york)
    expect(page.locator("#conflict-reason")).to_contain_text("dr.other recorded “accepted” for")
    expect(page.locator("#conflict-reason")).to_contain_text("at 2026-07-09 23:30:05 EDT, after this page was loaded")


def test_a_utc_site_reads_utc_as_before(page: Page, utc: Site) -> None:
    sign_in(page, utc.url, "dr.zone")
    page.goto(f"{utc.url}{study_path(utc.store, utc.study_uid)}")
    expect(page.locator("ul.revisions li").first).to_contain_text("reported 2026-01-10 03:30:00 UTC")
    expect(page.get_by_test_id("times-zone")).to_have_count(0)
    _open_then_conflict(page, utc)
    expect(page.locator("#conflict-reason")).to_contain_text("at 2026-07-10 03:30:05 UTC, after this page was loaded")
