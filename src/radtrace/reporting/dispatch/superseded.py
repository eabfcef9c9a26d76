"""The outcome of an outbox attempt whose claim was released while it was sending (its heartbeat stopped) and that
another holder claimed again since, or recorded already: audited as what it was, ``stale_claim``, never written over
the new holder's attempt; a late success marks the row delivered (the peer has the report). See :mod:`.outbox`,
whose :class:`.outbox.Outbox` these methods are part of."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.errors import RadtraceError
from radtrace.reporting.dispatch import claims, redelivery
from radtrace.reporting.dispatch.delivery import Delivery, row_event
from radtrace.store.models import DeliveryOutcome, OutboxMessage, OutboxState, RevisionState, Study

__all__ = ["SupersededRecords"]

log = logging.getLogger(__name__)


class SupersededRecords:
    """The outbox's recording of a superseded attempt (:meth:`_record_superseded`)."""

    recorder: AuditRecorder
    actor: Actor
    clock: Callable[[], datetime]

    def _record_superseded(
        self,
        session: Session,
        outbox_id: int,
        holder: str,
        attempt: int,
        note: str | None,
        error: RadtraceError | None,
    ) -> Delivery:
        """The outcome of an attempt whose claim was released while it was sending (its heartbeat stopped: another PID
        namespace, or its database away for longer than the slack) and that another holder has claimed again since,
        or recorded already. The row is its new holder's: nothing of it is written here. The outcome is audited all the
        same, as what happened, never dropped: a send that reached the peer is ``dispatch_delivered`` (the peer got
        this copy too: it can tell a repeat by the same HL7 control ID or SR UIDs) and a failed one
        ``dispatch_retry_scheduled``, each with ``stale_claim`` saying the delivery is recorded by its new holder, the
        row's attempt and state now (``recorded_by_attempt``, ``row_state``) and this attempt's number."""
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None  # rows are never deleted
        if error is None:
            settled = self._stale_success(session, row, holder, attempt, note)
            if settled is not None:
                return settled
        study = row.revision.study
        if row.state is OutboxState.DELIVERED and row.attempts == attempt and row.claimed_by is None:
            # not claimed since this attempt, yet delivered: an earlier attempt's late success was recorded over it
            what = "sent" if error is None else "failed"
            moot = (f"{what} after an earlier attempt, whose claim had been released, had reached the peer and been "
                    "recorded delivered: this attempt's outcome is moot")  # fmt: skip
            return self._audit_stale(session, row, study, holder, attempt, note, error, moot)
        now_holder = claims.ClaimHolder.parse(row.claimed_by) if row.claimed_by else None
        by = f" ({now_holder.process})" if now_holder is not None else ""
        recorded = {
            OutboxState.DELIVERED: f"recorded delivered by attempt {row.attempts}",
            OutboxState.FAILED: f"recorded failed by attempt {row.attempts}",
        }.get(row.state, f"attempt {row.attempts}{by} is in flight and records it" if row.claimed_by else
              f"pending again after attempt {row.attempts}")  # fmt: skip
        what = "sent" if error is None else "failed"
        stale = (f"{what} by a holder whose claim had been released (its heartbeat stopped); the delivery is recorded "
                 f"by its new holder: {recorded}")  # fmt: skip
        return self._audit_stale(session, row, study, holder, attempt, note, error, stale)

    def _audit_stale(
        self,
        session: Session,
        row: OutboxMessage,
        study: Study,
        holder: str,
        attempt: int,
        note: str | None,
        error: RadtraceError | None,
        stale: str,
    ) -> Delivery:
        """Audit an outcome not written on the row (``stale_claim`` says why); see :meth:`_record_superseded`."""
        outbox_id = row.id
        details: dict[str, object] = {"attempt": attempt, "claimed_by": holder, "stale_claim": stale,
                                      "recorded_by_attempt": row.attempts, "row_state": row.state.value}  # fmt: skip
        if error is None:
            event = row_event(
                self.actor, row, study, EventType.DISPATCH_DELIVERED, Outcome.SUCCESS, note=note, **details
            )
        else:
            event = row_event(self.actor, row, study, EventType.DISPATCH_RETRY_SCHEDULED, Outcome.MINOR_FAILURE,
                                error=error.reason, **details)  # fmt: skip
        self.recorder.record(event, session=session)
        log.warning("study %s revision %d: outbox %s %s %s: attempt %d %s", study.study_key, row.revision.number,
                    outbox_id, row.kind, row.destination, attempt, stale)  # fmt: skip
        return Delivery(outbox_id, row.state, attempted=True, attempts=attempt,
                        error=error.reason if error is not None else None, superseded=True)  # fmt: skip

    def _stale_success(
        self, session: Session, row: OutboxMessage, holder: str, attempt: int, note: str | None
    ) -> Delivery | None:
        """A released holder's send reached the peer while the row is pending (another holder's send in flight, or a
        retry scheduled) or failed: the peer has the report, so the row is marked delivered by this attempt (at its
        time, with its note), conditionally on the row as read, and the other holder's outcome, recorded or to come,
        is moot (its record then finds the row delivered: :meth:`_record_superseded`). A retry would send a duplicate;
        a ``failed`` row would count and alert as undelivered, and the radiologist would see the report as not sent,
        though the PACS/RIS has it. ``None`` when the row is delivered already (nothing to change)."""
        for _ in range(3):  # the other holder may record between the read and the update: read again
            if row.state is OutboxState.DELIVERED:
                return None
            was_state, was_attempts, was_claim = row.state, row.attempts, row.claimed_by
            now = self.clock()
            same_claim = (
                OutboxMessage.claimed_by.is_(None) if was_claim is None else OutboxMessage.claimed_by == was_claim
            )
            changed = session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id == row.id, OutboxMessage.state == was_state,
                       OutboxMessage.attempts == was_attempts, same_claim)
                .values(state=OutboxState.DELIVERED, delivered_at=now, last_error=note, claimed_by=None,
                        heartbeat_at=None, last_outcome=DeliveryOutcome.DELIVERED, reached=True)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                session.refresh(row)
                continue
            if was_claim is not None:
                other = claims.ClaimHolder.parse(was_claim)
                by = f" ({other.process})" if other is not None else ""
                moot = f"attempt {was_attempts}{by}, in flight, is moot: its outcome will not be recorded"
            elif was_state is OutboxState.FAILED:
                moot = f"attempt {was_attempts}'s failure is moot: the row is no longer failed"
            elif was_state is OutboxState.CANCELLED:
                moot = ("its cancellation (the draft withdrawn before it was sent) is moot: the peer has it, so the "
                        "withdrawal goes to that peer too")  # fmt: skip
            else:
                moot = f"the retry scheduled after attempt {was_attempts} is moot: it will not be sent again"
            stale = ("sent by a holder whose claim had been released (its heartbeat stopped); the peer has the "
                     f"report, so the delivery is recorded delivered by this attempt: {moot}")  # fmt: skip
            superseded_error = row.last_error if was_state is OutboxState.FAILED else None
            session.refresh(row)
            revision = row.revision
            study = revision.study
            reopened = None
            if (was_state is OutboxState.FAILED and revision.state is RevisionState.FAILED
                    and (revision.reason or "").startswith(redelivery.DELIVERY_FAILURE)):  # fmt: skip
                # failed by this row's failure: reported again, the settlement that follows decides (dispatched once
                # every row is delivered, failed again if another row failed)
                reopened = revision.reason
                revision.state, revision.reason, revision.finished_at = RevisionState.REPORTED, None, None
            details: dict[str, object] = {"attempt": attempt, "claimed_by": holder, "stale_claim": stale,
                                          "superseded_attempt": was_attempts, "superseded_state": was_state.value,
                                          "superseded_error": superseded_error, "revision_failed_before": reopened,
                                          "row_state": row.state.value}  # fmt: skip
            self.recorder.record(
                row_event(self.actor, row, study, EventType.DISPATCH_DELIVERED, Outcome.SUCCESS, note=note, **details),
                session=session,
            )
            log.warning("study %s revision %d: outbox %s %s %s: attempt %d %s", study.study_key, revision.number,
                        row.id, row.kind, row.destination, attempt, stale)  # fmt: skip
            return Delivery(row.id, OutboxState.DELIVERED, attempted=True, attempts=attempt)
        return None
