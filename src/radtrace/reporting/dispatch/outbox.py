"""The outbox: every report to every destination is a row, delivered with bounded, audited retries.

Rows and payload files are added by its enqueue half (:mod:`.enqueueing`: ``enqueue``, ``add_assessments``,
``settle_pending``); the kinds and the planned deliveries are in :mod:`.kinds`, the senders in :mod:`.senders`.
``deliver(outbox_id)`` makes one attempt if the row is pending and due (what it did: :class:`.delivery.Delivery`;
an outcome whose claim was released meanwhile: :mod:`.superseded`):

1. *claim*: one conditional UPDATE raises ``attempts`` and pushes ``next_attempt_at`` past a lease (longer than the
   longest send may take: the RIS ACK timeout or a C-STORE's timed phases, plus a margin), written and judged on the
   database's clock (:func:`.claims.database_now`, never a node's wall clock: a node whose clock is minutes ahead
   does not take a send in flight on another), only if nobody else did so first; a concurrent dispatcher (or a
   doorbell rung twice) finds the row not due and does nothing, so one attempt is in flight per row at a time.
   ``dispatch_attempted`` is audited in the same transaction, and the row names its holder (``claimed_by``,
   :mod:`.claims`);
2. *send*, outside any transaction, through the sender for the row's kind (C-STORE, MLLP, file drop), while a
   thread renews the claim's ``heartbeat_at`` every :data:`.claims.HEARTBEAT_S`. The send begins only while the claim
   was known held less than :data:`.claims.SEND_FENCE_S` ago, or a renewal lands first (:class:`.claims.Fence`): a
   dispatcher cut off from its database (or stalled) past the moment another may take the claim over sends nothing,
   and the row is due again a beat later, that attempt not counted (``not_sent``);
3. *record*: delivered (``dispatch_delivered``), or a retry scheduled with exponential backoff
   (``dispatch_retry_scheduled``), or failed for good after a permanent error or ``max_attempts``
   (``dispatch_failed`` with the reason, visible to QA; never silent). The row keeps how the attempt ended
   (``last_outcome``: delivered, refused by the peer, failed) and whether the peer has or may have the payload
   (``reached``: set by the claim, put back by a refusal): :mod:`.outcomes`. A PACS that rejects the association
   permanently (an AE title it does not know) puts the destination on hold (:mod:`.holds`, ``dispatch_held``): this
   row and every other
   delivery to it wait, held, without an association, until ``radtrace dispatch retry DESTINATION``
   (:mod:`.redelivery`) lifts it once what the reason says is fixed. The record is written only while the row is
   still this claim (same ``claimed_by``, with its claim's own token, and attempt): a holder whose claim was released
   while it sent (its heartbeat stopped) and that another has claimed since never writes over the new holder's
   attempt; its outcome is audited as what it was, with ``stale_claim`` (a send that reached the peer as
   ``dispatch_delivered``: the peer did get it). Such a late success on a row still pending (the new holder's send
   in flight, or a retry scheduled) or failed marks it delivered (the peer has the report), and the new holder's
   outcome is moot: audited, never written over the delivered row.

The site sends to one destination at most ``dispatch.max_sends_per_destination`` rows at a time, counted over every
dispatcher node in the claim's own conditional UPDATE (:mod:`.destination_cap`); a row over it is left unclaimed
(``deferred``), and the send that ends next rings the oldest such row once (``Delivery.wake``), so a RIS that never
answers (each send waits its timeout) does not hold up the SRs to a PACS that does, nor a hospital RIS that allows 2
connections see a third.

A draft's row of a revision read from an image the PACS moved to another patient or study, or rejected, is never
claimed: it is cancelled, and the draft withdrawn from the peers it reached (:mod:`.withdrawals`).

If the process dies between claim and record, another dispatcher releases the claim
(:mod:`radtrace.worker.dead_claims`: at once when the holder's pid in this PID namespace is gone, once its heartbeat is
overdue when it ran in another, once its beat has been seen unchanged for 15 s when it ran on another machine), or
else the lease expires, and the row is tried again: delivery
is at-least-once, and the payload is byte-identical each time (same SR UIDs, same HL7 control ID) so
peers can recognise a repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings
from radtrace.errors import ConfigError, DispatchRejectedError, RadtraceError, is_retryable
from radtrace.reporting.dispatch import claims, destination_cap, holds, withdrawals
from radtrace.reporting.dispatch.cstore import AssociationRejectedError
from radtrace.reporting.dispatch.delivery import Delivery, row_event
from radtrace.reporting.dispatch.enqueueing import OutboxRows
from radtrace.reporting.dispatch.kinds import (
    ASSESSMENT_KINDS,
    DRAFT_KINDS,
    KIND_ASSESSMENT,
    KIND_ASSESSMENT_FILE,
    KIND_ASSESSMENT_HL7,
    KIND_COMPANION,
    KIND_FHIR,
    KIND_FILE,
    KIND_GSPS,
    KIND_HL7,
    KIND_SR,
    KIND_WITHDRAWAL,
    KIND_WITHDRAWAL_FILE,
    KIND_WITHDRAWAL_HL7,
    NOT_DRAFT_KINDS,
    PlannedDelivery,
    ReportFiles,
    planned_deliveries,
)
from radtrace.reporting.dispatch.outcomes import outcome_of
from radtrace.reporting.dispatch.payloads import PayloadFiles, StagedPayloads
from radtrace.reporting.dispatch.senders import LEASE_MARGIN_S, Sender, default_senders, longest_send_s
from radtrace.reporting.dispatch.superseded import SupersededRecords
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import DeliveryOutcome, OutboxMessage, OutboxState, Study

__all__ = [
    "ASSESSMENT_KINDS",
    "KIND_ASSESSMENT",
    "KIND_ASSESSMENT_FILE",
    "KIND_ASSESSMENT_HL7",
    "KIND_COMPANION",
    "KIND_FHIR",
    "KIND_FILE",
    "KIND_GSPS",
    "KIND_HL7",
    "KIND_SR",
    "KIND_WITHDRAWAL",
    "KIND_WITHDRAWAL_FILE",
    "KIND_WITHDRAWAL_HL7",
    "NOT_DRAFT_KINDS",
    "Delivery",
    "Outbox",
    "PlannedDelivery",
    "ReportFiles",
    "Sender",
    "StagedPayloads",
    "default_senders",
    "planned_deliveries",
]

log = logging.getLogger(__name__)

#: How often a dispatcher settles payloads a crash left pending (:meth:`Outbox.settle_pending`), at most.
SETTLE_EVERY_S: Final = 600.0


class Outbox(OutboxRows, SupersededRecords):
    """Enqueues and delivers outbound reports; the only writer of ``outbox`` rows."""

    def __init__(
        self,
        store: Store,
        recorder: AuditRecorder,
        settings: DispatchSettings,
        payload_dir: Path,
        *,
        senders: Mapping[str, Sender] | None = None,
        clock: Callable[[], datetime] = utc_now,
        actor: Actor | None = None,
        lease_s: float = 300.0,
        heartbeat_s: float = claims.HEARTBEAT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.settings = settings
        self.payload_dir = payload_dir
        self.payloads = PayloadFiles(payload_dir)
        self.senders = dict(senders) if senders is not None else default_senders(settings)
        self.clock = clock
        self.actor = actor or Actor()
        # A claim that ran out while its send still waited would let a second dispatcher send the row again.
        self.lease = timedelta(seconds=max(lease_s, longest_send_s(settings) + LEASE_MARGIN_S))
        self.heartbeat_s = heartbeat_s  # how often a send in flight renews its claim
        self.monotonic = monotonic  # the fence's clock (claims.Fence): how long ago the claim was known held
        self._settled_at = -SETTLE_EVERY_S  # monotonic time of the last settle_pending (none yet)

    # --- deliver -------------------------------------------------------------------------------

    def backoff(self, attempts: int) -> timedelta:
        """Delay before the next attempt after ``attempts`` failed ones: doubling, capped."""
        seconds = self.settings.backoff_initial_s * 2 ** max(0, attempts - 1)
        return timedelta(seconds=min(seconds, self.settings.backoff_max_s))

    def due(self) -> list[int]:
        """IDs of pending rows whose next attempt is due, oldest first."""
        with self.store.session("listing due outbox rows") as session:
            rows = session.scalars(
                sa.select(OutboxMessage.id)
                .where(OutboxMessage.state == OutboxState.PENDING, self._due_now(session))
                .where(OutboxMessage.destination.not_in(holds.held()))
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            )
            return list(rows)

    def _due_now(self, session: Session) -> sa.ColumnElement[bool]:
        """A row is due: unclaimed, its retry due by this dispatcher's clock; claimed, its lease over by the database's
        (:func:`.claims.database_now`: never a node's wall clock, see :mod:`.claims`)."""
        return sa.or_(
            sa.and_(OutboxMessage.claimed_by.is_(None), OutboxMessage.next_attempt_at <= self.clock()),
            sa.and_(OutboxMessage.claimed_by.is_not(None),
                    OutboxMessage.next_attempt_at <= claims.database_now(session)),
        )  # fmt: skip

    def deliver_due(self) -> list[Delivery]:
        """One attempt for every due row (what a dispatcher's reconcile loop runs), after settling payloads left
        pending by a crash (:meth:`settle_pending`)."""
        self._settle(every_s=0.0)
        return [self.deliver(outbox_id) for outbox_id in self.due()]

    def _settle(self, every_s: float = SETTLE_EVERY_S) -> None:
        """:meth:`settle_pending` unless this outbox did so less than ``every_s`` ago; a failure is logged only (the
        rows are delivered all the same; the next time tries again)."""
        now = time.monotonic()
        if now - self._settled_at < every_s:
            return
        self._settled_at = now
        try:
            self.settle_pending()
        except (OSError, RadtraceError) as exc:
            log.warning("outbox: pending payloads could not be settled: %s", type(exc).__name__)

    def _event(
        self, row: OutboxMessage, study: Study, kind: EventType, outcome: Outcome, **details: object
    ) -> AuditEvent:
        return row_event(self.actor, row, study, kind, outcome, **details)

    def sends_in_flight(self, destination: str) -> int:
        """Sends to ``destination`` in flight now, on every dispatcher node (its live claims)."""
        with self.store.session("counting sends in flight") as session:
            return destination_cap.live_sends(session, destination, claims.database_now(session))

    def _claim(self, outbox_id: int) -> tuple[OutboxMessage, bool] | Delivery:
        """Claim the row (see the module docstring): the row claimed and whether its peer had, or may have had, the
        payload before this claim (``reached``: the claim sets it, a refusal puts it back), or what happened
        instead."""
        now = self.clock()
        with self.store.session("claiming an outbox row", immediate=True) as session:
            row = session.get(OutboxMessage, outbox_id)
            if row is None:
                raise DispatchRejectedError(f"outbox row {outbox_id} does not exist")
            if row.state is not OutboxState.PENDING:
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts)
            if row.kind in DRAFT_KINDS and withdrawals.is_marked(row.revision):  # never sent: see _withdraw
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts, withdrawn=True)
            destination_cap.lock_destination(session, row.destination)  # other nodes' claims to it wait for ours
            database_now = claims.database_now(session)  # leases: the database's clock, never this node's
            # claimed: its lease ends at next_attempt_at by the database's clock; else a retry due by ours
            due_at = database_now if row.claimed_by is not None else now
            if row.next_attempt_at > due_at:
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts)
            hold = holds.hold_of(session, row.destination)
            if hold is not None:  # no association, no attempt, no event: looked at again later only to find the hold
                row.next_attempt_at = now + holds.recheck_after(self.settings)
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts, error=hold.reason,
                                held=True)  # fmt: skip
            if row.attempts >= self.settings.max_attempts:  # spent by sends that ended unrecorded: see _spent
                return self._spent(session, row, now)
            claimed = session.execute(
                sa.update(OutboxMessage)
                .where(
                    OutboxMessage.id == outbox_id,
                    OutboxMessage.state == OutboxState.PENDING,
                    OutboxMessage.attempts == row.attempts,
                    OutboxMessage.next_attempt_at == row.next_attempt_at,  # the row as read: due
                    OutboxMessage.claimed_by.is_(None)
                    if row.claimed_by is None
                    else OutboxMessage.claimed_by == row.claimed_by,
                    # site-wide: fewer than the cap of sends to its destination in flight, on any node
                    destination_cap.room_for_one_more(
                        row.destination, database_now, self.settings.max_sends_per_destination, outbox_id
                    ),
                )
                .values(
                    attempts=row.attempts + 1,
                    next_attempt_at=database_now + self.lease,
                    claimed_by=claims.new_claim(),
                    heartbeat_at=now,
                    reached=True,  # a send in flight, or one a crash leaves unrecorded, may reach the peer
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]  # someone else claimed it first, or the cap
                full = (destination_cap.live_sends(session, row.destination, database_now, besides=outbox_id)
                        >= self.settings.max_sends_per_destination)  # fmt: skip
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts, deferred=full)
            was_reached = bool(row.reached)
            session.refresh(row)
            study = row.revision.study
            self.recorder.record(
                self._event(row, study, EventType.DISPATCH_ATTEMPTED, Outcome.SUCCESS), session=session
            )
            return row, was_reached

    def _spent(self, session: Session, row: OutboxMessage, now: datetime) -> Delivery:
        """A due row whose attempts are all spent: ``failed`` for good, not claimed again. Only an attempt that ended
        without an outcome leaves a row pending so (a recorded one fails the row at ``max_attempts``): its dispatcher
        killed mid-send, its claim then released (:mod:`radtrace.worker.dead_claims`) or its lease run out. A send
        that kills its dispatcher every time (an OOM kill, a peer whose answer crashes it) was otherwise sent again
        after every release, for ever, and its draft never said that it would not arrive. (Or ``max_attempts``
        lowered below a row's count, which is failed as its setting now says.) The row stays ``reached``: the last
        send may have reached the peer."""
        attempts, previous = row.attempts, row.last_error or ""
        if row.claimed_by is not None:  # its lease ran out (why it is due), nobody released it
            holder = claims.ClaimHolder.parse(row.claimed_by)
            said = f"claimed by {holder.process if holder else row.claimed_by}, whose lease ran out"
        elif previous.startswith("claimed by "):  # released: dead_claims' words, less what it did next
            said = previous.partition(": sent again now")[0]
        else:
            said = ""
        reason = (
            f"gave up after {attempts} attempts: attempt {attempts} ended without an outcome ({said}: its dispatcher "
            "stopped mid-send); the peer may have the payload"
            if said
            else f"gave up after {attempts} attempts (dispatch.max_attempts is {self.settings.max_attempts}): "
            f"{previous or 'no outcome recorded'}"
        )
        failed = session.execute(
            sa.update(OutboxMessage)
            .where(OutboxMessage.id == row.id, OutboxMessage.state == OutboxState.PENDING,
                   OutboxMessage.attempts == attempts, OutboxMessage.next_attempt_at == row.next_attempt_at,
                   OutboxMessage.claimed_by.is_(None) if row.claimed_by is None
                   else OutboxMessage.claimed_by == row.claimed_by)  # the row as read: nobody recorded it meanwhile
            .values(state=OutboxState.FAILED, last_error=reason, last_outcome=DeliveryOutcome.FAILED,
                    claimed_by=None, heartbeat_at=None)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        if failed.rowcount != 1:  # type: ignore[attr-defined]  # recorded or claimed meanwhile: theirs
            return Delivery(row.id, row.state, attempted=False, attempts=attempts)
        session.refresh(row)
        study = row.revision.study
        self.recorder.record(self._event(row, study, EventType.DISPATCH_FAILED, Outcome.SERIOUS_FAILURE,
                                         error=reason, unrecorded_attempt=bool(said)), session=session)  # fmt: skip
        log.warning("study %s revision %d: outbox %s %s %s: failed, its %d attempts spent", study.study_key,
                    row.revision.number, row.id, row.kind, row.destination, attempts)  # fmt: skip
        cap = self.settings.max_sends_per_destination
        wake = destination_cap.to_wake(session, row.destination, cap, now, besides=row.id)
        return Delivery(row.id, OutboxState.FAILED, attempted=False, attempts=attempts, error=reason, wake=wake)

    def deliver(self, outbox_id: int) -> Delivery:
        """Make one attempt for one row if it is pending and due (see the module docstring); now and then (every
        :data:`SETTLE_EVERY_S`) settle the payloads a crash left pending first. A row whose destination has
        ``dispatch.max_sends_per_destination`` sends in flight on the site is not claimed (``deferred``): a
        destination that never answers must not hold every thread while deliveries to the others wait, and a RIS that
        allows 2 connections must not be opened a third by another node (:mod:`.destination_cap`)."""
        self._settle()
        return self._deliver(outbox_id)

    def _deliver(self, outbox_id: int) -> Delivery:
        claim_sent = self.monotonic()  # the claim cannot be seen by another node before this
        claimed = self._claim(outbox_id)
        if isinstance(claimed, Delivery):
            return self._withdraw(claimed) if claimed.withdrawn else claimed
        row, was_reached = claimed
        assert row.claimed_by is not None  # written by the claim
        holder, attempt = row.claimed_by, row.attempts
        note: str | None = None
        error: RadtraceError | None = None
        refusal: str | None = None
        try:
            sender = self.senders.get(row.kind)
            if sender is None:
                raise ConfigError(f"no sender for outbox kind {row.kind!r}")
            payload = self.payloads.read(row.payload_path, row.payload_sha256)
            with claims.kept_alive(self.store, row.id, holder, attempt, self.clock, self.heartbeat_s,
                                   held_since=claim_sent, monotonic=self.monotonic) as fence:  # fmt: skip
                refusal = fence.refusal()  # cut off from the database too long: another node may be sending it
                if refusal is None:
                    note = sender(row.destination, payload)
            if refusal is not None:
                return self._record_fenced(outbox_id, holder, attempt, refusal, was_reached)
        except RadtraceError as exc:
            error = exc
        except Exception as exc:  # a bug in a sender must not leave the row claimed and unexplained
            log.exception("unexpected error delivering outbox row %s", outbox_id)
            error = DispatchRejectedError(f"unexpected {type(exc).__name__}: {exc}")
        return self._record(outbox_id, holder, attempt, note, error, was_reached)

    def _withdraw(self, refused: Delivery) -> Delivery:
        """A draft's delivery of a revision marked reassigned or rejected, found before it was claimed: it is cancelled
        and the draft withdrawn from the peers it reached, at once (:func:`.withdrawals.withdraw`; the reconciler's
        sweep would do it on its next pass), and the withdrawals queued are rung (``wake``)."""
        with self.store.session("reading an outbox row") as session:
            revision_id = session.scalar(
                sa.select(OutboxMessage.revision_id).where(OutboxMessage.id == refused.outbox_id)
            )
        if revision_id is None:
            return refused
        done = withdrawals.withdraw(self, revision_id)
        with self.store.session("reading an outbox row") as session:
            row = session.get(OutboxMessage, refused.outbox_id)
            assert row is not None  # rows are never deleted
            return Delivery(refused.outbox_id, row.state, attempted=False, attempts=row.attempts,
                            error=row.last_error, withdrawn=True, wake=done.queued)  # fmt: skip

    def _record(
        self,
        outbox_id: int,
        holder: str,
        attempt: int,
        note: str | None,
        error: RadtraceError | None,
        was_reached: bool,
    ) -> Delivery:
        """Record the outcome of attempt ``attempt`` by claim ``holder``, only while the row is still that claim: the
        claim is ended by a conditional UPDATE (which also locks the row on PostgreSQL; SQLite's write lock is taken
        at BEGIN). A claim released meanwhile (its heartbeat stopped: :mod:`radtrace.worker.dead_claims`) and not
        claimed again is recorded all the same (the row was nobody's); one claimed again, or already recorded by its
        new holder, is not touched: see :meth:`_record_superseded`. ``last_outcome`` says how it ended (delivered,
        refused by the peer, failed: :mod:`.outcomes`); a refusal puts ``reached`` back to ``was_reached``, what it
        was before this attempt's claim (the peer stored nothing this time)."""
        now = self.clock()
        with self.store.session("recording a delivery attempt", immediate=True) as session:
            mine = sa.and_(OutboxMessage.id == outbox_id, OutboxMessage.state == OutboxState.PENDING,
                           OutboxMessage.attempts == attempt)  # fmt: skip
            ended = session.execute(
                sa.update(OutboxMessage).where(mine, OutboxMessage.claimed_by == holder)
                .values(claimed_by=None, heartbeat_at=None)  # the attempt ends here, whatever its outcome
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            released: str | None = None
            if ended.rowcount != 1:  # type: ignore[attr-defined]
                unclaimed = session.execute(
                    sa.update(OutboxMessage).where(mine, OutboxMessage.claimed_by.is_(None))
                    .values(heartbeat_at=None)
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                if unclaimed.rowcount != 1:  # type: ignore[attr-defined]
                    return self._record_superseded(session, outbox_id, holder, attempt, note, error)
                released = ("this attempt's claim had been released while it was sending (its heartbeat stopped) "
                            "and nobody had claimed the delivery again: its outcome is recorded as usual")  # fmt: skip
                log.warning("outbox %s: %s", outbox_id, released)
            row = session.get(OutboxMessage, outbox_id)
            assert row is not None  # claimed a moment ago; rows are never deleted
            study = row.revision.study
            row.last_outcome = outcome_of(error)
            if row.last_outcome is DeliveryOutcome.REFUSED:
                row.reached = was_reached
            if error is None:
                row.state, row.delivered_at, row.last_error = OutboxState.DELIVERED, now, note
                event = self._event(row, study, EventType.DISPATCH_DELIVERED, Outcome.SUCCESS, note=note,
                                    claim_released=released)  # fmt: skip
            elif is_retryable(error) and row.attempts < self.settings.max_attempts:
                row.next_attempt_at, row.last_error = now + self.backoff(row.attempts), error.reason
                event = self._event(
                    row,
                    study,
                    EventType.DISPATCH_RETRY_SCHEDULED,
                    Outcome.MINOR_FAILURE,
                    error=error.reason,
                    next_attempt_at=row.next_attempt_at.isoformat(),
                    claim_released=released,
                )
            elif isinstance(error, AssociationRejectedError):  # a configuration to fix: the destination waits for it
                event = self._held(session, row, study, error, now)
            else:
                reason = (
                    error.reason
                    if not is_retryable(error)
                    else f"gave up after {row.attempts} attempts: {error.reason}"
                )
                row.state, row.last_error = OutboxState.FAILED, reason
                event = self._event(row, study, EventType.DISPATCH_FAILED, Outcome.SERIOUS_FAILURE, error=reason,
                                    claim_released=released)  # fmt: skip
            self.recorder.record(event, session=session)
            log.info("study %s revision %d: outbox %s %s %s: %s (attempt %d)", study.study_key, row.revision.number,
                     outbox_id, row.kind, row.destination, row.state, row.attempts)  # fmt: skip
            held_now = isinstance(error, AssociationRejectedError)
            error_text = row.last_error if error else None
            cap = self.settings.max_sends_per_destination
            wake = destination_cap.to_wake(session, row.destination, cap, now, besides=outbox_id)  # its slot is free
            return Delivery(outbox_id, row.state, attempted=True, attempts=row.attempts, error=error_text,
                            held=held_now, wake=wake)  # fmt: skip

    def _record_fenced(self, outbox_id: int, holder: str, attempt: int, refusal: str, was_reached: bool) -> Delivery:
        """Nothing was sent (:class:`.claims.Fence`: the claim could not be renewed in time): the row is due again a
        beat later, this attempt not counted, audited ``dispatch_retry_scheduled`` with ``not_sent``, while it is
        still this claim; one released meanwhile is another's to send (logged only). Raises RadtraceError when the
        database is still away: the claim then ends as an unrecorded one does (released, or its lease runs out)."""
        log.warning("outbox %s: %s", outbox_id, refusal)
        with self.store.session("recording a delivery not sent", immediate=True) as session:
            due = self.clock() + timedelta(seconds=self.heartbeat_s)
            put_back = session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id, OutboxMessage.state == OutboxState.PENDING,
                       OutboxMessage.attempts == attempt, OutboxMessage.claimed_by == holder)
                .values(attempts=attempt - 1, next_attempt_at=due, last_error=refusal, claimed_by=None,
                        heartbeat_at=None, reached=was_reached)  # nothing was sent
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            row = session.get(OutboxMessage, outbox_id)
            assert row is not None  # rows are never deleted
            if put_back.rowcount != 1:  # type: ignore[attr-defined]
                return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts, error=refusal)
            self.recorder.record(
                self._event(row, row.revision.study, EventType.DISPATCH_RETRY_SCHEDULED, Outcome.MINOR_FAILURE,
                            error=refusal, not_sent=True, attempt_counted=False, next_attempt_at=due.isoformat()),
                session=session,
            )  # fmt: skip
            cap = self.settings.max_sends_per_destination
            wake = destination_cap.to_wake(session, row.destination, cap, self.clock(), besides=outbox_id)
            return Delivery(outbox_id, row.state, attempted=False, attempts=row.attempts, error=refusal, wake=wake)

    def _held(
        self, session: Session, row: OutboxMessage, study: Study, error: AssociationRejectedError, now: datetime
    ) -> AuditEvent:
        """A permanent rejection: the row waits, held, and the destination goes on hold unless it is already (a
        concurrent refusal was first). The hold is audited once, as ``dispatch_held`` (:func:`.holds.held_event`);
        the row's attempt closes as ``dispatch_retry_scheduled`` waiting for the hold (``hold: placed`` when this
        refusal placed it, ``held`` when it was held already)."""
        # The hold first, the row's update after: the order a lift takes its locks in (no deadlock with one).
        placed = holds.place_hold(session, self.settings, row, error, now)
        row.next_attempt_at, row.last_error = now + holds.recheck_after(self.settings), error.reason
        if placed:
            log.warning("outbox %s: %s is on hold: %s", row.id, row.destination, error.reason)
            self.recorder.record(holds.held_event(self.actor, row, error, now, self.settings), session=session)
            waits = {**holds.hold_payload(holds.PLACED, now, error.reason), "rejection": error.rejection.codes}
        else:
            hold = holds.hold_of(session, row.destination)
            waits = holds.hold_payload(holds.HELD, hold.held_since, hold.reason) if hold is not None else {}
        return self._event(row, study, EventType.DISPATCH_RETRY_SCHEDULED, Outcome.MINOR_FAILURE, error=error.reason,
                           **waits)  # fmt: skip
