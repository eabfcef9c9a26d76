"""The audit explorer in a real browser: Debian's Chromium driven by Playwright against uvicorn on a local port.

The audit log holds the QA scenario of audit_support (four studies at known times) plus a forty-image study, so
the received events fill two pages. A qa user filters, pages, opens a study's timeline and sees its stage chart;
an admin verifies the chain and watches the progress bar move to the result, then exports the filtered events.
The walk is slowed (small batches, a pause per batch) only so that a browser can see it move. Screenshots go to
``tmp_path``, and to ``docs/`` when ``CONSOLE_SCREENSHOTS=docs`` (how docs/ui.md's pictures are made).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit_support import PACS, STUDY_A, T0, frozen_clock, seed_audit_log
from browser_support import Page, expect, needs_chromium, screenshot, sign_in, tab, wait_until
from console_support import add_user, console_settings, serving
from radtrace.audit import chain
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.console import explorer_verify
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = [pytest.mark.e2e, needs_chromium]
BIG_STUDY = "1.2.826.0.1.3680043.8.498.2001"
BIG_STUDY_IMAGES = 40


@dataclass
class Site:
    url: str
    store: Store
    received: int

    def users_of(self, event_type: str) -> list[str | None]:
        with self.store.session() as session:
            query = sa.select(AuditEventRow.actor_user).where(AuditEventRow.event_type == event_type)
            return list(session.scalars(query.order_by(AuditEventRow.seq)).all())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-audit-browser")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    seeded = seed_audit_log(store)
    with frozen_clock(T0 + timedelta(days=2)) as clock:
        for number in range(BIG_STUDY_IMAGES):
            clock.advance(0.5)
            AuditRecorder(store).record(
                AuditEvent(
                    EventType.INSTANCE_RECEIVED,
                    PACS,
                    study_uid=BIG_STUDY,
                    accession="ACC-2001",
                    payload={"sop": f"{BIG_STUDY}.1.{number + 1}"},
                )
            )
    add_user(store, "qa.quinn", "qa")
    add_user(store, "ad.min", "admin")
    received = sum(1 for s in seeded if s.event.type is EventType.INSTANCE_RECEIVED) + BIG_STUDY_IMAGES
    with serving(store, console_settings(root, store)) as url:
        yield Site(url, store, received)
    store.dispose()


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    """A fresh browser tab; afterwards, no console error but the 400 of the bad filter the qa test gives."""
    with tab(browser, timeout_ms=10_000, allowed=("status of 400",)) as opened:
        yield opened


def _sign_in(page: Page, site: Site, name: str) -> None:
    page.goto(f"{site.url}/console/audit")
    expect(page).to_have_url(f"{site.url}/console/login")
    sign_in(page, site.url, name)


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    screenshot(page, tmp_path, name, full_page=False)


def _seqs(page: Page) -> list[int]:
    return [int(seq) for seq in page.locator("#audit-events tbody tr.event td:first-child").all_inner_texts()]


def test_qa_filters_pages_and_opens_a_timeline_with_its_stage_chart(page: Page, site: Site, tmp_path: Path) -> None:
    _sign_in(page, site, "qa.quinn")
    page.get_by_role("link", name="Audit", exact=True).click()
    expect(page.locator("h1")).to_have_text("Audit explorer")
    expect(page.locator("#verify-link")).to_have_count(0)  # verify and export are admin's
    expect(page.locator("#export")).to_have_count(0)
    page.locator("#f-event_type").select_option("instance_received")
    page.locator("#f-since").fill("2025-03-03T07:00")
    page.locator("#f-limit").select_option("25")
    page.locator("#search").click()
    first = _seqs(page)
    assert len(first) == 25
    assert first == sorted(first, reverse=True)  # newest first
    expect(page.locator("#audit-events tbody tr.event td:nth-child(3)").first).to_have_text("instance_received")
    _screenshot(page, tmp_path, "ui-audit.png")
    page.locator("#next-page").click()
    second = _seqs(page)
    assert len(first) + len(second) == site.received
    assert second[0] < first[-1]  # older events
    expect(page.locator(".pager")).to_contain_text("last page")
    expect(page.locator("#f-event_type")).to_have_value("instance_received")  # the filters stay with the pages
    page.locator("#prev-page").click()  # back to the newer events
    expect(page.locator("#page-range")).to_have_text(f"events {first[0]} to {first[-1]}")
    assert _seqs(page) == first
    page.locator("#next-page").click()
    expect(page.locator("#page-range")).to_have_text(f"events {second[0]} to {second[-1]}")
    page.locator("#first-page").click()
    expect(page.locator("#page-range")).to_have_text(f"events {first[0]} to {first[-1]}")
    assert _seqs(page) == first

    page.locator("#f-since").fill("")
    page.locator("#f-event_type").select_option("")
    page.locator("#f-accession").fill("ACC-1001")
    page.locator("#search").click()
    page.locator("a.timeline-link", has_text=STUDY_A).first.click()
    expect(page.locator("#timeline-uid")).to_have_text(STUDY_A)
    assert STUDY_A not in page.url  # the address bar (and history) holds a handle
    page.locator("#timeline-events-link").click()
    expect(page.locator("#f-study_uid")).to_have_value(STUDY_A)
    assert STUDY_A not in page.url
    assert {s for s in page.locator("a.timeline-link").all_inner_texts()} == {STUDY_A}
    page.go_back()
    expect(page.locator("#timeline-uid")).to_have_text(STUDY_A)
    chart = page.locator("#stage-chart svg")
    expect(chart).to_be_visible()
    expect(chart.locator("g.chart-stage")).to_have_count(6)
    expect(chart).to_contain_text("received → delivered")
    expect(page.locator('#stages tr[data-stage="inference"] td.num')).to_have_text("41.500 s")
    expect(page.locator("#timeline-events tbody tr.event")).to_have_count(8)
    _screenshot(page, tmp_path, "ui-audit-timeline.png")

    page.goto(f"{site.url}/console/audit?since=yesterday")
    expect(page.locator("#audit-error")).to_contain_text("since: Input should be a valid datetime")
    assert (
        site.users_of("audit_queried").count("qa.quinn") == 10
    )  # the first visit, 5 pages, the accession search, the timeline, its events, the timeline again


def test_admin_verifies_watching_the_progress_and_exports(
    page: Page, site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain, "VERIFY_BATCH_ROWS", 4)  # progress every 4 rows ...
    real = explorer_verify.verify_audit_log

    def slowed(store: Store, asked_by: Actor, **options: Any) -> Any:
        report = options.pop("progress")

        def progress(checked: int) -> None:  # ... each taking a moment, so that the bar is seen moving
            report(checked)
            time.sleep(0.15)

        return real(store, asked_by, progress=progress, **options)

    monkeypatch.setattr(explorer_verify, "verify_audit_log", slowed)
    _sign_in(page, site, "ad.min")
    page.get_by_role("link", name="Audit", exact=True).click()
    page.locator("#verify-link").click()
    expect(page.locator("#verify-start")).to_have_text("Verify now")
    page.locator("#verify-start").click()
    bar = page.locator("#verify-progress[data-poll]")
    expect(bar).to_be_visible()
    # the bar moves: a value strictly between its start and its end, written by console.js from the poll
    wait_until(
        page,
        "(() => { const b = document.querySelector('#verify-progress[data-poll]');"
        " return b && b.value >= 8 && b.value < b.max; })()",
    )
    expect(page.locator("#verify-count")).to_contain_text(" events checked")
    expect(page.locator("#verify-result")).to_contain_text("No edited, inserted or missing event", timeout=30_000)
    expect(page.locator("#verify-status")).to_have_attribute("data-state", "ok")
    _screenshot(page, tmp_path, "ui-audit-verify.png")
    assert site.users_of("audit_verified") == ["ad.min"]

    page.goto(f"{site.url}/console/audit?event_type=instance_received&accession=ACC-2001")
    with page.expect_download() as downloading:
        page.locator("#export").click()
    download = downloading.value
    assert download.suggested_filename == "radtrace-audit.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert len(rows) == BIG_STUDY_IMAGES
    assert {row["study_uid"] for row in rows} == {BIG_STUDY}
    assert site.users_of("audit_exported") == ["ad.min"]
