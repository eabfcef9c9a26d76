"""A destination on hold: a PACS that rejected our association for good is not asked again until an operator says so.

A permanent A-ASSOCIATE-RJ (result 1, PS3.8 9.3.4: an AE title it does not know; :class:`radtrace.reporting.dispatch.
cstore.AssociationRejectedError`) is the PACS's configuration or ours, not a passing outage, and it answers every draft
the same. So the first one puts the whole destination on hold: one ``dispatch_holds`` row (the destination, the reason,
since when, the configuration it was refused under), committed with one ``dispatch_held`` audit event (the destination,
the reason, the A-ASSOCIATE-RJ codes, the delivery whose refusal placed it; a DICOM Security Alert of type Network
Configuration for an audit repository, :mod:`radtrace.audit.atna.message`); that delivery's attempt closes as
``dispatch_retry_scheduled`` (``hold: placed``), waiting for the hold. It is in the database, so it survives a restart
and every worker on the same database sees it.

While a destination is held its deliveries wait *held*: ``pending``, never claimed (no association, no attempt counted,
no audit event), looked at again every ``dispatch.backoff_max_s`` only to find the hold still there; the revision stays
``reported``. Deliveries enqueued later wait the same. Other destinations are not affected.

``radtrace dispatch retry DESTINATION`` (:func:`radtrace.reporting.dispatch.redelivery.redeliver_failed`) lifts it: the
hold row goes, every held delivery is due now with its attempts from 0 (to the PACS now configured at the same host and
port, where the AE title was changed), one ``dispatch_hold_released`` event (the destination, the hold's reason, since
when and how long, the released deliveries, ``lifted_by: operator`` with the OS user as the event's actor). Before these
two event types a hold was audited as ``dispatch_failed`` (``hold: placed``) and its lifting as
``dispatch_retry_scheduled`` (``hold: lifted``); such events, already in the hash chain, stay as they were. A changed
configuration does not lift a hold by itself: workers on one database may run different configurations for a while (one
restarted, one not), and a hold lifted by one and placed again by the other would flap; and a fix on the PACS's side
(our AE title added there) changes nothing here to detect. ``radtrace status`` shows the hold, what changed in the
configuration since, and the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings
from radtrace.reporting.dispatch import claims
from radtrace.store.base import Base, UtcDateTime
from radtrace.store.engine import Store, is_postgresql
from radtrace.store.models import OutboxMessage, OutboxState

if TYPE_CHECKING:
    from radtrace.reporting.dispatch.cstore import AssociationRejectedError

__all__ = [
    "DestinationHold",
    "HeldDestination",
    "Lifted",
    "configuration_changes",
    "held",
    "held_destinations",
    "held_event",
    "hold_of",
    "lift_hold",
    "place_hold",
    "recheck_after",
    "taken",
]

#: How the audit payloads name what happened to the hold.
PLACED: Final = "placed"
HELD: Final = "held"  # a refusal recorded while the destination was held already (an attempt made before the hold)
LIFTED: Final = "lifted"


class DestinationHold(Base):
    """One destination on hold: the refusal that placed it and the configuration it was refused under."""

    __tablename__ = "dispatch_holds"

    destination: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    reason: Mapped[str] = mapped_column(sa.Text)
    codes: Mapped[str] = mapped_column(sa.String(16), doc="the A-ASSOCIATE-RJ result/source/reason, e.g. 1/1/3")
    held_since: Mapped[datetime] = mapped_column(UtcDateTime)
    outbox_id: Mapped[int] = mapped_column(doc="the delivery whose refusal placed it")
    calling_ae_title: Mapped[str] = mapped_column(sa.String(16))
    ae_title: Mapped[str | None] = mapped_column(sa.String(16))
    host: Mapped[str | None] = mapped_column(sa.String(255))
    port: Mapped[int | None] = mapped_column()


@dataclass(frozen=True)
class HeldDestination:
    """A hold as ``radtrace status`` shows it."""

    destination: str
    since: datetime
    reason: str
    deliveries: int  # pending deliveries waiting on it
    changes: tuple[str, ...] = ()  # what the configuration changed since (configuration_changes)

    @property
    def again(self) -> str:
        return f"radtrace dispatch retry {self.destination}"

    @property
    def audited(self) -> str:
        """Where its audit trail is: the event that placed it, and the one its lifting records."""
        return (f"radtrace audit query --event-type {EventType.DISPATCH_HELD.value} (placed); lifting it records "
                f"{EventType.DISPATCH_HOLD_RELEASED.value}")  # fmt: skip

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {"destination": self.destination, "since": self.since.isoformat(), "reason": self.reason,
                "held_deliveries": self.deliveries, "configuration_changes": list(self.changes),
                "again": self.again, "audited": self.audited}  # fmt: skip


@dataclass(frozen=True)
class Lifted:
    """What :func:`lift_hold` did: the hold it lifted and the deliveries it released."""

    destination: str
    since: datetime
    reason: str
    released: list[int]


def recheck_after(settings: DispatchSettings) -> timedelta:
    """How long a held delivery waits before it is looked at again (only to find the hold, or its lifting)."""
    return timedelta(seconds=settings.backoff_max_s)


def held() -> sa.Select[tuple[str]]:
    """The held destinations (a sub-select for ``destination.not_in``)."""
    return sa.select(DestinationHold.destination)


def hold_of(session: Session, destination: str) -> DestinationHold | None:
    """The hold on ``destination``, if any, share-locked until the transaction ends on PostgreSQL: a lift waits for a
    claim that saw the hold to commit, so it releases what that claim put back (SQLite's write lock does the same)."""
    return session.scalar(
        sa.select(DestinationHold).where(DestinationHold.destination == destination).with_for_update(read=True)
    )


def place_hold(
    session: Session, settings: DispatchSettings, row: OutboxMessage, error: AssociationRejectedError, now: datetime
) -> bool:
    """Put ``row``'s destination on hold for ``error`` in ``session``; False when it was held already (a concurrent
    refusal placed it first: PostgreSQL's insert waits for that one's commit, then adds nothing)."""
    # here: cstore imports pynetdicom and pydicom, which the migrations (env.py) and 'radtrace status' need not
    from radtrace.reporting.dispatch.cstore import describe_destination

    pacs = next((p for p in settings.pacs if describe_destination(p) == row.destination), None)
    values = {
        "destination": row.destination, "reason": error.reason, "codes": error.rejection.codes[:16],
        "held_since": now, "outbox_id": row.id, "calling_ae_title": settings.calling_ae_title,
        "ae_title": pacs.ae_title if pacs else None, "host": pacs.host if pacs else None,
        "port": pacs.port if pacs else None,
    }  # fmt: skip
    dialect = postgresql if is_postgresql(session.get_bind()) else sqlite
    inserted = session.execute(dialect.insert(DestinationHold).values(**values).on_conflict_do_nothing())
    return bool(inserted.rowcount)  # type: ignore[attr-defined]


def held_event(
    actor: Actor, row: OutboxMessage, error: AssociationRejectedError, now: datetime, settings: DispatchSettings
) -> AuditEvent:
    """The ``dispatch_held`` event of a hold :func:`place_hold` just placed for ``row``'s refusal: destination-wide,
    so it names no study (the delivery's own event does)."""
    payload = {"destination": row.destination, "reason": error.reason, "codes": error.rejection.codes,
               "held_since": now.isoformat(), "outbox_id": row.id, "calling_ae_title": settings.calling_ae_title,
               "again": f"radtrace dispatch retry {row.destination}"}  # fmt: skip
    return AuditEvent(EventType.DISPATCH_HELD, actor, Outcome.SERIOUS_FAILURE, payload=payload)


def hold_payload(state: str, since: datetime, reason: str) -> dict[str, object]:
    """What an audit event says of a hold: ``placed``, ``held`` (a refusal while it was) or ``lifted``."""
    return {"hold": state, "held_since": since.isoformat(), "hold_reason": reason}


def lift_hold(
    session: Session,
    recorder: AuditRecorder,
    actor: Actor,
    destination: str,
    now: datetime,
    *,
    target: str | None = None,
    lifted_by: str = "operator",
) -> Lifted | None:
    """Lift the hold on ``destination`` in ``session``: its pending deliveries due now, attempts from 0 (addressed to
    ``target`` if given, unless the revision has that delivery there already; one being sent now, claimed before the
    hold was placed, is left to its holder: ``in_flight_outbox_ids``), one ``dispatch_hold_released`` event
    naming ``lifted_by`` (``operator``: ``actor`` is the person, e.g. the OS user of ``radtrace dispatch retry``; or
    ``automatic``). None when it is not held."""
    hold = session.scalar(
        sa.select(DestinationHold).where(DestinationHold.destination == destination).with_for_update()
    )
    if hold is None:
        return None
    lifted = Lifted(hold.destination, hold.held_since, hold.reason, [])
    session.delete(hold)
    session.flush()  # the DELETE first: a claim that saw the hold has committed before it returns
    rows = session.scalars(
        sa.select(OutboxMessage)
        .where(OutboxMessage.destination == destination, OutboxMessage.state == OutboxState.PENDING)
        .order_by(OutboxMessage.id)
    ).all()
    in_flight: list[int] = []
    lease_now = claims.database_now(session)  # a claim's lease is on the database's clock, never the lifter's
    due = claims.due_now(session, now)  # by the lifter's clock and the database's: a lifter ahead delays nothing
    for row in rows:
        if row.claimed_by is not None and row.next_attempt_at > lease_now:  # being sent now (claimed before the
            in_flight.append(row.id)  # hold): its holder records it; reset, another would send it again meanwhile,
            continue  # and the holder's record would no longer be its claim's (Outbox._record)
        row.attempts, row.next_attempt_at, row.last_error = 0, due, None
        if target is not None and target != destination and not taken(session, row, target):
            row.destination = target
        lifted.released.append(row.id)
    payload: dict[str, object] = {"destination": target or destination,
                                  **hold_payload(LIFTED, lifted.since, lifted.reason),
                                  "held_s": round((now - lifted.since).total_seconds(), 1), "lifted_by": lifted_by,
                                  "requested_by": lifted_by, "released": len(lifted.released),
                                  "outbox_ids": lifted.released, "next_attempt_at": due.isoformat()}  # fmt: skip
    if in_flight:
        payload["in_flight_outbox_ids"] = in_flight  # left to their holders: recorded as their sends end
    if target is not None and target != destination:
        payload["previous_destination"] = destination
    recorder.record(AuditEvent(EventType.DISPATCH_HOLD_RELEASED, actor, Outcome.SUCCESS, payload=payload),
                    session=session)  # fmt: skip
    return lifted


def taken(session: Session, row: OutboxMessage, target: str) -> bool:
    """Whether the revision has this delivery (kind, document) for ``target`` already: re-addressed, it would be
    there twice."""
    return (
        session.scalar(
            sa.select(OutboxMessage.id).where(
                OutboxMessage.revision_id == row.revision_id,
                OutboxMessage.kind == row.kind,
                OutboxMessage.destination == target,
                OutboxMessage.document_uid == row.document_uid,
            )
        )
        is not None
    )


def configuration_changes(hold: DestinationHold, settings: DispatchSettings) -> list[str]:
    """What differs in the configuration now from the one the PACS refused (nothing lifts the hold but the command)."""
    from radtrace.reporting.dispatch.cstore import describe_destination

    changes: list[str] = []
    if hold.calling_ae_title != settings.calling_ae_title:
        changes.append(f"dispatch.calling_ae_title is {settings.calling_ae_title!r} (was {hold.calling_ae_title!r})")
    names = {describe_destination(pacs) for pacs in settings.pacs}
    if hold.destination not in names:
        moved = [name for name in names if name.partition("@")[2] == hold.destination.partition("@")[2]]
        now = f"; {moved[0]} is at its host and port" if len(moved) == 1 else ""
        changes.append(f"dispatch.pacs no longer names {hold.destination}{now}")
    return changes


def held_destinations(store: Store, settings: DispatchSettings) -> list[HeldDestination]:
    """Every hold, oldest first, with its waiting deliveries and what the configuration changed since."""
    with store.session("reading the destinations on hold") as session:
        holds = session.scalars(sa.select(DestinationHold).order_by(DestinationHold.held_since)).all()
        return _views(session, holds, settings)


def _views(session: Session, holds: Sequence[DestinationHold], settings: DispatchSettings) -> list[HeldDestination]:
    counts = dict(
        session.execute(
            sa.select(OutboxMessage.destination, sa.func.count())
            .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.destination.in_(held()))
            .group_by(OutboxMessage.destination)
        ).all()
    )
    return [
        HeldDestination(hold.destination, hold.held_since, hold.reason, int(counts.get(hold.destination, 0)),
                        tuple(configuration_changes(hold, settings)))
        for hold in holds
    ]  # fmt: skip
