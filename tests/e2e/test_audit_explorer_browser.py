"""No patient identifier travels in an audit-explorer URL, in a real browser (Debian's Chromium under Playwright).

A QA user searches by patient ID and accession, pages, goes back, exports and shares the link: every request the
browser makes (so its history, a proxy's log and any Referer) is checked for the identifiers, the back button and
a colleague's copy of the link still work, and the pages ask for no Referer at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest

from audit_support import PACS, T0, frozen_clock, seed_audit_log
from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, serving
from radtrace.audit.events import AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = [pytest.mark.e2e, needs_chromium]
PATIENT = "PAT-7001"
ACCESSION = "ACC-7001"
IMAGES = 30


@dataclass
class Site:
    url: str
    store: Store


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("audit-explorer-phi")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    seed_audit_log(store)
    with frozen_clock(T0 + timedelta(days=3)) as clock:
        for number in range(IMAGES):  # two pages of 25
            clock.advance(1)
            AuditRecorder(store).record(
                AuditEvent(
                    EventType.INSTANCE_RECEIVED,
                    PACS,
                    study_uid="1.2.826.0.1.3680043.8.498.7001",
                    accession=ACCESSION,
                    patient_id=PATIENT,
                    payload={"n": number},
                )
            )
    add_user(store, "qa.quinn", "qa")
    add_user(store, "ad.min", "admin")
    with serving(store, console_settings(root, store)) as url:
        yield Site(url, store)
    store.dispose()


@pytest.fixture
def requests_seen(browser: Any) -> Iterator[tuple[Page, list[tuple[str, str | None]]]]:
    """A tab, and every request it made: (URL, its Referer header); no console error but the expired link's 400."""
    seen: list[tuple[str, str | None]] = []
    with tab(browser, timeout_ms=10_000, allowed=("status of 400",)) as page:
        page.on("request", lambda request: seen.append((request.url, request.headers.get("referer"))))
        yield page, seen


def _seqs(page: Page) -> list[int]:
    return [int(seq) for seq in page.locator("#audit-events tbody tr.event td:first-child").all_inner_texts()]


def test_a_search_by_patient_keeps_the_identifiers_out_of_every_url(
    requests_seen: tuple[Page, list[tuple[str, str | None]]], site: Site, browser: Any
) -> None:
    page, seen = requests_seen
    page.goto(f"{site.url}/console/audit")
    sign_in(page, site.url, "qa.quinn")
    page.goto(f"{site.url}/console/audit")
    page.locator("#f-patient_id").fill(PATIENT)
    page.locator("#f-accession").fill(ACCESSION)
    page.locator("#f-limit").select_option("25")
    page.locator("#search").click()
    expect(page.locator("#page-range")).to_be_visible()
    first = _seqs(page)
    assert len(first) == 25
    expect(page.locator("#f-patient_id")).to_have_value(PATIENT)  # the form keeps them, from the server
    results_url = page.url
    assert "q=" in results_url
    page.locator("#next-page").click()
    second = _seqs(page)
    assert len(second) == IMAGES - 25
    page.go_back()  # Post/Redirect/Get: back is the first page again, without a resubmission prompt
    expect(page.locator("#page-range")).to_contain_text(f"events {first[0]} to {first[-1]}")
    assert page.url == results_url

    urls = [url for url, _ in seen] + [page.url]
    for url in urls:
        assert PATIENT not in unquote(url), url
        assert ACCESSION not in unquote(url), url
    assert not [referer for _, referer in seen if referer], seen  # Referrer-Policy: no-referrer

    with tab(browser, timeout_ms=10_000) as colleague:  # the link, shared, shows the same search
        colleague.goto(f"{site.url}/console/audit")
        sign_in(colleague, site.url, "ad.min")
        colleague.goto(results_url)
        assert _seqs(colleague) == first
        expect(colleague.locator("#f-accession")).to_have_value(ACCESSION)
        with colleague.expect_download() as downloading:
            colleague.locator("#export").click()
        assert PATIENT not in unquote(downloading.value.url)


def test_an_old_link_with_a_patient_id_is_replaced_by_one_without(
    requests_seen: tuple[Page, list[tuple[str, str | None]]], site: Site
) -> None:
    page, _ = requests_seen
    page.goto(f"{site.url}/console/audit")
    sign_in(page, site.url, "qa.quinn")
    page.goto(f"{site.url}/console/audit?patient_id={PATIENT}&limit=25")
    assert PATIENT not in unquote(page.url)
    assert len(_seqs(page)) == 25
    page.goto(f"{site.url}/console/audit?q=no-such-search")
    expect(page.locator("#audit-error")).to_contain_text("this search link has expired")
