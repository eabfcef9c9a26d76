"""What one outbox ``deliver`` call did (:class:`Delivery`), and the audit event of one delivery's attempt
(:func:`row_event`): shared by :mod:`.outbox` and :mod:`.superseded`."""

from __future__ import annotations

from dataclasses import dataclass

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.store.models import OutboxMessage, OutboxState, Study

__all__ = ["Delivery", "row_event"]


@dataclass(frozen=True)
class Delivery:
    """What one ``deliver`` call did."""

    outbox_id: int
    state: OutboxState
    attempted: bool
    attempts: int
    error: str | None = None
    held: bool = False  # its destination is on hold (radtrace.reporting.dispatch.holds): it waits, pending
    #: not claimed: its destination has ``dispatch.max_sends_per_destination`` sends in flight, on any node
    #: (:mod:`.destination_cap`); it waits, due, for the next of them that ends to ring it (:attr:`wake`)
    deferred: bool = False
    #: deliveries waiting for this destination, to ring now that this attempt's send ended and freed its slot
    wake: tuple[int, ...] = ()
    #: its claim was released while it was sending and the row is another holder's now: its outcome is audited
    #: (``stale_claim``) but not recorded on the row (:meth:`Outbox._record_superseded`)
    superseded: bool = False
    #: a draft's delivery of a revision read from an image the PACS moved or rejected: not sent, cancelled, and the
    #: draft withdrawn from the peers it reached (:mod:`.withdrawals`); ``wake`` rings the withdrawals it queued
    withdrawn: bool = False


def row_event(
    actor: Actor, row: OutboxMessage, study: Study, kind: EventType, outcome: Outcome, **details: object
) -> AuditEvent:
    """The audit event ``kind`` of ``row``'s attempt: its id, kind, destination, attempt and payload digest, and the
    ``details`` given (None left out)."""
    payload: dict[str, object] = {
        "outbox_id": row.id,
        "kind": row.kind,
        "destination": row.destination,
        "attempt": row.attempts,
        "payload_sha256": row.payload_sha256,
    }
    payload.update({key: value for key, value in details.items() if value is not None})
    return AuditEvent(kind, actor, outcome, study_uid=study.study_uid, accession=study.accession, payload=payload)
