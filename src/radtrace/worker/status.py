"""What ``radtrace status`` shows: revisions per state, queue depths, the oldest waiting, failures with reasons.

Read from the database (the truth) plus the broker's queue lengths (the doorbells waiting). Failed and
skipped revisions are named by Study Instance UID and accession (what an operator looks a study up by),
with their full reason and the command that asks for them again (:attr:`FailedRevision.again`): ``radtrace study
retry UID`` for a reading that failed or was skipped, ``radtrace dispatch retry DESTINATION`` for a draft whose
delivery failed. A destination on hold (a PACS that rejected the association for good,
:mod:`radtrace.reporting.dispatch.holds`) is shown with its reason, since when, its held deliveries (``pending`` in
the outbox's counts, which are the rows' states), what the configuration changed since, and that same command.

Where the data allows, it says when a wait has nothing behind it (:mod:`radtrace.worker.liveness`): a study
``receiving`` past ``listener.settle_seconds`` while no listener holds the data directory's lock (one data directory,
SQLite), a delivery in flight under a claim of a dispatcher that is no longer running (until its lease runs out), and a
broker that does not answer (:attr:`ServiceStatus.broker_error`; ``radtrace status`` then exits 1).

:func:`retry_revision` opens a new attempt of a failed or skipped revision, audited as ``study_retried``. A revision
that failed for a delivery is not read again (its draft is made): its failed deliveries are made pending again,
each audited as ``dispatch_retry_scheduled`` as ``radtrace dispatch retry`` does, and it goes back to ``reported``.
Before, it was queued, the pipeline found its outbox rows, left them failed, and the revision failed again.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.errors import PermanentError
from radtrace.store.base import UtcDateTime, utc_now
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.liveness import InFlight, in_flight, listener_holder
from radtrace.worker.outage import OpenOutage, open_outages
from radtrace.worker.output_guard import STOP_AFTER

if TYPE_CHECKING:
    from radtrace.reporting.dispatch.holds import HeldDestination

__all__ = [
    "FailedRevision",
    "Retried",
    "RevisionDetail",
    "ServiceStatus",
    "StudyDetail",
    "StudyNotRetriableError",
    "WaitingRevision",
    "collect_status",
    "queue_depths",
    "retry_revision",
    "study_detail",
]

log = logging.getLogger(__name__)

_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis default; step 0 is the queue's own list
_WAITING = (RevisionState.RECEIVING, RevisionState.QUEUED, RevisionState.PROCESSING, RevisionState.REPORTED)
_RETRIABLE = (RevisionState.FAILED, RevisionState.SKIPPED)


class StudyNotRetriableError(PermanentError):
    """``radtrace study retry`` named no study, or a revision that is not failed or skipped."""


@dataclass(frozen=True)
class WaitingRevision:
    """The revision waiting longest in a non-final state."""

    study_key: str
    revision: int
    state: RevisionState
    since: datetime
    waiting_s: float
    study_uid: str = ""
    reason: str | None = None  # why it waits, when known (e.g. "waiting: model server unavailable since ...")


@dataclass(frozen=True)
class FailedRevision:
    """A failed (or skipped) revision and why."""

    study_key: str
    revision: int
    reason: str | None
    attempts: int
    finished_at: datetime | None
    study_uid: str = ""
    accession: str | None = None
    state: RevisionState = RevisionState.FAILED
    failed_deliveries: tuple[str, ...] = ()  # destinations of its failed deliveries: it failed on delivery

    @property
    def again(self) -> list[str]:
        """The command(s) that ask for it again: per failed destination when a delivery failed, else the study's."""
        if self.failed_deliveries:
            return [f"radtrace dispatch retry {shlex.quote(name)}" for name in self.failed_deliveries]
        return [f"radtrace study retry {self.study_uid}"]

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {
            "study_uid": self.study_uid,
            "accession": self.accession,
            "study_key": self.study_key,
            "revision": self.revision,
            "state": self.state.value,
            "reason": self.reason,
            "attempts": self.attempts,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "failed_deliveries": list(self.failed_deliveries),
            "again": self.again,
        }


@dataclass(frozen=True)
class ServiceStatus:
    """Everything ``radtrace status`` prints."""

    studies: dict[str, int]  # by the state of each study's latest revision
    revisions: dict[str, int]
    outbox: dict[str, int]
    queues: dict[str, int | None]
    oldest_waiting: WaitingRevision | None
    failed: list[FailedRevision] = field(default_factory=list)
    skipped: list[FailedRevision] = field(default_factory=list)
    holds: list[HeldDestination] = field(default_factory=list)
    broker_error: str | None = None  # why the queue depths are unknown: the broker did not answer
    in_flight: list[InFlight] = field(default_factory=list)  # deliveries claimed by a dispatcher, not yet recorded
    stops: list[OpenOutage] = field(default_factory=list)  # model servers whose reading is stopped (garbage output)

    def in_flight_lines(self) -> list[str]:
        """Deliveries in flight whose dispatcher is not running: they wait for its claim to expire."""
        gone = [flight for flight in self.in_flight if flight.gone]
        if not gone:
            return []
        return [f"outbox: {len(gone)} pending deliveries claimed by a process that is not running"] + [
            f"  outbox row {flight.outbox_id}: {flight.describe()}" for flight in gone
        ]

    def hold_lines(self) -> list[str]:
        """How ``radtrace status`` shows each destination on hold, and each model server whose reading is stopped for
        unparseable output: what, since when, why, and what to run."""
        lines: list[str] = []
        for stop in self.stops:
            lines.append(f"reading stopped: model server {stop.server} since {stop.since:%Y-%m-%d %H:%M:%S} UTC"
                         f"{f' (told by {stop.worker})' if stop.worker else ''}")  # fmt: skip
            lines.append(f"  reason: {stop.reason}")
            lines.append(f"  again: {self.resume_command(stop)} (after checking the model and the held studies; "
                         f"it stops again after {STOP_AFTER} more unparseable studies in a row)")  # fmt: skip
        for hold in self.holds:
            lines.append(f"on hold: {hold.destination} since {hold.since:%Y-%m-%d %H:%M:%S} UTC, "
                         f"{hold.deliveries} deliveries held")  # fmt: skip
            lines.append(f"  reason: {hold.reason}")
            lines.extend(f"  changed since: {change}" for change in hold.changes)
            lines.append(f"  again: {hold.again} (after fixing what the reason says)")
        return lines

    def resume_command(self, stop: OpenOutage) -> str:
        """The command that lifts a stop for unparseable output (naming its server when several are stopped)."""
        return "radtrace model resume" + (f" --server {shlex.quote(stop.server)}" if len(self.stops) > 1 else "")

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
                "study_uid": oldest.study_uid,
                "revision": oldest.revision,
                "state": oldest.state.value,
                "since": oldest.since.isoformat(),
                "waiting_s": round(oldest.waiting_s, 3),
                "reason": oldest.reason,
            },
            "failed": [f.as_json() for f in self.failed],
            "skipped": [f.as_json() for f in self.skipped],
            "holds": [hold.as_json() for hold in self.holds],
            "model_stops": [{**stop.as_json(), "again": self.resume_command(stop)} for stop in self.stops],
            "broker_error": self.broker_error,
            "in_flight": [
                {
                    "outbox_id": f.outbox_id,
                    "process": f.process,
                    "since": f.since.isoformat(),
                    "lease_until": f.lease_until.isoformat(),
                    "process_gone": f.gone,
                    "describe": f.describe(),
                }
                for f in self.in_flight
            ],
        }


def queue_depths(settings: Settings) -> dict[str, int | None]:
    """Messages waiting in each queue; ``None`` for a queue whose broker cannot be reached."""
    return _queue_depths(settings)[0]


def _queue_depths(settings: Settings) -> tuple[dict[str, int | None], str | None]:
    """:func:`queue_depths` and, when they are unknown, why (the broker's URL without its password)."""
    from radtrace.config_reference import mask_url_password
    from radtrace.worker.app import is_embedded_broker

    names = [settings.broker.stat_queue, settings.broker.gpu_queue, settings.broker.dispatch_queue]
    depths: dict[str, int | None] = dict.fromkeys(names)
    try:
        depths.update(
            _embedded_depths(settings, names) if is_embedded_broker(settings) else _redis_depths(settings, names)
        )
    except Exception as exc:  # broker down or queue never declared: show unknown, not a traceback
        log.warning("queue depths unavailable: %s: %s", type(exc).__name__, exc)
        url = mask_url_password(settings.broker_url)
        return depths, f"the broker at {url} did not answer ({type(exc).__name__}: {exc}) (broker.url)"
    return depths, None


def _listener_note(settings: Settings, oldest: WaitingRevision) -> str | None:
    """Why a study receiving past ``listener.settle_seconds`` does not settle, when no listener runs: told only for
    a single data directory (SQLite): with PostgreSQL the listeners may run on other hosts, with their own."""
    settle = settings.listener.settle_seconds
    if oldest.state is not RevisionState.RECEIVING or oldest.waiting_s <= settle or is_postgresql(settings.store_url):
        return None
    lock = settings.data_dir / "listener.lock"
    if listener_holder(lock) is not False:
        return None
    return (f"receiving for {oldest.waiting_s:.0f} s (settles after {settle:g} s): no listener holds {lock}: is "
            "radtrace serve or radtrace listen running? It settles once one starts")  # fmt: skip


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
    from radtrace.reporting.dispatch.holds import held_destinations  # here: it imports pynetdicom

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
            sa.select(
                Study.study_key,
                Revision.number,
                Revision.state,
                since,
                Study.study_uid,
                Revision.reason,
                Revision.claimed_by,
                Revision.claim_expires_at,
            )
            .join(Study, Revision.study_id == Study.id)
            .where(
                sa.or_(
                    Revision.state.in_(_WAITING[:3]),
                    # reported and still delivering; with no destination a reported draft waits for nothing
                    sa.and_(
                        Revision.state == RevisionState.REPORTED,
                        sa.exists().where(
                            OutboxMessage.revision_id == Revision.id, OutboxMessage.state == OutboxState.PENDING
                        ),
                    ),
                )
            )
            .order_by(since, Revision.id)
            .limit(1)
        ).first()
        failed = _ended(session, RevisionState.FAILED, failed_limit)
        skipped = _ended(session, RevisionState.SKIPPED, failed_limit)
        flights = in_flight(session, _claimed_rows(session, now), now)
    oldest = None
    if oldest_row is not None:
        key, number, state, started, uid, reason, claimed_by, claim_expires_at = oldest_row
        oldest = WaitingRevision(
            key, number, RevisionState(state), started, (now - started).total_seconds(), uid, reason
        )
        note = _listener_note(settings, oldest) or _claim_note(claimed_by, claim_expires_at, now)
        if reason is None and note is not None:
            oldest = WaitingRevision(key, number, oldest.state, started, oldest.waiting_s, uid, note)
    queues, broker_error = _queue_depths(settings) if with_queues else ({}, None)
    holds = held_destinations(store, settings.dispatch)
    with store.session("looking for stops of the model's output") as session:
        stops = [outage for outage in open_outages(session) if outage.stop]
    return ServiceStatus(studies, revisions, outbox, queues, oldest, failed, skipped, holds, broker_error,
                         sorted(flights.values(), key=lambda f: f.outbox_id), stops)  # fmt: skip


def _claim_note(worker: str | None, expires: datetime | None, now: datetime) -> str | None:
    """A revision processing under a claim that ran out: its worker stopped renewing it (killed, lost)."""
    if worker is None or expires is None or expires > now:
        return None
    ago = (now - expires).total_seconds()
    return (
        f"claimed by worker {worker}, whose claim expired at {expires:%H:%M:%S} UTC ({ago:.0f} s ago): that worker "
        "stopped renewing it (killed, lost); the next worker that looks takes it over (an attempt counted)"
    )


def _claimed_rows(session: Session, now: datetime, limit: int = 100) -> list[tuple[int, str, datetime]]:
    """Pending outbox rows tried at least once and not due yet (claimed, or waiting for a retry): (id, study UID,
    next attempt at)."""
    return [
        (int(outbox_id), str(uid), due)
        for outbox_id, uid, due in session.execute(
            sa.select(OutboxMessage.id, Study.study_uid, OutboxMessage.next_attempt_at)
            .join(Revision, OutboxMessage.revision_id == Revision.id)
            .join(Study, Revision.study_id == Study.id)
            .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.attempts > 0,
                   OutboxMessage.next_attempt_at > now)
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
        )
    ]  # fmt: skip


def _ended(session: Session, state: RevisionState, limit: int, study_uid: str | None = None) -> list[FailedRevision]:
    """The latest revisions in ``state`` (of one study when ``study_uid``), newest first."""
    query = (
        sa.select(Study.study_key, Revision.number, Revision.reason, Revision.attempts, Revision.finished_at,
                  Study.study_uid, Study.accession, Revision.state, Revision.id)
        .join(Study, Revision.study_id == Study.id)
        .where(Revision.state == state)
        .order_by(Revision.finished_at.desc(), Revision.id.desc())
        .limit(limit)
    )  # fmt: skip
    if study_uid is not None:
        query = query.where(Study.study_uid == study_uid)
    rows = session.execute(query).all()
    failed: dict[int, list[str]] = {}
    if state is RevisionState.FAILED and rows:
        for revision_id, destination in session.execute(
            _failed_deliveries(*(row[8] for row in rows)).with_only_columns(
                OutboxMessage.revision_id, OutboxMessage.destination
            )
        ):
            if destination not in failed.setdefault(revision_id, []):
                failed[revision_id].append(destination)
    return [
        FailedRevision(*row[:7], state=RevisionState(row[7]), failed_deliveries=tuple(failed.get(row[8], ())))
        for row in rows
    ]


def _failed_deliveries(*revision_ids: int) -> sa.Select[OutboxMessage]:
    """The failed deliveries of a draft (assessments' deliveries are not the revision's: the settlement leaves them
    out too), oldest first."""
    from radtrace.reporting.dispatch.outbox import ASSESSMENT_KINDS  # here: it imports pynetdicom (0.5 s at start)

    return (
        sa.select(OutboxMessage)
        .where(
            OutboxMessage.revision_id.in_(revision_ids),
            OutboxMessage.state == OutboxState.FAILED,
            OutboxMessage.kind.not_in(ASSESSMENT_KINDS),
        )
        .order_by(OutboxMessage.id)
    )


# --- one study -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionDetail:
    """One revision of a study as ``radtrace study show`` prints it."""

    number: int
    state: RevisionState
    reason: str | None
    attempts: int
    instances: int
    opened_at: datetime
    finished_at: datetime | None
    sr_sop_instance_uid: str | None
    deliveries: dict[str, str]  # "kind destination" -> state

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {
            "revision": self.number,
            "state": self.state.value,
            "reason": self.reason,
            "attempts": self.attempts,
            "instances": self.instances,
            "opened_at": self.opened_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True)
class StudyDetail:
    """A study and its revisions, oldest first."""

    study_uid: str
    study_key: str
    accession: str | None
    revisions: list[RevisionDetail]

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {
            "study_uid": self.study_uid,
            "study_key": self.study_key,
            "accession": self.accession,
            "revisions": [revision.as_json() for revision in self.revisions],
        }


def study_detail(store: Store, study_uid: str) -> StudyDetail | None:
    """A study's revisions with their states, reasons and deliveries; None when no study has that UID."""
    from radtrace.reporting.dispatch.holds import held  # here: it imports pynetdicom

    with store.session("reading a study") as session:
        study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
        if study is None:
            return None
        on_hold = {str(name) for name in session.scalars(held())}
        now = utc_now()
        flights = in_flight(session, [(row.id, study.study_uid, row.next_attempt_at) for rev in study.revisions
                                      for row in rev.outbox if row.state is OutboxState.PENDING], now)  # fmt: skip
        revisions = []
        for rev in sorted(study.revisions, key=lambda r: r.number):
            deliveries = {
                f"{row.kind} {row.destination}": "held"
                if row.state is OutboxState.PENDING and row.destination in on_hold
                else f"pending: {flights[row.id].describe()}"
                if row.id in flights
                else OutboxState(row.state).value
                for row in rev.outbox
            }
            revisions.append(
                RevisionDetail(
                    rev.number, RevisionState(rev.state), rev.reason, rev.attempts, len(rev.instances),
                    rev.opened_at, rev.finished_at, rev.sr_sop_instance_uid, deliveries,
                )
            )  # fmt: skip
        return StudyDetail(study.study_uid, study.study_key, study.accession, revisions)


@dataclass(frozen=True)
class Retried:
    """What :func:`retry_revision` did: the revision, the state it had, and, for one that failed for a delivery,
    the deliveries made pending again (outbox id, "kind destination") instead of queueing it to be read again."""

    number: int
    previous: RevisionState
    redelivered: list[tuple[int, str]] = field(default_factory=list)


def retry_revision(store: Store, study_uid: str, number: int | None, actor: Actor) -> Retried:
    """Ask again for a failed or skipped revision (the latest such one unless ``number``).

    A reading that failed or was skipped is queued as a new attempt: its attempt count starts again (the earlier
    jobs stay in ``jobs``). A revision that failed for a delivery (its draft is made) goes back to ``reported`` with
    its failed deliveries pending again, due now, attempts from 0, each audited as ``dispatch_retry_scheduled``
    (``requested_by: operator``, the error it had), as ``radtrace dispatch retry`` does for a whole destination.
    ``study_retried`` records who asked and what the revision had ended with (``redelivery``: the destinations).

    Raises:
        StudyNotRetriableError: no such study or revision, or one that is not failed or skipped.
    """
    now = utc_now()
    recorder = AuditRecorder(store, actor)
    with store.session("retrying a revision", immediate=True) as session:
        query = (
            sa.select(Revision, Study).join(Study, Revision.study_id == Study.id).where(Study.study_uid == study_uid)
        )
        if number is not None:
            query = query.where(Revision.number == number)
        else:
            query = query.where(Revision.state.in_(_RETRIABLE)).order_by(Revision.number.desc()).limit(1)
        row = session.execute(query).first()
        if row is None:
            which = f"revision {number} of study" if number is not None else "failed or skipped revision of study"
            raise StudyNotRetriableError(f"no {which} {study_uid}")
        rev, study = row[0], row[1]
        previous = RevisionState(rev.state)
        if previous not in _RETRIABLE:
            raise StudyNotRetriableError(
                f"revision {rev.number} of study {study_uid} is {previous.value}: only failed or skipped ones retry"
            )
        undelivered = list(session.scalars(_failed_deliveries(rev.id))) if previous is RevisionState.FAILED else []
        # A draft whose delivery failed needs delivering, not reading: queued, the pipeline would find its outbox
        # rows, leave the failed ones failed, and the revision would fail again with the same reason.
        values: dict[str, object] = (
            {"state": RevisionState.REPORTED, "reason": None, "finished_at": None, "updated_at": now}
            if undelivered
            else {"state": RevisionState.QUEUED, "reason": None, "attempts": 0, "next_attempt_at": None,
                  "claimed_by": None, "claim_expires_at": None, "finished_at": None, "queued_at": now,
                  "updated_at": now}
        )  # fmt: skip
        changed = session.execute(
            sa.update(Revision)
            .where(Revision.id == rev.id, Revision.state == previous)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise StudyNotRetriableError(f"revision {rev.number} of study {study_uid} changed meanwhile; try again")
        from radtrace.reporting.dispatch.redelivery import deliver_again  # here: it imports pynetdicom

        redelivered = [deliver_again(session, recorder, actor, delivery, now) for delivery in undelivered]
        payload: dict[str, object] = {"revision": rev.number, "previous_state": previous.value,
                                      "previous_reason": rev.reason, "previous_attempts": rev.attempts}  # fmt: skip
        if undelivered:
            payload["redelivery"] = sorted({delivery.destination for delivery in undelivered})
        recorder.record(
            AuditEvent(EventType.STUDY_RETRIED, actor, study_uid=study.study_uid, accession=study.accession,
                       payload=payload),
            session=session,
        )  # fmt: skip
        return Retried(rev.number, previous, redelivered)
