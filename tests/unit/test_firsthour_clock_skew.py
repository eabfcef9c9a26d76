"""A host whose clock is off from the database server's (the real local PostgreSQL) is said at start, with the
difference, its direction and what to do; within the bound, and on the embedded SQLite database, nothing is said.

Found by the first-hour walk (a common mistake of multi-node sites: a worker host without NTP): claims, heartbeats and
settle timers are written from each host's clock and compared by the others, and no start-up check looked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.preflight import run_preflight
from radtrace.preflight.clock import clock_check
from radtrace.testing.services import POSTGRES_ADMIN_URL, ensure_postgres

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def postgres_url() -> str:
    ensure_postgres()
    return POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://")


def test_a_clock_minutes_off_the_database_servers_is_said_with_what_to_do(tmp_path: Path, postgres_url: str) -> None:
    settings = load_settings(data_dir=tmp_path, store={"url": postgres_url})
    ahead = clock_check(settings, now=lambda: datetime.now(UTC) + timedelta(minutes=7))
    assert ahead is not None
    assert ahead.status == "warning"
    assert ahead.detail.startswith("this machine's clock is 420 s ahead of the database server's (")
    assert "synchronise every host's clock (timedatectl set-ntp true; chronyc tracking)" in ahead.detail
    behind = clock_check(settings, now=lambda: datetime.now(UTC) - timedelta(seconds=95))
    assert behind is not None
    assert behind.detail.startswith("this machine's clock is 95 s behind the database server's (")
    same = clock_check(settings)
    assert same is not None
    assert (same.status, same.detail) == ("ok", "within 10 s of the database server's")


def test_the_embedded_database_has_no_other_clock(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert clock_check(settings) is None
    assert "clock" not in {check.name for check in run_preflight(settings, service="api")}


def test_the_warning_says_what_the_difference_still_affects_now_that_leases_run_on_the_databases_clock(
    tmp_path: Path, postgres_url: str
) -> None:
    """Claims and leases expire on the database's clock (tests/integration/test_claims_clock_skew.py): the warning
    no longer says they are compared across hosts, and says what is still written from this clock."""
    settings = load_settings(data_dir=tmp_path, store={"url": postgres_url})
    ahead = clock_check(settings, now=lambda: datetime.now(UTC) + timedelta(minutes=10))
    assert ahead is not None
    assert ahead.status == "warning"
    assert "claims and leases do not depend on it (they expire on the database's clock)" in ahead.detail
    assert "the audit times, the times in the reports sent (HL7 MSH-7, the SR's content time)" in ahead.detail
    assert "the retries it schedules may wait that much longer for other hosts" in ahead.detail
    assert "claims, heartbeats and audit times are compared across hosts" not in ahead.detail
