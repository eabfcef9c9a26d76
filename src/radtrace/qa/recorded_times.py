"""Which audit rows still hold a time, for the figures that group or order them by it.

SQLite keeps any value in a timestamp column, so someone with rights on the database can edit an audit row's
``recorded_at`` into something that is not a time (``'yesterday'``, ``42``, ``'2026-11-31 10:00:00'``). The audit
log's own readers show such a row as unreadable and ``radtrace audit verify`` names it
(:func:`radtrace.audit.queries.record_columns`). A figure cannot place it in time: the dashboard, the agreement
figures and the QA rules leave it out, instead of failing on it (the driver's parsing, or a day that is no date,
raised and made those pages answer 500 for as long as the row stayed).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from radtrace.store.engine import Store, is_postgresql

__all__ = ["readable_time"]

_DIGITS6 = "[0-9]" * 6


def readable_time(store: Store, column: Any) -> sa.ColumnElement[bool]:
    """Whether a timestamp column holds a time as radtrace writes it (always true on PostgreSQL, whose
    ``timestamptz`` holds nothing else).

    On SQLite: text of the form ``YYYY-MM-DD HH:MM:SS`` with an optional ``.ffffff`` (what the driver writes and
    reads back), naming a real day and time: SQLite's date functions keep ``2026-11-31`` or ``24:00:00`` as written
    but normalise them under a ``+0`` modifier, so a part that changes under it is no time. The day and the time
    are checked apart: the modifier on the whole value rounds ``23:59:59.9999995`` into the next second.
    """
    if is_postgresql(store.engine):
        return sa.true()
    day, clock = sa.func.substr(column, 1, 10), sa.func.substr(column, 12, 8)
    return sa.and_(
        sa.func.typeof(column) == "text",
        sa.func.date(day, "+0 days") == day,
        sa.func.substr(column, 11, 1) == " ",
        sa.func.time(clock, "+0 seconds") == clock,
        sa.or_(
            sa.func.length(column) == 19,
            sa.and_(sa.func.length(column) == 26, sa.func.substr(column, 20).op("GLOB")(f".{_DIGITS6}")),
        ),
    )
