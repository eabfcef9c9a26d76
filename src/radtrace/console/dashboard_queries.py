"""What the dashboard's queries are built from: the window of days shown, and SQL that reads the same on SQLite
and PostgreSQL (a timestamp's local day, seconds between two timestamps, a JSON payload's field, an item of a
comma-separated column, a range of days).

Days are the site's local calendar days (``qa.time_zone``, default UTC). Each local day's UTC bounds, and the UTC
offset in force between the zone's transitions, are computed here with :mod:`zoneinfo`, so a 23- or 25-hour DST
day and a +05:30 or +05:45 zone are counted exactly and the same on both databases, whose own zone data is not
used; the database still groups (a ``CASE`` over the few offsets in force in the window).

:mod:`.dashboard_figures` and :mod:`.dashboard_agreement` read their figures with these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from radtrace.qa.drift import Period, period_start
from radtrace.store.engine import Store, is_postgresql

__all__ = ["Window", "as_date", "aware", "has_item", "json_text", "local_day", "seconds_between"]


@dataclass(frozen=True)
class Window:
    """The days shown (``first`` to ``last``, inclusive, local days of ``time_zone``), their granularity, and the
    baseline before them."""

    first: date
    last: date
    period: Period = "day"
    baseline_days: int = 28
    drift_run: int = 7
    time_zone: str = "UTC"

    @cached_property
    def zone(self) -> ZoneInfo:
        """The site's zone (``qa.time_zone``, checked when the settings load)."""
        return ZoneInfo(self.time_zone)

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

    def midnight(self, day: date) -> datetime:
        """When ``day`` begins in the site's zone, as a UTC instant (a midnight skipped by DST: the first instant
        of that day)."""
        return datetime.combine(day, time.min, tzinfo=self.zone).astimezone(UTC)

    def local(self, moment: datetime) -> datetime:
        """A UTC instant as the site's wall-clock time."""
        return moment.astimezone(self.zone)

    def within(self, column: Any, first: date, last: date) -> sa.ColumnElement[bool]:
        """Whether a timestamp column falls on the local days ``first`` to ``last`` (inclusive)."""
        return sa.and_(column >= self.midnight(first), column < self.midnight(last + timedelta(days=1)))

    def offsets(self, first: date, last: date) -> list[tuple[datetime | None, int]]:
        """The zone's UTC offsets (seconds) in force from the local day ``first`` to ``last``: ``(until, offset)``
        in order, each up to the UTC instant ``until`` (exclusive), the last one open (``None``)."""
        zone, result = self.zone, list[tuple[datetime | None, int]]()
        moment, end = self.midnight(first - timedelta(days=1)), self.midnight(last + timedelta(days=2))
        while moment < end:
            offset, following = _offset(zone, moment), min(moment + timedelta(days=1), end)
            if _offset(zone, following) != offset:  # a transition in this day: find it to the second
                low, high = moment, following
                while high - low > timedelta(seconds=1):
                    middle = low + (high - low) / 2
                    low, high = (middle, high) if _offset(zone, middle) == offset else (low, middle)
                following = high.replace(microsecond=0)
                result.append((following, offset))
            moment = following
        result.append((None, _offset(zone, end)))
        return result


def _offset(zone: ZoneInfo, moment: datetime) -> int:
    delta = moment.astimezone(zone).utcoffset()
    return int(delta.total_seconds()) if delta is not None else 0


def local_day(store: Store, window: Window, column: Any) -> sa.ColumnElement[str]:
    """The site's local day of a timestamp column, exact for rows from the window's baseline to its last day, as
    text that :func:`as_date` reads: the UTC wall clock shifted by the offset in force at that instant (one
    ``CASE`` branch per offset; in UTC the plain UTC day, as before).

    PostgreSQL gives ``YYYY-MM-DD``. SQLite gives the UTC day ``YYYY-MM-DD`` followed by ``+1`` or ``-1`` when the
    local day is the next or the previous one, decided by comparing the clock text with the offset's local
    midnight: text comparisons, cheaper than ``date()`` with a modifier, which parses every row (grouping 134,170
    readings: 92 ms against 110 ms, the UTC day 75 ms)."""
    offsets = window.offsets(window.baseline[0], window.last)
    if is_postgresql(store.engine):
        utc = sa.func.timezone("UTC", column)  # timestamptz -> the UTC wall clock

        def shifted(seconds: int) -> sa.ColumnElement[str]:
            moved = utc + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds) if seconds else utc
            return sa.func.to_char(moved, "YYYY-MM-DD")

        if len(offsets) == 1:
            return shifted(offsets[0][1])
        branches = [(column < until, shifted(offset)) for until, offset in offsets[:-1] if until is not None]
        return sa.case(*branches, else_=shifted(offsets[-1][1]))
    day = sa.func.substr(column, 1, 10, type_=sa.String())
    if all(offset == 0 for _, offset in offsets):
        return day
    clock = sa.func.substr(column, 12, 8)  # HH:MM:SS, the fraction left off: whole seconds decide

    def shift(seconds: int) -> sa.ColumnElement[str]:
        if seconds > 0:  # east of UTC: from (24 h - offset) UTC on, it is already the next local day
            return sa.case((clock >= _clock(86400 - seconds), "+1"), else_="")
        if seconds < 0:  # west: until -offset UTC, it is still the previous local day
            return sa.case((clock < _clock(-seconds), "-1"), else_="")
        return sa.literal("", sa.String())

    if len(offsets) == 1:
        return day + shift(offsets[0][1])
    branches = [(column < until, shift(offset)) for until, offset in offsets[:-1] if until is not None]
    return day + sa.case(*branches, else_=shift(offsets[-1][1]))


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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


def as_date(text: str) -> date:
    """A day as :func:`local_day` gives it (``YYYY-MM-DD``, on SQLite perhaps followed by ``+1`` or ``-1``), as a
    date."""
    return date.fromisoformat(text[:10]) + timedelta(days=int(text[10:] or 0))


def aware(value: datetime | str) -> datetime:
    """A timestamp read from an aggregate, as an aware UTC datetime."""
    # min() over a UtcDateTime column comes back untyped on SQLite (text), typed on PostgreSQL.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
