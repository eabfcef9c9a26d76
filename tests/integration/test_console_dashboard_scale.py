"""The QA dashboard over a million audit events renders in under a second of server time (SQLite, PostgreSQL).

90 days of history (tests/dashboard_support.py; about 1,500 studies a day, ~137,000 studies, 1,000,000 audit events
with the planted drift and burst) are written straight into the tables. Times are medians of repeated requests
through the ASGI app in this process (the same code path as uvicorn's, without the socket): the page for the
default window (the last 30 days, by day), by week, and one CSV must each take under a second; the longest window
the seed holds (90 days) is printed too, and held to two.

Seeding takes minutes, so the test runs only when asked: ``DASHBOARD_SCALE=1 .venv/bin/pytest -s
tests/integration/test_console_dashboard_scale.py`` (``-k sqlite`` or ``-k postgresql`` for one database).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, console_settings, median_ms, sign_in
from dashboard_support import seed_history
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("DASHBOARD_SCALE") != "1", reason="DASHBOARD_SCALE=1 runs it (seeding: minutes)"),
]

EVENTS = 1_000_000
TARGET_MS = 1000.0
#: The longest window the seed holds reads three times the default's rows; it is measured and bounded, not held to
#: the default view's target.
LONGEST_MS = 2000.0


def median(call: Callable[[], object]) -> float:
    return median_ms(call, repeat=5)


def test_a_million_audit_events_render_in_under_a_second(store: Store, tmp_path: Path) -> None:
    started = time.perf_counter()
    seeded = seed_history(store, days=90, per_day=(1420, 1680))
    seeding_s = time.perf_counter() - started
    with store.session() as session:
        events = int(session.scalar(sa.select(sa.func.count()).select_from(AuditEventRow)) or 0)
    assert events >= EVENTS
    settings = console_settings(tmp_path, store, sync_interval_s=3600)
    add_user(store, "qa.scale", "qa")
    today = datetime.now(UTC).date()
    with console_client(store, settings) as client:
        sign_in(client, "qa.scale")

        def get(url: str) -> Callable[[], object]:
            def call() -> object:
                answer = client.get(url)
                assert answer.status_code == 200, (url, answer.text[:300])
                return answer

            return call

        page = client.get("/console/dashboard").text
        assert f'data-label="{seeded.drift_label}"' in page.split('data-testid="drift-alerts"')[1].split("</div>")[0]
        longest = f"?from={today - timedelta(days=89)}&to={today}"
        figures = {
            "dashboard, last 30 days by day": median(get("/console/dashboard")),
            "dashboard, last 30 days by week": median(get("/console/dashboard?period=week")),
            "dashboard, 90 days by day": median(get(f"/console/dashboard{longest}")),
            "prevalence CSV, last 30 days": median(get("/console/dashboard/prevalence.csv")),
        }
    print(f"\n{store.engine.dialect.name}: {events} events, {seeded.studies} studies ({seeding_s:.0f} s to seed)")
    print("median server time per request")
    for what, ms in figures.items():
        print(f"  {what:<36} {ms:7.1f} ms")
    slow = {what: round(ms) for what, ms in figures.items() if ms >= (LONGEST_MS if "90 days" in what else TARGET_MS)}
    assert not slow, f"over {TARGET_MS} ms: {slow}"
