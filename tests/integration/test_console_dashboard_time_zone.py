"""The QA dashboard counts the site's local calendar days (``qa.time_zone``), not UTC days: studies reported just
either side of local midnight, on DST days of 23 and 25 hours (America/New_York, Europe/Berlin) and in zones a
half or three quarters of an hour off UTC (Asia/Kolkata, Asia/Kathmandu), against days named by hand.

Each case names the UTC instant a study was reported and the local day (and Monday-started local week) a person at
the site would count it on; the figures are read through the dashboard's own SQL on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from radtrace.config import Settings
from radtrace.console.dashboard_figures import read_figures
from radtrace.console.dashboard_queries import Window
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study

pytestmark = pytest.mark.integration


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


#: zone -> (UTC instant reported, the local day it is counted on), by hand from the zone's rules for 2026.
CASES: dict[str, list[tuple[str, str]]] = {
    "America/New_York": [
        ("2026-12-01 04:30:00", "2026-11-30"),  # Monday 23:30 EST: Monday, not Tuesday (UTC's day)
        ("2026-12-01 05:30:00", "2026-12-01"),  # Tuesday 00:30 EST
        # spring forward, Sunday 8 March: a 23-hour day, 05:00 UTC to 04:00 UTC
        ("2026-03-08 04:59:59", "2026-03-07"),  # Saturday 23:59:59 EST
        ("2026-03-08 06:59:00", "2026-03-08"),  # 01:59 EST, just before the jump
        ("2026-03-08 07:00:00", "2026-03-08"),  # 03:00 EDT
        ("2026-03-09 03:30:00", "2026-03-08"),  # Sunday 23:30 EDT: still Sunday, so the week of Monday 2 March
        ("2026-03-09 04:30:00", "2026-03-09"),  # Monday 00:30 EDT: the next week
        # fall back, Sunday 1 November: a 25-hour day, 04:00 UTC to 05:00 UTC the next day
        ("2026-11-01 03:59:00", "2026-10-31"),  # Saturday 23:59 EDT
        ("2026-11-01 05:30:00", "2026-11-01"),  # 01:30 EDT
        ("2026-11-01 06:30:00", "2026-11-01"),  # 01:30 EST, the same wall clock an hour later
        ("2026-11-02 04:30:00", "2026-11-01"),  # Sunday 23:30 EST: the week of Monday 26 October
        ("2026-11-02 05:00:00", "2026-11-02"),  # Monday 00:00 EST
    ],
    "Europe/Berlin": [
        # spring forward, Sunday 29 March: 23:00 UTC (28th) to 22:00 UTC
        ("2026-03-28 22:59:59", "2026-03-28"),
        ("2026-03-28 23:00:00", "2026-03-29"),
        ("2026-03-29 21:30:00", "2026-03-29"),  # 23:30 CEST, Sunday: the week of Monday 23 March
        ("2026-03-29 22:00:00", "2026-03-30"),  # Monday 00:00 CEST
        # fall back, Sunday 25 October: 22:00 UTC (24th) to 23:00 UTC
        ("2026-10-24 21:59:00", "2026-10-24"),
        ("2026-10-24 22:00:00", "2026-10-25"),
        ("2026-10-25 22:30:00", "2026-10-25"),  # 23:30 CET, Sunday: the week of Monday 19 October
        ("2026-10-25 23:00:00", "2026-10-26"),
    ],
    "Asia/Kolkata": [  # +05:30
        ("2026-12-01 18:29:59", "2026-12-01"),
        ("2026-12-01 18:30:00", "2026-12-02"),
        ("2026-12-01 20:00:00", "2026-12-02"),
        ("2026-11-30 18:29:00", "2026-11-30"),
    ],
    "Asia/Kathmandu": [  # +05:45
        ("2026-12-01 18:14:59", "2026-12-01"),
        ("2026-12-01 18:15:00", "2026-12-02"),
    ],
    "UTC": [
        ("2026-12-01 23:59:59", "2026-12-01"),
        ("2026-12-02 00:00:00", "2026-12-02"),
    ],
}


def _seed(store: Store, moments: list[datetime]) -> None:
    with store.session() as session:
        for number, moment in enumerate(moments, start=1):
            study = Study(study_uid=f"1.2.826.0.1.3680043.10.999.{number}", study_key=f"{number:016x}",
                          created_at=moment, last_instance_at=moment)  # fmt: skip
            session.add(study)
            session.flush()
            session.add(
                Revision(study_id=study.id, number=1, attempts=1, state=RevisionState.REPORTED, opened_at=moment,
                         queued_at=moment, started_at=moment, reported_at=moment, updated_at=moment,
                         priority="routine")
            )  # fmt: skip


def _figures(store: Store, zone: str, first: date, last: date, period: str) -> tuple[dict[date, int], dict[date, int]]:
    window = Window(first, last, "week" if period == "week" else "day", time_zone=zone)
    figures = read_figures(store, window, datetime.now(UTC))
    return figures.read, figures.received


@pytest.mark.parametrize("zone", list(CASES))
def test_each_study_counts_on_the_sites_local_day_and_week(store: Store, zone: str) -> None:
    cases = [(_at(moment), date.fromisoformat(day)) for moment, day in CASES[zone]]
    for moment, day in cases:  # the hand-named days agree with the zone's rules
        assert moment.astimezone(ZoneInfo(zone)).date() == day, (moment, day)
    _seed(store, [moment for moment, _ in cases])
    expected = Counter(day for _, day in cases)
    first, last = min(expected) - timedelta(days=2), max(expected) + timedelta(days=2)
    read, received = _figures(store, zone, first, last, "day")
    assert {d: n for d, n in read.items() if n} == dict(expected)
    assert {d: n for d, n in received.items() if n} == dict(expected)
    weekly = Counter(day - timedelta(days=day.weekday()) for day in expected.elements())
    read, _ = _figures(store, zone, first, last, "week")
    assert {d: n for d, n in read.items() if n} == dict(weekly)


def test_a_new_york_site_sees_monday_evening_on_monday_in_the_page_and_its_csv(store: Store, tmp_path: Path) -> None:
    """The page names the zone, ``to`` defaults to the site's today, and the CSV's days are local days."""
    now = datetime.now(UTC)
    zone = ZoneInfo("America/New_York")
    today = now.astimezone(zone).date()
    evening = datetime.combine(today - timedelta(days=1), datetime.min.time(), tzinfo=zone) + timedelta(hours=23.5)
    _seed(store, [evening.astimezone(UTC)])
    base = console_settings(tmp_path, store)
    settings = Settings.model_validate({**base.model_dump(), "qa": {**base.qa.model_dump(), "time_zone": zone.key}})
    add_user(store, "qa.ny", "qa")
    with console_client(store, settings) as client:
        sign_in(client, "qa.ny")
        page = client.get("/console/dashboard")
        assert page.status_code == 200
        start = today - timedelta(days=29)
        assert f"{start} to {today} (America/New_York), by day." in page.text
        assert f'name="to" value="{today}"' in page.text
        answer = client.get("/console/dashboard/volume.csv")
        rows = {row["period"]: row for row in csv.DictReader(io.StringIO(answer.text))}
        assert rows[(today - timedelta(days=1)).isoformat()]["read"] == "1"
        assert sum(int(row["read"]) for row in rows.values()) == 1


def test_an_unknown_time_zone_is_refused_when_the_settings_load() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'America/New_Yrok'"):
        Settings.model_validate({"qa": {"time_zone": "America/New_Yrok"}})
