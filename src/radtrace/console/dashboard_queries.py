"""What the dashboard's queries are built from: the window of days shown, and SQL that reads the same on SQLite
and PostgreSQL (a timestamp's UTC day, seconds between two timestamps, a JSON payload's field, an item of a
comma-separated column, a range of days).

:mod:`.dashboard_figures` and :mod:`.dashboard_agreement` read their figures with these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from radtrace.qa.drift import Period, period_start
from radtrace.store.engine import Store, is_postgresql

__all__ = ["Window", "as_date", "aware", "has_item", "json_text", "seconds_between", "utc_day", "within"]


@dataclass(frozen=True)
class Window:
    """The days shown (``first`` to ``last``, inclusive, UTC), their granularity, and the baseline before them."""

    first: date
    last: date
    period: Period = "day"
    baseline_days: int = 28
    drift_run: int = 7

    @property
    def start(self) -> date:
        """The first day counted: ``first``, or the Monday of its week."""
        return period_start(self.first, self.period)

    @property
    def baseline(self) -> tuple[date, date]:
        """The baseline's first and last day: ``baseline_days`` (whole weeks for weekly periods) before ``start``."""
        days = self.baseline_days if self.period == "day" else 7 * math.ceil(self.baseline_days / 7)
        return self.start - timedelta(days=days), self.start - timedelta(days=1)

    def periods(self) -> list[date]:
        """Every period start from ``start`` to ``last``."""
        step = 1 if self.period == "day" else 7
        count = (self.last - self.start).days // step + 1
        return [self.start + timedelta(days=step * i) for i in range(count)]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def utc_day(store: Store, column: Any) -> sa.ColumnElement[str]:
    """The UTC day of a timestamp column as ``YYYY-MM-DD`` text (SQLite keeps UTC text; PostgreSQL timestamptz)."""
    if is_postgresql(store.engine):
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.substr(column, 1, 10)


def seconds_between(store: Store, later: Any, earlier: Any) -> sa.ColumnElement[float]:
    """Seconds from ``earlier`` to ``later`` (two timestamp columns or expressions) as a float."""
    if is_postgresql(store.engine):
        return sa.cast(sa.func.extract("epoch", later - earlier), sa.Float)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def json_text(store: Store, column: Any, key: str) -> sa.ColumnElement[str]:
    """The field ``key`` of a JSON column, as text (NULL when absent)."""
    if is_postgresql(store.engine):
        return sa.func.json_extract_path_text(sa.cast(column, postgresql.JSON), key)
    return sa.cast(sa.func.json_extract(column, f"$.{key}"), sa.String)


def has_item(store: Store, column: Any, item: str) -> sa.ColumnElement[bool]:
    """Whether a comma-separated column holds ``item`` exactly (case-sensitive on both databases)."""
    padded = sa.literal(",") + column + sa.literal(",")
    needle = f",{item},"
    position = sa.func.strpos(padded, needle) if is_postgresql(store.engine) else sa.func.instr(padded, needle)
    return position > 0


def within(column: Any, first: date, last: date) -> sa.ColumnElement[bool]:
    """Whether a timestamp column falls on the days ``first`` to ``last`` (inclusive, UTC)."""
    return sa.and_(column >= _midnight(first), column < _midnight(last + timedelta(days=1)))


def as_date(text: str) -> date:
    """A day as :func:`utc_day` gives it (``YYYY-MM-DD``), as a date."""
    return date.fromisoformat(text)


def aware(value: datetime | str) -> datetime:
    """A timestamp read from an aggregate, as an aware UTC datetime."""
    # min() over a UtcDateTime column comes back untyped on SQLite (text), typed on PostgreSQL.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
