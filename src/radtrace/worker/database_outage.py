"""Which store errors are the database's outage, and which are ours: the one rule an attempt's count depends on.

Every error the store cannot recover from reaches the worker as a radtrace error (:mod:`radtrace.store.engine`): an
unreachable or busy database as :class:`~radtrace.errors.StoreUnavailableError` (retryable), the rest permanent. An
attempt whose end could not be recorded because the database was *away* is no fault of the study's: its own worker
takes it over uncounted (:mod:`radtrace.worker.attempts`). But "retryable" is wider than "away": the database also
answers a statement of ours with a retryable error (it ran past ``statement_timeout``, waited past ``lock_timeout``
or SQLite's busy timeout, lost a deadlock or a serialization check), and this process can exhaust its own
connection pool. Those are the database working and our code failing; an attempt they end counts, as any ordinary
failure does, so that a bug in our own SQL fails its study after ``broker.max_attempts`` with its reason instead of
being retried forever unseen.

:func:`is_database_outage` is that rule, decided on the driver's own error (the SQLSTATE on PostgreSQL, the result
code on SQLite), never on the message text.
"""

from __future__ import annotations

import sqlite3
from typing import Final

import sqlalchemy as sa

from radtrace.errors import StoreUnavailableError

__all__ = ["is_database_outage"]

#: PostgreSQL SQLSTATE classes of an outage (Appendix A, "PostgreSQL Error Codes"): 08 connection exception,
#: 53 insufficient resources (disk full, out of memory, too many connections), 58 system error (I/O).
_OUTAGE_CLASSES: Final = frozenset({"08", "53", "58"})
#: Class 57 (operator intervention) is an outage except 57014 query_canceled, which a statement timeout (or a DBA
#: cancelling one statement) raises: 57P01 admin_shutdown (also pg_terminate_backend), 57P02 crash_shutdown,
#: 57P03 cannot_connect_now (starting up, or in recovery), 57P04 database_dropped, 57P05 idle_session_timeout.
_OUTAGE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})
#: SQLite primary result codes of an outage: the file cannot be written, read or opened, or memory ran out. BUSY and
#: LOCKED (a lock held past the busy timeout) are a transaction of ours held too long, as lock_timeout is.
_SQLITE_OUTAGE: Final = frozenset(
    {sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN}
)


def is_database_outage(error: StoreUnavailableError) -> bool:
    """Whether a store error is the database's outage (an attempt it ends is not counted, and tried again) rather
    than ours (it counts, like any failed attempt).

    An outage: the connection could not be made or was lost without the server's answer (no SQLSTATE: refused,
    reset, closed), or the server said it cannot serve anyone now (SQLSTATE classes 08, 53, 58; 57P01-57P05:
    shutting down, terminated, starting up); on SQLite, the file cannot be opened, read or written, or is full.
    Ours: the server answered our statement with an error (57014 a statement timeout, 55P03 a lock timeout, 40P01
    a deadlock, 40001 a serialization failure, anything else with a SQLSTATE), SQLite's busy timeout ran out or its
    SQL failed, or this process's connection pool had no connection to give in time.
    """
    cause = error.__cause__
    if isinstance(cause, sa.exc.TimeoutError):  # the pool's: every connection of this process was in use
        return False
    driver = cause.orig if isinstance(cause, sa.exc.DBAPIError) else cause
    if isinstance(driver, sqlite3.Error):
        code = getattr(driver, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_OUTAGE
    sqlstate = getattr(driver, "sqlstate", None)
    if not isinstance(sqlstate, str) or not sqlstate:
        return True  # no answer from the server at all: it could not be reached, or the connection broke
    return sqlstate[:2] in _OUTAGE_CLASSES or sqlstate in _OUTAGE_STATES
