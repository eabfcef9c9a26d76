"""Deliveries: one attempt per outbox row, and the revision's state once its rows are settled.

``reported → dispatched`` once every outbox row of a revision is delivered, or ``failed(reason)`` when one failed
for good and none is pending. Only the draft's rows count: a radiologist's assessment SRs (``assessment`` rows) and
a draft's withdrawals (``withdrawal`` rows) are delivered the same way but never change the revision's state
(:data:`NOT_DRAFT_KINDS`). A draft withdrawn before some of its deliveries were sent (an image it read was moved to
another patient or rejected by the PACS: :mod:`radtrace.reporting.dispatch.withdrawals`) has those rows
``cancelled``: settled, never a failure; the revision stays ``reported``, never ``dispatched``, its reason saying
which deliveries were withdrawn and why (:data:`WITHDRAWN_PREFIX`). The outbox
(:mod:`radtrace.reporting.dispatch.outbox`) makes the attempts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import sqlalchemy as sa

from radtrace.audit.events import Actor, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.reporting.dispatch.outbox import NOT_DRAFT_KINDS, Delivery, Outbox
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState
from radtrace.worker.claims import Claim, claim_event, last_received, seconds_between

__all__ = ["WITHDRAWN_PREFIX", "Deliveries", "DispatchResult", "StageObserver", "withdrawn_reason"]

#: How a ``reported`` revision's reason starts once its draft was withdrawn before every delivery was sent.
WITHDRAWN_PREFIX: Final = "draft withdrawn, not sent to"


def withdrawn_reason(cancelled: Sequence[tuple[str, str, str | None]]) -> str:
    """The reason of a revision whose deliveries ``cancelled`` ((kind, destination, last_error) each) were withdrawn
    before they were sent: where it was not sent, and why (the withdrawal's reason, said once)."""
    where = ", ".join(f"{kind} {destination}" for kind, destination, _ in cancelled)
    why = sorted({(error or "").partition(": ")[2] or (error or "") for _, _, error in cancelled})
    return f"{WITHDRAWN_PREFIX} {where}: {'; '.join(why)}"


class StageObserver(Protocol):
    """Where stage latencies go: :class:`radtrace.worker.metrics.WorkerMetrics` is one."""

    def observe(self, stage: str, seconds: float) -> None: ...

    def finished_in(self, state: str) -> None: ...


@dataclass(frozen=True)
class DispatchResult:
    """One ``dispatch`` call: the delivery attempt, the revision's state after it, and when to ring again."""

    delivery: Delivery
    revision_state: RevisionState | None
    retry_at: datetime | None = None


class Deliveries:
    """Delivery attempts and their settlement, for the worker's dispatch queue."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        recorder: AuditRecorder,
        observer: StageObserver,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.outbox, self.recorder, self.observer, self.clock = store, outbox, recorder, observer, clock

    @property
    def actor(self) -> Actor:
        return self.recorder.default_actor

    def dispatch(self, outbox_id: int) -> DispatchResult:
        """One delivery attempt for one outbox row (if due), then settle its revision's state."""
        delivery = self.outbox.deliver(outbox_id)
        if delivery.deferred:  # its destination's sends in flight are at the cap: the next to end rings it
            return DispatchResult(delivery, None)  # (Delivery.wake; radtrace.reporting.dispatch.destination_cap)
        state = self.settle(outbox_id)
        retry_at = None
        if delivery.state is OutboxState.PENDING:
            with self.store.session("reading an outbox row") as session:
                retry_at = session.scalar(sa.select(OutboxMessage.next_attempt_at).where(OutboxMessage.id == outbox_id))
        return DispatchResult(delivery, state, retry_at)

    def settle(self, outbox_id: int) -> RevisionState | None:
        """``reported`` → ``dispatched`` once every draft row of the revision is delivered, or ``failed`` when a row
        failed for good and none is pending; one with rows cancelled (its draft withdrawn) and none failed stays
        ``reported`` with :func:`withdrawn_reason`. Returns the revision's state."""
        now = self.clock()
        with self.store.session("settling a revision", immediate=True) as session:
            rev = session.scalar(
                sa.select(Revision)
                .join(OutboxMessage, OutboxMessage.revision_id == Revision.id)
                .where(OutboxMessage.id == outbox_id)
            )
            if rev is None:
                return None
            if rev.state is not RevisionState.REPORTED:
                return rev.state
            durations: dict[str, float | None] = {}
            rows = session.execute(
                sa.select(OutboxMessage.kind, OutboxMessage.destination, OutboxMessage.state, OutboxMessage.last_error)
                .where(OutboxMessage.revision_id == rev.id, OutboxMessage.kind.not_in(NOT_DRAFT_KINDS))
                .order_by(OutboxMessage.id)
            ).all()
            if not rows or any(row.state is OutboxState.PENDING for row in rows):
                return rev.state
            failed = [row for row in rows if row.state is OutboxState.FAILED]
            cancelled = [(r.kind, r.destination, r.last_error) for r in rows if r.state is OutboxState.CANCELLED]
            if cancelled and not failed:  # withdrawn on purpose (report_withdrawn audited it): reported, saying so
                reason = withdrawn_reason(cancelled)
                if rev.reason != reason:
                    rev.reason = reason
                return rev.state
            if failed:
                reason = "; ".join(f"delivery to {r.kind} {r.destination} failed: {r.last_error}" for r in failed)
                rev.state, rev.reason, rev.finished_at = RevisionState.FAILED, reason, now
                claim = Claim(
                    rev.id, rev.study.study_uid, rev.study.accession, rev.number, rev.attempts, 0, rev.study_id
                )
                self.recorder.record(
                    claim_event(self.actor, claim, EventType.STUDY_FAILED, Outcome.SERIOUS_FAILURE, reason=reason),
                    session=session,
                )
            else:
                rev.state, rev.finished_at = RevisionState.DISPATCHED, now
                durations = {"deliver": seconds_between(rev.reported_at, now),
                             "total": seconds_between(last_received(session, rev.id), now)}  # fmt: skip
            state = rev.state
        for stage, seconds in durations.items():
            if seconds is not None:
                self.observer.observe(stage, seconds)
        self.observer.finished_in(state.value)
        return state
