"""This machine's clock against the database server's (PostgreSQL: the store every host of a multi-node site shares).

Claims, heartbeats, settle timers and audit times are written by each host from its own clock and compared by the
others: a host whose clock is minutes off (no NTP, a VM restored from a snapshot) takes a live dispatcher's claim for
stale, or holds a study back, without a word. The start-up checks compare it with the database server's clock (the
one clock every host reaches) and say the difference when it passes :data:`CLOCK_SKEW_WARNING_S`. The embedded SQLite
database is on this machine: nothing to compare.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from radtrace.config import Settings
from radtrace.errors import RadtraceError
from radtrace.preflight.check import Check

__all__ = ["CLOCK_SKEW_WARNING_S", "clock_check"]

#: A difference larger than this (plus half the time the question took) is a warning.
CLOCK_SKEW_WARNING_S = 10.0


def clock_check(settings: Settings, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Check | None:
    """The ``clock`` check against the PostgreSQL server (None: an embedded database, or one that does not answer,
    which the database check says)."""
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
        f"({ours:%H:%M:%S} UTC here, {server.astimezone(UTC):%H:%M:%S} UTC there): claims, heartbeats and audit times "
        "are compared across hosts; synchronise every host's clock (timedatectl set-ntp true; chronyc tracking)",
    )
