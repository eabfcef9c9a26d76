"""The QA dashboard of a site in America/New_York (``qa.time_zone``), in Debian's Chromium under Playwright: the
page's dates, its CSVs and the studies behind a count are the site's local days, counted here by hand from the
rows (each timestamp turned into a New York date with zoneinfo), not from the dashboard's code.

Ten days of history (tests/dashboard_support.py, half the studies assessed), readings over all 24 hours: the
evening studies that a UTC day would put on the next day are counted on their own day.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from browser_support import Page, expect, needs_chromium, sign_in, tab
from console_support import add_user, console_settings, serving
from dashboard_support import seed_history
from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision

pytestmark = [pytest.mark.e2e, needs_chromium]

ZONE = ZoneInfo("America/New_York")


@dataclass
class Site:
    url: str
    store: Store
    today: date  # the site's today


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("dashboard-time-zone")
    store = Store.from_url(f"sqlite:///{root / 'radtrace.db'}")
    upgrade(store)
    seed_history(store, days=10, per_day=(60, 80), assessed=0.5)
    add_user(store, "qa.newyork", "qa")
    base = console_settings(root, store)
    settings = base.model_copy(update={"qa": base.qa.model_copy(update={"time_zone": "America/New_York"})})
    with serving(store, settings) as url:
        yield Site(url, store, datetime.now(UTC).astimezone(ZONE).date())
    store.dispose()


@pytest.fixture
def page(browser: object) -> Iterator[Page]:
    with tab(browser) as opened:
        yield opened


def _local(moment: datetime) -> date:
    return moment.astimezone(ZONE).date()


def _read_by_day(store: Store) -> tuple[Counter[date], Counter[date]]:
    """Revisions read per New York day and per UTC day, from the rows."""
    with store.session() as session:
        times = session.scalars(sa.select(Revision.reported_at).where(Revision.reported_at.is_not(None))).all()
    return Counter(_local(t) for t in times if t), Counter(t.astimezone(UTC).date() for t in times if t)


def _csv(page: Page, url: str) -> list[dict[str, str]]:
    answer = page.request.get(url)  # with the tab's session cookie
    assert answer.status == 200, answer.text()
    return list(csv.DictReader(io.StringIO(answer.text())))


def test_the_page_and_its_csv_count_new_york_days(page: Page, site: Site) -> None:
    local, utc = _read_by_day(site.store)
    first, last = site.today - timedelta(days=7), site.today - timedelta(days=1)
    assert any(local[first + timedelta(days=i)] != utc[first + timedelta(days=i)] for i in range(7))  # it matters
    sign_in(page, site.url, "qa.newyork")
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="QA dashboard")).to_be_visible()
    expect(page.locator('input[name="to"]')).to_have_value(site.today.isoformat())  # the site's today, not UTC's
    expect(page.get_by_test_id("scope")).to_contain_text(f"to {site.today} (America/New_York), by day.")

    page.locator('input[name="from"]').fill(first.isoformat())
    page.locator('input[name="to"]').fill(last.isoformat())
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(f"**/console/dashboard?from={first}*")
    expect(page.get_by_test_id("scope")).to_contain_text(f"{first} to {last} (America/New_York), by day.")
    query = f"from={first}&to={last}&period=day"
    volume = {row["period"]: int(row["read"]) for row in _csv(page, f"{site.url}/console/dashboard/volume.csv?{query}")}
    assert volume == {(first + timedelta(days=i)).isoformat(): local[first + timedelta(days=i)] for i in range(7)}

    monday = first - timedelta(days=first.weekday())
    weekly = _csv(page, f"{site.url}/console/dashboard/volume.csv?from={first}&to={last}&period=week")
    expected: Counter[str] = Counter()
    for day in (monday + timedelta(days=i) for i in range((last - monday).days + 1)):
        expected[(day - timedelta(days=day.weekday())).isoformat()] += local[day]
    assert {row["period"]: int(row["read"]) for row in weekly} == dict(expected)


def test_the_studies_behind_a_count_are_those_decided_on_the_new_york_day(page: Page, site: Site) -> None:
    day = site.today - timedelta(days=2)
    with site.store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.study_uid, AuditEventRow.recorded_at, AuditEventRow.payload).where(
                AuditEventRow.event_type == EventType.FINDING_ASSESSED.value
            )
        ).all()
    decided: dict[tuple[str, str], set[str]] = {}
    times: dict[str, list[datetime]] = {}
    for uid, at, payload in rows:
        if _local(at) == day:
            fields = json.loads(payload)
            decided.setdefault((fields["finding"], fields["decision"]), set()).add(uid)
            times.setdefault(uid, []).append(at)
    (label, decision), uids = max(decided.items(), key=lambda item: len(item[1]))
    # the day's evening in New York is the next day in UTC: some of these decisions sit there
    assert any(t.astimezone(UTC).date() != day for uid in uids for t in times[uid])
    sign_in(page, site.url, "qa.newyork")
    page.goto(f"{site.url}/console/dashboard/agreement?label={label}&decision={decision}&from={day}&to={day}")
    expect(page.get_by_test_id("scope")).to_contain_text(f"{day} to {day} (America/New_York)")
    listed = page.locator("#studies tbody tr")
    expect(listed).to_have_count(len(uids))
    shown = {listed.nth(i).locator("td").first.inner_text() for i in range(len(uids))}
    assert shown == uids
    for i in range(len(uids)):  # each decision's time in New York, on that day
        cells = listed.nth(i).locator("td")
        uid, when = cells.nth(0).inner_text(), cells.nth(2).inner_text()
        assert when.endswith(" America/New_York")
        assert when.removesuffix(" America/New_York") in {
            t.astimezone(ZONE).strftime("%Y-%m-%d %H:%M") for t in times[uid]
        }
