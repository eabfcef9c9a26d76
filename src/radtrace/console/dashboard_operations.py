"""The QA dashboard's operations figures, from the work tables and the audit log's ``study_failed`` events: volume
per period (revisions opened, read, skipped and failed with their reasons, draft SRs delivered), the failure share
against the baseline with its bursts, the window's failed studies by what became of them, and the queue now.

Split from :mod:`.dashboard_figures` (which reads every section side by side and holds :class:`Figures`); the module
doc there says where each figure comes from.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.dashboard_queries import Window, as_date, aware, local_day
from radtrace.qa.drift import PeriodCount, failure_bursts
from radtrace.qa.intervals import Proportion
from radtrace.qa.recorded_times import readable_time
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, Revision, RevisionState, Study

if TYPE_CHECKING:
    from radtrace.console.dashboard_figures import Figures

__all__ = ["NO_REASON", "FailedStudies", "Queue", "read_queue", "read_volume"]

NO_REASON: Final = "(no reason recorded)"
#: Study UIDs per ``IN (...)`` when the failed studies' states are read.
IN_CHUNK: Final = 500


@dataclass(frozen=True)
class Queue:
    """Work waiting now: revisions per state and the oldest one's wait (seconds)."""

    receiving: int
    queued: int
    processing: int
    oldest_wait_s: float | None


@dataclass(frozen=True)
class FailedStudies:
    """Study revisions with at least one failed reading attempt, by what became of them: read after a retry
    (``recovered``: reported, or its draft delivered), ``still_failed``, or queued or reading again (the rest)."""

    studies: int = 0
    recovered: int = 0
    still_failed: int = 0

    @classmethod
    def of(cls, studies: Collection[tuple[str, int | None]], states: Mapping[tuple[str, int], str]) -> FailedStudies:
        now = [states.get((uid, number)) if number is not None else None for uid, number in studies]
        read = (RevisionState.REPORTED.value, RevisionState.DISPATCHED.value)
        failed = sum(state == RevisionState.FAILED.value for state in now)
        return cls(len(now), sum(state in read for state in now), failed)

    @property
    def retrying(self) -> int:
        return self.studies - self.recovered - self.still_failed


def _count_by_day(
    session: Any, store: Store, window: Window, column: Any, first: date, last: date, *where: Any
) -> dict[str, int]:
    rows = session.execute(
        sa.select(local_day(store, window, column), sa.func.count())
        .where(window.within(column, first, last), *where)
        .group_by(sa.literal_column("1"))
    )
    counts: dict[str, int] = {}
    for day, count in rows:  # one key per local day (SQLite's text may name it as the UTC day and a shift)
        key = as_date(str(day)).isoformat()
        counts[key] = counts.get(key, 0) + int(count)
    return counts


def read_volume(session: Any, store: Store, window: Window, figures: Figures, fold: Any) -> None:
    first, last = window.start, window.last
    for day, count in _count_by_day(session, store, window, Revision.opened_at, first, last).items():
        figures.received[fold(day)] = figures.received.get(fold(day), 0) + count
    base_first = window.baseline[0]
    read_by_day = _count_by_day(session, store, window, Revision.reported_at, base_first, last)
    for day, count in read_by_day.items():
        if as_date(day) >= first:
            figures.read[fold(day)] = figures.read.get(fold(day), 0) + count
    rows = session.execute(
        sa.select(local_day(store, window, Revision.finished_at), Revision.reason, sa.func.count())
        .where(Revision.state == RevisionState.SKIPPED, window.within(Revision.finished_at, first, last))
        .group_by(sa.literal_column("1"), Revision.reason)
    )
    for day, reason, count in rows:
        figures.skipped.setdefault(fold(day), Counter())[reason or NO_REASON] += count
    failed_by_day = _failure_events(session, store, window, figures, fold)
    # A revision's draft SR counts once, on the day it first reached a PACS (as the latency's dispatch stage): the
    # draft goes to every configured PACS, one outbox row each, and a PACS down overnight takes it the next day.
    # Before, each day counted its distinct revisions and the days were summed, so such a draft counted twice in
    # the week and the window.
    first_delivered = sa.func.min(OutboxMessage.delivered_at)
    drafts = (
        sa.select(first_delivered.label("at"))
        .where(OutboxMessage.kind == "sr", OutboxMessage.state == "delivered",
               OutboxMessage.delivered_at < window.midnight(last + timedelta(days=1)))
        .group_by(OutboxMessage.revision_id)
        .having(first_delivered >= window.midnight(first))
        .subquery()
    )  # fmt: skip
    delivered = session.execute(
        sa.select(local_day(store, window, drafts.c.at), sa.func.count()).group_by(sa.literal_column("1"))
    )
    for day, count in delivered:
        figures.delivered[fold(day)] = figures.delivered.get(fold(day), 0) + count
    _failures(window, figures, fold, read_by_day, failed_by_day)


def _failure_events(session: Any, store: Store, window: Window, figures: Figures, fold: Any) -> dict[str, int]:
    """The ``study_failed`` events of the window and its baseline, per local day (returned, for the failure share):
    every failed reading attempt when it happened, with its reason, whatever became of the study later. Before,
    the figures counted revisions whose state is failed *now*, so once operators retried a burst's studies
    (``radtrace study retry``) the burst and its reasons left the dashboard. The window's failed studies are
    counted too (:class:`FailedStudies`), with how many were read after a retry."""
    rows = session.execute(
        sa.select(local_day(store, window, AuditEventRow.recorded_at), AuditEventRow.study_uid, AuditEventRow.payload)
        .where(AuditEventRow.event_type == EventType.STUDY_FAILED.value,
               window.within(AuditEventRow.recorded_at, window.baseline[0], window.last),
               readable_time(store, AuditEventRow.recorded_at))
    )  # fmt: skip
    by_day: dict[str, int] = {}
    studies: dict[date, set[tuple[str, int | None]]] = {}
    for day, uid, payload in rows:
        key = as_date(str(day)).isoformat()
        by_day[key] = by_day.get(key, 0) + 1
        if as_date(key) < window.start:
            continue
        details = _payload(payload)
        reason, number = details.get("reason"), details.get("revision")
        figures.failed.setdefault(fold(key), Counter())[str(reason) if reason else NO_REASON] += 1
        studies.setdefault(fold(key), set()).add((str(uid), number if isinstance(number, int) else None))
    states = _revision_states(session, {study for each in studies.values() for study in each})
    figures.failed_studies = {p: FailedStudies.of(each, states) for p, each in studies.items()}
    figures.failed_in_window = FailedStudies.of({study for each in studies.values() for study in each}, states)
    return by_day


def _payload(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _revision_states(session: Any, studies: Collection[tuple[str, int | None]]) -> dict[tuple[str, int], str]:
    """The state now of each (Study Instance UID, revision number), read in chunks of :data:`IN_CHUNK` UIDs."""
    uids = sorted({uid for uid, _ in studies})
    states: dict[tuple[str, int], str] = {}
    for at in range(0, len(uids), IN_CHUNK):
        rows = session.execute(
            sa.select(Study.study_uid, Revision.number, Revision.state)
            .join(Revision, Revision.study_id == Study.id)
            .where(Study.study_uid.in_(uids[at : at + IN_CHUNK]))
        )
        for uid, number, state in rows:
            states[(uid, number)] = RevisionState(state).value
    return states


def _failures(window: Window, figures: Figures, fold: Any, read: Mapping[str, int], failed: Mapping[str, int]) -> None:
    """Failure share per period (failed attempts of read + failed attempts) against the baseline's, and the bursts.
    A study read after a retry counts once failed and once read: the share is of reading attempts."""
    per_period: dict[date, list[int]] = {}
    for day in set(read) | set(failed):
        counts = per_period.setdefault(fold(day), [0, 0])
        counts[0] += failed.get(day, 0)
        counts[1] += failed.get(day, 0) + read.get(day, 0)
    base_first, base_last = window.baseline
    baseline = [PeriodCount(p, c, t) for p, (c, t) in per_period.items() if base_first <= p <= base_last]
    figures.failures = [PeriodCount(p, *per_period.get(p, [0, 0])) for p in figures.periods]
    if sum(p.total for p in baseline):
        figures.bursts = failure_bursts(figures.failures, baseline)
        figures.baseline_failures = Proportion.of(sum(p.count for p in baseline), sum(p.total for p in baseline))


def read_queue(session: Any, now: datetime) -> Queue:
    waiting = (RevisionState.RECEIVING, RevisionState.QUEUED, RevisionState.PROCESSING)
    rows = session.execute(
        sa.select(Revision.state, sa.func.count(), sa.func.min(sa.func.coalesce(Revision.queued_at,
                                                                                 Revision.opened_at)))
        .where(Revision.state.in_(waiting))
        .group_by(Revision.state)
    ).all()  # fmt: skip
    counts = {RevisionState(state): int(count) for state, count, _ in rows}
    oldest = [
        aware(at) for state, _, at in rows if at is not None and RevisionState(state) is not RevisionState.RECEIVING
    ]
    return Queue(
        counts.get(RevisionState.RECEIVING, 0),
        counts.get(RevisionState.QUEUED, 0),
        counts.get(RevisionState.PROCESSING, 0),
        max(0.0, (now - min(oldest)).total_seconds()) if oldest else None,
    )
