"""The site-wide cap on sends to one destination (``dispatch.max_sends_per_destination``) and the wake of a delivery
that waits for it.

A hospital RIS or PACS that allows 2 connections refuses a third, whichever dispatcher node opens it, so the cap counts
every node's sends: a send in flight is a live claim in the database (:mod:`.claims`: ``claimed_by`` set, its lease
``next_attempt_at`` not over by the database's clock), and the claim of a row (:meth:`.outbox.Outbox.deliver`) is one
conditional UPDATE that also requires fewer than the cap of live claims to the row's destination
(:func:`room_for_one_more`). On PostgreSQL two claims to one destination are serialised by a transaction-scoped
advisory lock on it (:func:`lock_destination`), taken before the count: under READ COMMITTED the second claim's UPDATE
starts after the first claim's commit and so counts it; SQLite's ``BEGIN IMMEDIATE`` serialises every write already.

A row over the cap is not claimed (``deferred``: no attempt, no event, nobody's) and is not rung again on a timer: the
send that ends (recorded, or put back unsent) names one delivery waiting for that destination, a slot's own
(:func:`to_wake`), and its dispatcher rings it once (``Delivery.wake``). A dead RIS with a backlog therefore costs one
ring per send that ends, whatever the backlog; a wake that is lost (the dispatcher killed between the record and the
ring, a broker flushed) is found by the reconciler as any due row whose doorbell was lost (``broker.overdue_after_s``).
(The reconciler rings every row due that long on each pass, waiting ones included: for a dead RIS that is the backlog
once per ``broker.reconcile_interval_s``, the cost left per row.)

What the count cannot see: a holder whose claim was released while it still sent (its heartbeat stopped for longer
than the slack: :mod:`radtrace.worker.dead_claims`) is no longer a live claim, so for the rest of that send the
destination may be sent one more at once.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from radtrace.reporting.dispatch import holds
from radtrace.reporting.dispatch.claims import database_now
from radtrace.store.engine import is_postgresql
from radtrace.store.models import OutboxMessage, OutboxState

__all__ = ["live_sends", "lock_destination", "room_for_one_more", "to_wake"]


def _lock_key(destination: str) -> int:
    """The destination's 63-bit ``pg_advisory_xact_lock`` key, derived from a name as the audit log's is."""
    digest = hashlib.sha256(b"radtrace.outbox.destination:" + destination.encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def lock_destination(session: Session, destination: str) -> None:
    """Serialise the claims of sends to ``destination`` until this transaction ends: a transaction-scoped advisory lock
    on PostgreSQL (two dispatcher nodes counting at once would each see a free slot); on SQLite the session's
    ``BEGIN IMMEDIATE`` holds the database's write lock already."""
    if is_postgresql(session.get_bind()):
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(destination)})


def _live_count(destination: str, database_now: datetime, besides: int | None) -> sa.Select[int]:
    """How many live claims (sends in flight, on any node) ``destination`` has, ``besides`` one row."""
    live = aliased(OutboxMessage, name="live_claim")
    return (
        sa.select(sa.func.count())
        .select_from(live)
        .where(live.destination == destination, live.state == OutboxState.PENDING, live.claimed_by.is_not(None),
               live.next_attempt_at > database_now,  # a lease over is nobody's send: any dispatcher may take it over
               *([live.id != besides] if besides is not None else []))
    )  # fmt: skip


def live_sends(session: Session, destination: str, database_now: datetime, *, besides: int | None = None) -> int:
    """Sends to ``destination`` in flight now, on every node: its live claims (``besides`` one row)."""
    return int(session.scalar(_live_count(destination, database_now, besides)) or 0)


def room_for_one_more(destination: str, database_now: datetime, cap: int, claiming: int) -> sa.ColumnElement[bool]:
    """The condition a claim's UPDATE of row ``claiming`` adds: fewer than ``cap`` live claims to ``destination`` on
    other rows (the row's own lease, over, is being taken over: it is not counted)."""
    return _live_count(destination, database_now, claiming).scalar_subquery() < max(1, cap)


def to_wake(session: Session, destination: str, cap: int, now: datetime, *, besides: int) -> tuple[int, ...]:
    """The delivery to ring now that a send to ``destination`` ended: one of those due (unclaimed, their retry due by
    ``now``: this dispatcher's clock, as :meth:`.outbox.Outbox.due` judges it) and not held, oldest first, or none when
    none waits. With one slot free, the oldest; with ``n`` free (sends that ended at about the same time, whose woken
    rows have not claimed yet), the ``n``-th: the sends that ended before this one rang the ``n - 1`` before it, so each
    slot gets a row of its own and each send that ends rings once."""
    free = max(1, cap) - live_sends(session, destination, database_now(session))
    if free <= 0:
        return ()
    waiting = session.scalars(
        sa.select(OutboxMessage.id)
        .where(OutboxMessage.destination == destination, OutboxMessage.state == OutboxState.PENDING,
               OutboxMessage.claimed_by.is_(None), OutboxMessage.next_attempt_at <= now,
               OutboxMessage.id != besides, OutboxMessage.destination.not_in(holds.held()))
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(free)
    ).all()  # fmt: skip
    return (waiting[-1],) if waiting else ()  # fewer waiting than free slots: the last (rung twice at worst)
