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
code on SQLite), never on the message text. It is the store's :func:`radtrace.store.engine.is_outage`, which also
words the error by it: "database unavailable while …" for an outage, "statement timed out while …" (and the like) for
one of ours, so a job row or an audit error reads as the attempt was counted.
"""

from __future__ import annotations

from radtrace.errors import StoreUnavailableError
from radtrace.store.engine import is_outage

__all__ = ["is_database_outage"]


def is_database_outage(error: StoreUnavailableError) -> bool:
    """Whether a store error is the database's outage (an attempt it ends is not counted, and tried again) rather
    than ours (it counts, like any failed attempt): :func:`radtrace.store.engine.is_outage`, which lists both, on
    its cause."""
    return is_outage(error.__cause__)
