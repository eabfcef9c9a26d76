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

The listener's refusals of the last hour (associations, presentation contexts), per port and reason with their
sources and the audit query that shows them, are :mod:`radtrace.worker.recent_refusals`: why a modality's studies do
not arrive.

One study's detail is :mod:`radtrace.worker.study_detail`, asking for one again :mod:`radtrace.worker.study_retry`,
the queue depths :mod:`radtrace.worker.queue_depths`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.config import Settings
from radtrace.dicom_listener.reassigned import FlaggedRevision, flagged_revisions
from radtrace.reporting.dispatch.claims import database_now
from radtrace.store.base import UtcDateTime, utc_now
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.liveness import InFlight, in_flight, listener_holder
from radtrace.worker.outage import OpenOutage, open_outages
from radtrace.worker.output_guard import STOP_AFTER
from radtrace.worker.queue_depths import queue_depths, queue_depths_and_error
from radtrace.worker.recent_refusals import RecentRefusals, recent_refusals
from radtrace.worker.study_retry import failed_deliveries

if TYPE_CHECKING:
    from radtrace.reporting.dispatch.holds import HeldDestination

__all__ = [
    "FailedRevision",
    "ServiceStatus",
    "WaitingRevision",
    "WithdrawnDrafts",
    "collect_status",
    "queue_depths",
]

#: Study UIDs named per flag line of ``radtrace status`` (the rest counted; ``--json`` lists them all).
FLAGGED_SHOWN = 10

_WAITING = (RevisionState.RECEIVING, RevisionState.QUEUED, RevisionState.PROCESSING, RevisionState.REPORTED)


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
    flagged: bool = False  # an image it read was re-sent under another patient/study or rejected: its draft withdrawn

    @property
    def again(self) -> list[str]:
        """The command(s) that ask for it again: per failed destination when a delivery failed, else the study's;
        for a flagged revision none (``radtrace study retry`` refuses it, its draft stays withdrawn): where to look."""
        if self.flagged:
            return [f"radtrace study show {self.study_uid}"]
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
class WithdrawnDrafts:
    """Drafts withdrawn (an image they read was moved to another patient or rejected by the PACS:
    :mod:`radtrace.reporting.dispatch.withdrawals`): how many revisions, their deliveries cancelled before they were
    sent, and their withdrawals per outbox state."""

    revisions: int = 0
    cancelled: int = 0
    withdrawals: dict[str, int] = field(default_factory=dict)

    def line(self) -> str | None:
        """``withdrawn drafts: N (…)``; None when there is none."""
        if not self.revisions:
            return None
        sent = ", ".join(f"{count} {state}" for state, count in self.withdrawals.items() if count)
        return (f"withdrawn drafts: {self.revisions} ({self.cancelled} deliveries cancelled before they were sent; "
                f"withdrawals sent to the peers the drafts reached: {sent or 'none'})")  # fmt: skip

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {"revisions": self.revisions, "cancelled": self.cancelled, "withdrawals": self.withdrawals}


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
    stop_after: int = STOP_AFTER  # model.unparsed_stop_after: after how many more a resumed model stops again
    refusals: RecentRefusals | None = None  # the listener's refusals of the last hour, per port and reason
    reassigned: list[FlaggedRevision] = field(default_factory=list)  # read an image re-sent under another patient
    rejected: list[FlaggedRevision] = field(default_factory=list)  # read an image the PACS rejected (IOCM)
    withdrawn: WithdrawnDrafts = field(default_factory=WithdrawnDrafts)  # drafts withdrawn from the peers

    def flag_lines(self) -> list[str]:
        """Drafts read from an image the PACS re-sent under another patient or study, or rejected: not to be signed
        before checking (at most :data:`FLAGGED_SHOWN` study UIDs each; ``radtrace study show UID`` says more)."""
        lines = []
        for flagged, what in ((self.reassigned, "reassigned images: {studies} study(ies), {revisions} revision(s) "
                               "read from an image the PACS re-sent under another patient/study"),
                              (self.rejected, "rejected images: {studies} study(ies), {revisions} revision(s) read "
                               "from an image the PACS rejected (rejection note)")):  # fmt: skip
            if not flagged:
                continue
            studies = sorted({revision.study_uid for revision in flagged})
            shown = ", ".join(studies[:FLAGGED_SHOWN]) + (
                f" and {len(studies) - FLAGGED_SHOWN} more" if len(studies) > FLAGGED_SHOWN else ""
            )
            head = what.format(studies=len(studies), revisions=len(flagged))
            checked = sum(revision.checked_at is not None for revision in flagged)
            if checked:  # a radiologist recorded the check on the study page: accepting those drafts is allowed
                head = head.replace(" revision(s)", f" revision(s) ({checked} checked on the console)", 1)
            if checked == len(flagged):  # nothing left to check: the line says so, not "check them"
                advice = "each one checked by a radiologist on the console"
            elif checked:
                advice = f"do not sign the {len(flagged) - checked} unchecked one(s) before checking"
            else:
                advice = "do not sign their drafts before checking"
            lines.append(f"{head}: {advice} (details: radtrace study show UID): {shown}")
        if (withdrawn := self.withdrawn.line()) is not None:
            lines.append(withdrawn)
        return lines

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
                         f"it stops again after {self.stop_after} more unparseable studies in a row)")  # fmt: skip
        for hold in self.holds:
            lines.append(f"on hold: {hold.destination} since {hold.since:%Y-%m-%d %H:%M:%S} UTC, "
                         f"{hold.deliveries} deliveries held")  # fmt: skip
            lines.append(f"  reason: {hold.reason}")
            lines.extend(f"  changed since: {change}" for change in hold.changes)
            lines.append(f"  again: {hold.again} (after fixing what the reason says)")
            lines.append(f"  audit: {hold.audited}")
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
            "listener_refusals": None if self.refusals is None else self.refusals.as_json(),
            "reassigned_images": _flagged_json(self.reassigned),
            "rejected_images": _flagged_json(self.rejected),
            "withdrawn_drafts": self.withdrawn.as_json(),
            "broker_error": self.broker_error,
            "in_flight": [
                {
                    "outbox_id": f.outbox_id,
                    "process": f.process,
                    "since": f.since.isoformat(),
                    "lease_until": f.lease_until.isoformat(),
                    "lease_left_s": f.lease_left_s,
                    "process_gone": f.gone,
                    "describe": f.describe(),
                }
                for f in self.in_flight
            ],
        }


def _flagged_json(flagged: list[FlaggedRevision]) -> dict[str, object]:
    return {
        "studies": sorted({revision.study_uid for revision in flagged}),
        "revisions": len(flagged),
        "checked": sum(revision.checked_at is not None for revision in flagged),
    }


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
        lease_now = database_now(session)  # claims and leases: the database's clock, never this node's
        flights = in_flight(session, _claimed_rows(session, lease_now))
        refusals = recent_refusals(session, now)
        reassigned = flagged_revisions(session, mark="reassigned_at")
        rejected = flagged_revisions(session, mark="rejected_at")
        withdrawn = _withdrawn_drafts(session)
    oldest = None
    if oldest_row is not None:
        key, number, state, started, uid, reason, claimed_by, claim_expires_at = oldest_row
        oldest = WaitingRevision(
            key, number, RevisionState(state), started, (now - started).total_seconds(), uid, reason
        )
        note = _listener_note(settings, oldest) or _claim_note(claimed_by, claim_expires_at, lease_now)
        if reason is None and note is not None:
            oldest = WaitingRevision(key, number, oldest.state, started, oldest.waiting_s, uid, note)
    queues, broker_error = queue_depths_and_error(settings) if with_queues else ({}, None)
    holds = held_destinations(store, settings.dispatch)
    with store.session("looking for stops of the model's output") as session:
        stops = [outage for outage in open_outages(session) if outage.stop]
    return ServiceStatus(studies, revisions, outbox, queues, oldest, failed, skipped, holds, broker_error,
                         sorted(flights.values(), key=lambda f: f.outbox_id), stops,
                         settings.model.unparsed_stop_after, refusals, reassigned, rejected, withdrawn)  # fmt: skip


def _withdrawn_drafts(session: Session) -> WithdrawnDrafts:
    """Revisions with a delivery cancelled (their draft withdrawn before it was sent) or a withdrawal queued."""
    from radtrace.reporting.dispatch.kinds import WITHDRAWAL_KINDS  # here: it imports pynetdicom

    withdrawal = OutboxMessage.kind.in_(WITHDRAWAL_KINDS)
    cancelled = OutboxMessage.state == OutboxState.CANCELLED
    revisions = session.scalar(sa.select(sa.func.count(sa.distinct(OutboxMessage.revision_id))).where(
        sa.or_(withdrawal, cancelled)))  # fmt: skip
    deliveries = session.scalar(sa.select(sa.func.count()).where(cancelled))
    withdrawals = {state.value: 0 for state in OutboxState if state is not OutboxState.CANCELLED}
    for state, count in session.execute(
        sa.select(OutboxMessage.state, sa.func.count()).where(withdrawal).group_by(OutboxMessage.state)
    ):
        withdrawals[OutboxState(state).value] = int(count)
    return WithdrawnDrafts(int(revisions or 0), int(deliveries or 0), withdrawals)


def _claim_note(worker: str | None, expires: datetime | None, now: datetime) -> str | None:
    """A revision processing under a claim that ran out: its worker stopped renewing it (killed, lost). ``now``: the
    database's clock, which ``claim_expires_at`` is written on (:mod:`radtrace.worker.claims`)."""
    if worker is None or expires is None or expires > now:
        return None
    ago = (now - expires).total_seconds()
    return (
        f"claimed by worker {worker}, whose claim expired at {expires:%H:%M:%S} UTC ({ago:.0f} s ago): that worker "
        "stopped renewing it (killed, lost); the next worker that looks takes it over (an attempt counted)"
    )


def _claimed_rows(session: Session, lease_now: datetime, limit: int = 100) -> list[tuple[int, str, datetime]]:
    """Pending outbox rows tried at least once and not due yet by the database's clock ``lease_now`` (claimed: a
    lease is written on it; or waiting for a retry): (id, study UID, next attempt at)."""
    return [
        (int(outbox_id), str(uid), due)
        for outbox_id, uid, due in session.execute(
            sa.select(OutboxMessage.id, Study.study_uid, OutboxMessage.next_attempt_at)
            .join(Revision, OutboxMessage.revision_id == Revision.id)
            .join(Study, Revision.study_id == Study.id)
            .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.attempts > 0,
                   OutboxMessage.next_attempt_at > lease_now)
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
        )
    ]  # fmt: skip


def _ended(session: Session, state: RevisionState, limit: int, study_uid: str | None = None) -> list[FailedRevision]:
    """The latest revisions in ``state`` (of one study when ``study_uid``), newest first."""
    query = (
        sa.select(Study.study_key, Revision.number, Revision.reason, Revision.attempts, Revision.finished_at,
                  Study.study_uid, Study.accession, Revision.state, Revision.id,
                  sa.or_(Revision.reassigned_at.is_not(None), Revision.rejected_at.is_not(None)))
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
            failed_deliveries(*(row[8] for row in rows)).with_only_columns(
                OutboxMessage.revision_id, OutboxMessage.destination
            )
        ):
            if destination not in failed.setdefault(revision_id, []):
                failed[revision_id].append(destination)
    return [
        FailedRevision(
            *row[:7], state=RevisionState(row[7]), failed_deliveries=tuple(failed.get(row[8], ())), flagged=bool(row[9])
        )
        for row in rows
    ]
