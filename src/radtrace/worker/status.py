"""What ``radtrace status`` shows: revisions per state, queue depths, the oldest waiting, failures with reasons.

Read from the database (the truth) plus the broker's queue lengths (the doorbells waiting). Studies are
named by their hashed key and revision number, never by patient data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from radtrace.config import Settings
from radtrace.store.base import UtcDateTime, utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study

__all__ = ["FailedRevision", "ServiceStatus", "WaitingRevision", "collect_status", "queue_depths"]

log = logging.getLogger(__name__)

_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis default; step 0 is the queue's own list
_WAITING = (RevisionState.RECEIVING, RevisionState.QUEUED, RevisionState.PROCESSING, RevisionState.REPORTED)


@dataclass(frozen=True)
class WaitingRevision:
    """The revision waiting longest in a non-final state."""

    study_key: str
    revision: int
    state: RevisionState
    since: datetime
    waiting_s: float


@dataclass(frozen=True)
class FailedRevision:
    """A failed revision and why."""

    study_key: str
    revision: int
    reason: str | None
    attempts: int
    finished_at: datetime | None


@dataclass(frozen=True)
class ServiceStatus:
    """Everything ``radtrace status`` prints."""

    studies: dict[str, int]  # by the state of each study's latest revision
    revisions: dict[str, int]
    outbox: dict[str, int]
    queues: dict[str, int | None]
    oldest_waiting: WaitingRevision | None
    failed: list[FailedRevision] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        oldest = self.oldest_waiting
        return {
            "studies": self.studies,
            "revisions": self.revisions,
            "outbox": self.outbox,
            "queues": self.queues,
            "oldest_waiting": None
            if oldest is None
            else {
                "study_key": oldest.study_key,
                "revision": oldest.revision,
                "state": oldest.state.value,
                "since": oldest.since.isoformat(),
                "waiting_s": round(oldest.waiting_s, 3),
            },
            "failed": [
                {
                    "study_key": f.study_key,
                    "revision": f.revision,
                    "reason": f.reason,
                    "attempts": f.attempts,
                    "finished_at": f.finished_at.isoformat() if f.finished_at else None,
                }
                for f in self.failed
            ],
        }


def queue_depths(settings: Settings) -> dict[str, int | None]:
    """Messages waiting in each queue; ``None`` for a queue whose broker cannot be reached."""
    from radtrace.worker.app import is_embedded_broker

    names = [settings.broker.stat_queue, settings.broker.gpu_queue, settings.broker.dispatch_queue]
    depths: dict[str, int | None] = dict.fromkeys(names)
    try:
        depths.update(
            _embedded_depths(settings, names) if is_embedded_broker(settings) else _redis_depths(settings, names)
        )
    except Exception as exc:  # broker down or queue never declared: show unknown, not a traceback
        log.warning("queue depths unavailable: %s: %s", type(exc).__name__, exc)
    return depths


def _embedded_depths(settings: Settings, names: list[str]) -> dict[str, int]:
    from radtrace.worker.app import create_app

    app = create_app(settings, with_tasks=False)
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        channel = connection.default_channel
        return {name: int(channel.queue_declare(queue=name, passive=True).message_count) for name in names}


def _redis_depths(settings: Settings, names: list[str]) -> dict[str, int]:
    """LLEN of each queue's lists, read directly: kombu's passive declare misses lists under a global key prefix.

    kombu keeps a queue in one Redis list per priority step: ``<prefix><queue>`` and ``<prefix><queue>\\x06\\x16<n>``.
    """
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        prefix = settings.broker.key_prefix
        depths = {}
        for name in names:
            keys = [f"{prefix}{name}", *(f"{prefix}{name}\x06\x16{step}" for step in _KOMBU_PRIORITY_STEPS[1:])]
            depths[name] = sum(int(client.llen(key)) for key in keys)
        return depths
    finally:
        client.close()


def collect_status(
    settings: Settings, store: Store, *, with_queues: bool = True, failed_limit: int = 20, now: datetime | None = None
) -> ServiceStatus:
    """Collect the service's status from the database (and the broker when ``with_queues``)."""
    now = now or utc_now()
    with store.session("reading the service status") as session:
        revisions = {state.value: 0 for state in RevisionState}
        for state, count in session.execute(sa.select(Revision.state, sa.func.count()).group_by(Revision.state)):
            revisions[RevisionState(state).value] = int(count)
        studies = {state.value: 0 for state in RevisionState}
        latest = (
            sa.select(Revision.study_id, sa.func.max(Revision.number).label("number"))
            .group_by(Revision.study_id)
            .subquery()
        )
        for state, count in session.execute(
            sa.select(Revision.state, sa.func.count())
            .join(latest, sa.and_(Revision.study_id == latest.c.study_id, Revision.number == latest.c.number))
            .group_by(Revision.state)
        ):
            studies[RevisionState(state).value] = int(count)
        outbox = {state.value: 0 for state in OutboxState}
        for delivery_state, count in session.execute(
            sa.select(OutboxMessage.state, sa.func.count()).group_by(OutboxMessage.state)
        ):
            outbox[OutboxState(delivery_state).value] = int(count)
        since = sa.func.coalesce(Revision.queued_at, Revision.opened_at, type_=UtcDateTime())
        oldest_row = session.execute(
            sa.select(Study.study_key, Revision.number, Revision.state, since)
            .join(Study, Revision.study_id == Study.id)
            .where(Revision.state.in_(_WAITING))
            .order_by(since, Revision.id)
            .limit(1)
        ).first()
        failed_rows = session.execute(
            sa.select(Study.study_key, Revision.number, Revision.reason, Revision.attempts, Revision.finished_at)
            .join(Study, Revision.study_id == Study.id)
            .where(Revision.state == RevisionState.FAILED)
            .order_by(Revision.finished_at.desc(), Revision.id.desc())
            .limit(failed_limit)
        ).all()
    oldest = None
    if oldest_row is not None:
        key, number, state, started = oldest_row
        oldest = WaitingRevision(key, number, RevisionState(state), started, (now - started).total_seconds())
    failed = [FailedRevision(key, number, reason, attempts, at) for key, number, reason, attempts, at in failed_rows]
    queues = queue_depths(settings) if with_queues else {}
    return ServiceStatus(studies, revisions, outbox, queues, oldest, failed)
