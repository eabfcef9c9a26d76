"""The audit explorer shows and reads times in the site's zone (``qa.time_zone``), as the QA dashboard counts its
days, and says which zone on the page.

Before: the explorer said "recorded (UTC)" and read the form's times as UTC whatever ``qa.time_zone`` was, so a QA
lead in New York who saw a spike on the dashboard's 9 January (local) and searched 9 January 22:00 to 23:00 found
nothing: the events were at 03:30 UTC on the 10th.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from audit_support import frozen_clock
from console_support import add_user, console_client, sign_in
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import load_settings
from radtrace.console.links import ConsoleLinks
from radtrace.store.engine import Store

WINTER = datetime(2026, 1, 10, 3, 30, tzinfo=UTC)  # 2026-01-09 22:30 EST
SUMMER = datetime(2026, 7, 10, 3, 30, 0, 250_000, tzinfo=UTC)  # 2026-07-09 23:30 EDT
STUDIES = ("1.2.826.0.1.3680043.10.1401.1", "1.2.826.0.1.3680043.10.1401.2")


def _client(store: Store, tmp_path: Path, zone: str) -> TestClient:
    settings = load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "device": "cpu"},
        console={"sync_interval_s": 0},
        qa={"time_zone": zone},
    )
    return console_client(store, settings)


def _seed(store: Store) -> None:
    with frozen_clock(WINTER) as clock:
        for at, uid in zip((WINTER, SUMMER), STUDIES, strict=True):
            clock.now = at
            AuditRecorder(store).record(AuditEvent(EventType.STUDY_QUEUED, Actor(user="listener"), study_uid=uid))
    add_user(store, "qa.zone", "qa")


def _rows(html: str) -> list[str]:
    return re.findall(r'<td class="nowrap">([^<]*)</td>', html)


def test_the_explorer_shows_and_reads_times_in_the_sites_zone(sqlite_store: Store, tmp_path: Path) -> None:
    _seed(sqlite_store)
    with _client(sqlite_store, tmp_path, "America/New_York") as client:
        sign_in(client, "qa.zone")
        page = client.get("/console/audit", params={"event_type": "study_queued"}).text
        assert "recorded (America/New_York)" in page
        assert "From (America/New_York)" in page
        assert "Times are in America/New_York (the setting qa.time_zone), as on the QA dashboard" in page
        assert _rows(page) == ["2026-07-09 23:30:00 EDT", "2026-01-09 22:30:00 EST"]  # newest first
        # the form's times are the site's: 22:00 to 23:00 on 9 January, New York, holds the winter event
        found = client.get("/console/audit", params={"since": "2026-01-09T22:00", "until": "2026-01-09T23:00"}).text
        assert _rows(found) == ["2026-01-09 22:30:00 EST"]
        assert 'value="2026-01-09T22:00:00"' in found  # the form shows them back as typed
        handle = ConsoleLinks(sqlite_store).timeline_handles([STUDIES[1]])[STUDIES[1]]
        timeline = client.get(f"/console/audit/timeline/{handle}").text
        assert "recorded (America/New_York)" in timeline
        assert "2026-07-09 23:30:00.250 EDT" in timeline


def test_a_site_in_utc_sees_utc_as_before(sqlite_store: Store, tmp_path: Path) -> None:
    _seed(sqlite_store)
    with _client(sqlite_store, tmp_path, "UTC") as client:
        sign_in(client, "qa.zone")
        page = client.get("/console/audit", params={"event_type": "study_queued"}).text
        assert "recorded (UTC)" in page
        assert _rows(page) == ["2026-07-10 03:30:00", "2026-01-10 03:30:00"]  # newest first
        found = client.get("/console/audit", params={"since": "2026-01-09T22:00", "until": "2026-01-09T23:00"}).text
        assert _rows(found) == []
