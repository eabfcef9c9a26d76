"""This machine's clock against the database server's (PostgreSQL: the store every host of a multi-node site shares).

Claims and leases do not depend on it: a read's claim and a delivery's lease expire on the database's clock
(:func:`radtrace.reporting.dispatch.claims.database_now`), and another host's dead holder is found by sightings on the
finder's monotonic clock (:mod:`radtrace.worker.dead_claims`). What each host still writes from its own clock: audit
times (``recorded_at``: events of two hosts out of order in time), the times in the reports it sends (HL7 MSH-7 and
OBR/OBX times, the SR's content date and time), the stage latencies on the dashboard (a study queued on one host and
read on another), and retry schedules (a delivery's or a reading's next attempt, judged by the other hosts on their
clocks: one may pick it up as much later as the clocks differ). The start-up checks compare it with the database
server's clock (the one clock every host reaches) and say the difference, and what it still affects, when it passes
:data:`CLOCK_SKEW_WARNING_S`. The embedded SQLite database is on this machine: nothing to compare.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from radtrace.config import Settings
from radtrace.errors import RadtraceError
from radtrace.preflight.check import Check

__all__ = ["CLOCK_SKEW_WARNING_S", "clock_check"]

#: A difference larger than this (plus half the time the question took) is a warning.
CLOCK_SKEW_WARNING_S = 10.0


def clock_check(settings: Settings, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Check | None:
    """The ``clock`` check against the PostgreSQL server (None: an embedded database, or one that does not answer,
    which the database check says)."""
    import sqlalchemy as sa

    from radtrace.store.engine import Store, is_sqlite

    if is_sqlite(settings.store_url):
        return None
    try:
        store = Store.from_url(settings.store_url, connect_timeout_s=settings.store.connect_timeout_s)
    except RadtraceError:
        return None
    try:
        with store.engine.connect() as connection:
            before = now()
            server = connection.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
            after = now()
    except Exception:
        return None
    finally:
        store.dispose()
    ours = before + (after - before) / 2
    skew, slack = (ours - server).total_seconds(), (after - before).total_seconds() / 2
    if abs(skew) <= CLOCK_SKEW_WARNING_S + slack:
        return Check("clock", "ok", f"within {CLOCK_SKEW_WARNING_S:g} s of the database server's")
    return Check(
        "clock",
        "warning",
        f"this machine's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the database server's "
        f"({ours:%H:%M:%S} UTC here, {server.astimezone(UTC):%H:%M:%S} UTC there): claims and leases do not depend "
        "on it (they expire on the database's clock), but the audit times, the times in the reports sent (HL7 MSH-7, "
        "the SR's content time) and the dashboard's stage latencies are written from it, and the retries it schedules "
        "may wait that much longer for other hosts; synchronise every host's clock (timedatectl set-ntp true; "
        "chronyc tracking)",
    )
