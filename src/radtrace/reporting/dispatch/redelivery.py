"""Deliveries an operator asks for again: ``radtrace dispatch retry DESTINATION``.

A delivery that failed for good stays ``failed`` with its reason (a PACS that rejected the association permanently,
PS3.8 9.3.4, is not asked again: :class:`radtrace.reporting.dispatch.cstore.AssociationRejectedError`). Once the
configuration is fixed, ours or the peer's, :func:`redeliver_failed` puts every failed row for that destination back
to ``pending`` (attempts from 0, due now), one ``dispatch_retry_scheduled`` event per row naming the operator and
the error it had; each revision that had failed for a delivery goes back to ``reported`` (``study_retried``), so the
settlement decides again once its rows are settled (:mod:`radtrace.worker.settlement`).

A PACS whose AE title was wrong is fixed by changing ``dispatch.pacs``, which changes the destination's name
(``AE@host:port``): the failed rows for the old name go to the one PACS configured at the same host and port.

A destination on hold (a PACS that rejected the association for good, :mod:`radtrace.reporting.dispatch.holds`) has
its hold lifted by the same command, in the same transaction: its held deliveries are due now (re-addressed alike),
audited once for the hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings
from radtrace.errors import PermanentError
from radtrace.reporting.dispatch import claims
from radtrace.reporting.dispatch.cstore import describe_destination
from radtrace.reporting.dispatch.holds import DestinationHold, Lifted, lift_hold, taken
from radtrace.reporting.dispatch.withdrawals import NOT_BUILT_PREFIX
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import DeliveryOutcome, OutboxMessage, OutboxState, Revision, RevisionState

__all__ = ["Redelivery", "RedeliveryError", "deliver_again", "failed_destinations", "redeliver_failed"]

#: How the settlement's reason for a revision that failed for a delivery begins (radtrace.worker.settlement).
DELIVERY_FAILURE = "delivery to "


class RedeliveryError(PermanentError):
    """Nothing to redeliver to that destination, or it is not configured (the reason says which, and what is)."""


@dataclass(frozen=True)
class Redelivery:
    """What one :func:`redeliver_failed` did: the rows made pending again, where they go now, the revisions reported
    again, and the rows left failed because the new destination already has that delivery."""

    outbox_ids: list[int]
    destination: str
    readdressed_from: str | None = None
    revisions: int = 0
    left_failed: list[int] = field(default_factory=list)
    lifted: Lifted | None = None  # the hold lifted, with the held deliveries it released
    #: Withdrawals that could not be built (their draft's payload unreadable): there is nothing to send, so they stay
    #: failed; the draft must be withdrawn at the peer by hand (docs/operations.md).
    not_built: list[int] = field(default_factory=list)
    #: Of ``outbox_ids``, those the peer had refused (its answer: a failure status, an AR; ``last_outcome``), the rest
    #: having failed without its answer (no answer, a timeout, a dropped connection; :mod:`.outcomes`).
    refused: list[int] = field(default_factory=list)


def failed_destinations(store: Store) -> dict[str, int]:
    """Failed deliveries per destination (what ``radtrace dispatch retry`` can ask for again)."""
    with store.session("counting failed deliveries") as session:
        rows = session.execute(
            sa.select(OutboxMessage.destination, sa.func.count())
            .where(OutboxMessage.state == OutboxState.FAILED)
            .group_by(OutboxMessage.destination)
            .order_by(OutboxMessage.destination)
        ).all()
    return {str(destination): int(count) for destination, count in rows}


def _configured(settings: DispatchSettings) -> dict[str, tuple[str, int] | None]:
    """Each configured destination's name, with its (host, port) where it is a PACS."""
    named: dict[str, tuple[str, int] | None] = {
        describe_destination(pacs): (pacs.host, pacs.port) for pacs in settings.pacs
    }
    if settings.ris is not None:
        named[f"{settings.ris.host}:{settings.ris.port}"] = None
    return named


def _target(settings: DispatchSettings, destination: str) -> str:
    """Where the failed rows for ``destination`` go now: itself while configured, else the one PACS configured at
    the same host and port (its AE title was changed)."""
    configured = _configured(settings)
    if destination in configured or "@" not in destination:  # a RIS (host:port) or a file drop: as it is
        return destination
    place = destination.partition("@")[2]
    same_place = [name for name, where in configured.items() if where is not None and f"{where[0]}:{where[1]}" == place]
    if len(same_place) == 1:
        return same_place[0]
    listed = ", ".join(sorted(configured)) or "none"
    raise RedeliveryError(
        f"{destination} is not a configured destination, and no single PACS in dispatch.pacs is at its host and port "
        f"(configured: {listed})"
    )


def redeliver_failed(
    store: Store,
    settings: DispatchSettings,
    destination: str,
    actor: Actor,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> Redelivery:
    """Make every failed delivery to ``destination`` pending again, due now, audited (see the module docstring).

    Raises:
        RedeliveryError: no failed delivery to ``destination``, or it is neither configured nor re-addressable.
    """
    now = clock()
    recorder = AuditRecorder(store, actor)
    with store.session("asking for failed deliveries again", immediate=True) as session:
        try:
            target = _target(settings, destination)
        except RedeliveryError:
            if session.get(DestinationHold, destination) is None:
                raise
            target = destination  # held, and no longer configured: released, its deliveries fail saying so
        lifted = lift_hold(session, recorder, actor, destination, now, target=target)
        rows = list(
            session.scalars(
                sa.select(OutboxMessage)
                .where(OutboxMessage.destination == destination, OutboxMessage.state == OutboxState.FAILED)
                .order_by(OutboxMessage.id)
                .with_for_update()  # a released holder's late success marks one delivered: it waits, then finds it so
            )
        )
        retried: list[int] = []
        left: list[int] = []
        revisions: dict[int, Revision] = {}
        not_built: list[int] = []
        refused: list[int] = []
        for row in rows:
            if (row.last_error or "").startswith(NOT_BUILT_PREFIX):
                not_built.append(row.id)
                continue
            if target != destination and taken(session, row, target):
                left.append(row.id)
                continue
            if row.last_outcome is DeliveryOutcome.REFUSED:
                refused.append(row.id)
            deliver_again(session, recorder, actor, row, now, target=target)
            retried.append(row.id)
            revisions.setdefault(row.revision_id, row.revision)
        reported = 0
        for revision in revisions.values():
            if revision.state is RevisionState.FAILED and (revision.reason or "").startswith(DELIVERY_FAILURE):
                study = revision.study
                recorder.record(
                    AuditEvent(EventType.STUDY_RETRIED, actor, study_uid=study.study_uid, accession=study.accession,
                               payload={"revision": revision.number, "previous_state": revision.state.value,
                                        "previous_reason": revision.reason, "redelivery": target}),
                    session=session,
                )  # fmt: skip
                revision.state, revision.reason, revision.finished_at = RevisionState.REPORTED, None, None
                reported += 1
    if not rows and lifted is None:
        others = ", ".join(f"{name} ({count})" for name, count in failed_destinations(store).items()) or "none"
        raise RedeliveryError(
            f"no failed delivery to {destination}, and it is not on hold (failed deliveries by destination: {others}; "
            f"on hold: {', '.join(_held_names(store)) or 'none'})"
        )
    return Redelivery(
        retried, target, destination if target != destination else None, reported, left, lifted, not_built, refused
    )


def _held_names(store: Store) -> list[str]:
    with store.session("listing destinations on hold") as session:
        return list(session.scalars(sa.select(DestinationHold.destination).order_by(DestinationHold.destination)))


def deliver_again(
    session: Session,
    recorder: AuditRecorder,
    actor: Actor,
    row: OutboxMessage,
    now: datetime,
    *,
    target: str | None = None,
) -> tuple[int, str]:
    """One failed delivery pending again (to ``target`` if given), attempts from 0, due now, audited as the
    operator's ``dispatch_retry_scheduled`` with the error and outcome it had; its (outbox id, "kind destination").
    Its ``reached`` is kept: an earlier attempt may have reached the peer whatever the next one meets
    (:mod:`.outcomes`)."""
    previous_error, previous_destination = row.last_error, row.destination
    due = claims.due_now(session, now)  # due by the requester's clock and the database's (one ahead)
    row.state, row.attempts, row.next_attempt_at, row.last_error = OutboxState.PENDING, 0, due, None
    row.destination = target or previous_destination
    study = row.revision.study
    payload: dict[str, object] = {
        "outbox_id": row.id, "kind": row.kind, "destination": row.destination, "attempt": 0,
        "payload_sha256": row.payload_sha256, "previous_error": previous_error,
        "previous_outcome": row.last_outcome.value if row.last_outcome is not None else None,
        "next_attempt_at": due.isoformat(), "requested_by": "operator",
    }  # fmt: skip
    if row.destination != previous_destination:
        payload["previous_destination"] = previous_destination
    recorder.record(
        AuditEvent(EventType.DISPATCH_RETRY_SCHEDULED, actor, Outcome.SUCCESS, study_uid=study.study_uid,
                   accession=study.accession, payload=payload),
        session=session,
    )  # fmt: skip
    return row.id, f"{row.kind} {row.destination}"
