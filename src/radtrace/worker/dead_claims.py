"""Release early the claims of a process that provably ended on this host, or whose heartbeat stopped on another.

A claim is only a lease: an outbox row being sent has ``next_attempt_at`` pushed a lease ahead (300 s or more,
:mod:`radtrace.reporting.dispatch.outbox`) and its holder and heartbeat in ``claimed_by`` and ``heartbeat_at``
(:mod:`radtrace.reporting.dispatch.claims`), a revision being read has ``claimed_by`` and ``claim_expires_at``
(``broker.claim_timeout_s``, :mod:`radtrace.worker.claims`). A holder that dies is found only once its lease runs
out, so on a one-machine site "kill -9 it and start it again" stalled a delivery about six minutes, and on a
multi-node site (several nodes on one database) a node that died (power, a kernel panic, its container killed)
stalled each of its deliveries that long and each of its reads for the claim timeout.

Each reconciler pass (the first one as a dispatcher or GPU worker starts) asks :func:`release_dead_claims` to look at
the live claims named after this host whose holder provably ended: no process has the pid, or the one that has it
started after the claim. A revision's claim is looked at only once its heartbeat is :data:`RENEWAL_SLACK_S` overdue
(:func:`radtrace.worker.liveness.claimer_gone` cannot tell a live worker in another PID namespace from a dead one). A
delivery's claim names its holder's PID namespace, boot and start time
(:meth:`radtrace.reporting.dispatch.claims.ClaimHolder.ended`): one of this namespace whose process is gone is released
at once; one of another PID namespace or boot under this host name (a container on the host's network), whose pid
cannot be looked at here, once its heartbeat is overdue (a live holder renews, so a send slower than the heartbeat is
never released and sent twice) and a pass :data:`radtrace.reporting.dispatch.claims.CONFIRM_OVERDUE_S` later still
finds the same beat overdue (after a database outage longer than the slack, the holder's beat, retried every second,
lands before it is released). Each such claim is ended as its lease running out would end it:

* an outbox row becomes due now, its attempt counted (the kill's, as when its lease runs out), audited
  ``dispatch_retry_scheduled`` with the reason ("claimed by radtrace@host:4242, which is not running"); the payload
  is the same bytes (same HL7 control ID, same SR UIDs), so a peer that got the first send sees a repeat;
* a revision's claim expires now: the next worker takes it over through the usual take-over (the lost attempt
  counted, ``failed`` after ``broker.max_attempts``), audited ``inference_failed`` with the reason.

Claims of processes on other hosts (another host name) are released by sightings alone: the same claim (row, holder,
its beat; a revision's ``claim_expires_at``, renewed with each beat) seen unchanged by passes of this process for the
holder's beat interval plus the slack, measured on this process's monotonic clock (a delivery 5 + 10 s, a revision a
third of ``broker.claim_timeout_s`` + 10 s: 50 s at the default), by passes no more than :data:`SIGHTINGS_GAP_S`
apart (while such a claim is seen, passes come every :data:`radtrace.reporting.dispatch.claims.HEARTBEAT_S`). A
delivery's beat (``heartbeat_at``) is written from the holder's clock, a read's (``claim_expires_at``) from the
database's (:func:`radtrace.reporting.dispatch.claims.database_now`, as are the leases, so that no take-over depends
on a node's wall clock): sightings compare them only with themselves, never with this host's clock, so hosts whose
clocks differ by minutes neither release a live holder early nor keep a dead one. A holder of another boot under
this host name (perhaps another machine with the same name) is looked at the same way. A live holder renews, so its
claim is never seen unchanged that long (a send slower than the heartbeat is never sent twice); after a database
outage this process's passes failed too, the gap starts the sightings again, and the holder's beat lands first. A
holder cut off from the database alone (a network partition of its node) cannot be told from a dead one; it begins
no send once its claim may have been released (:class:`radtrace.reporting.dispatch.claims.Fence`), but a send already
begun may then be repeated (never lost, the peer sees a repeat), and its late outcome is not recorded over the new
holder's (:meth:`radtrace.reporting.dispatch.outbox.Outbox._record`). Such a release says so: "claimed by
radtrace@gpu-node-7:4242, whose heartbeat stopped at 10:03:47 UTC by its clock, as seen from gpu-node-2: the same beat
seen for 15 s by this process ...", and the event names ``released_by_host``.

Each release is a conditional UPDATE (the row still as it was read), so two reconcilers release it once.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from radtrace.audit.events import AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.reporting.dispatch import claims
from radtrace.store.engine import Store
from radtrace.store.models import Job, OutboxMessage, OutboxState, Priority, Revision, RevisionState
from radtrace.worker.liveness import claimer_gone

__all__ = ["Released", "release_dead_claims"]

log = logging.getLogger(__name__)

#: A revision's claim is looked at only once its holder's heartbeat (every third of ``broker.claim_timeout_s``) is
#: this much overdue. The pid check alone cannot tell a dead holder from a live one in another PID namespace under the
#: same host name (a container on the host's network: ``docker --network host``, Kubernetes ``hostNetwork``), which
#: would have each reconciler pass release a live worker's read for another to take over, again and again; a live
#: holder renews, so it is never released. A delivery's heartbeat (every
#: :data:`radtrace.reporting.dispatch.claims.HEARTBEAT_S`) has the same slack
#: (:data:`radtrace.reporting.dispatch.claims.RENEWAL_SLACK_S`).
RENEWAL_SLACK_S = 10.0
#: At most this many claimed rows of each kind are looked at per pass (the oldest claims first).
LOOK_AT_MOST = 500

#: Passes of this process further apart than this (its passes failed: the database was away for it too, and a holder's
#: beat may be about to land) do not carry a sighting over: the claim is looked at as if new.
SIGHTINGS_GAP_S = 10.0


class Sightings:
    """What passes of this process saw of claims, keyed by what would change if their holder were alive (row, holder,
    the beat): when each was first and last seen, by passes no more than :data:`SIGHTINGS_GAP_S` apart on the clock
    the caller gives (a gap: seen as new). What a pass did not see again (renewed, recorded, released) is forgotten by
    :meth:`forget_all_but`."""

    def __init__(self) -> None:
        self._seen: dict[tuple[object, ...], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def seen_for(self, key: tuple[object, ...], at: float) -> float:
        """Record a sighting of ``key`` at ``at`` (seconds); how long it has been seen since, unchanged, by passes
        no more than :data:`SIGHTINGS_GAP_S` apart (0 if this is the first)."""
        with self._lock:
            first, last = self._seen.get(key, (at, at))
            if at - last > SIGHTINGS_GAP_S:
                first = at
            self._seen[key] = (first, max(at, last))
            return round(at - first, 6)  # whole microseconds: a datetime's timestamp() is not exact

    def forget_all_but(self, kept: set[tuple[object, ...]], kind: str) -> None:
        """Forget the sightings of kind ``kind`` (a key's first item) that are not in ``kept``."""
        with self._lock:
            for key in [key for key in self._seen if key[0] == kind and key not in kept]:
                del self._seen[key]


#: Claims of another PID namespace of this host whose beat a pass found overdue, on the clock the pass was given
#: (``now``: the holder's beat was written from this host's clock too): released only
#: :data:`radtrace.reporting.dispatch.claims.CONFIRM_OVERDUE_S` after the first such pass.
_OVERDUE = Sightings()
#: Claims of other hosts, the same (row, holder, beat) seen unchanged, on this process's monotonic clock: the beat is
#: written from the holder's clock, which is never compared with this host's (see :func:`_release_deliveries`).
_UNCHANGED = Sightings()


@dataclass
class Released:
    """What one pass released: outbox row IDs, and revisions as (revision ID, study UID, number, priority)."""

    deliveries: list[int] = field(default_factory=list)
    revisions: list[tuple[int, str, int, Priority]] = field(default_factory=list)
    #: When to look at this host's deliveries in flight again (one of another namespace would be overdue then; one of
    #: this namespace may have been killed): the reconciler passes then rather than a whole
    #: ``broker.reconcile_interval_s`` later.
    look_again_at: datetime | None = None

    def look_again(self, at: datetime) -> None:
        """Ask for a pass at ``at`` (the earliest asked for wins)."""
        self.look_again_at = min(at, self.look_again_at or at)


def release_dead_claims(
    store: Store,
    recorder: AuditRecorder,
    now: datetime,
    *,
    claim_timeout_s: float,
    gone: Callable[[str, datetime | None], str | None] = claimer_gone,
    monotonic: Callable[[], float] = time.monotonic,
) -> Released:
    """Release the live claims held by processes of this host that provably ended (see the module docstring); a
    revision's claim only once its heartbeat (every third of ``claim_timeout_s``) has missed a beat, a delivery's once
    its heartbeat is overdue."""
    released = Released()
    seen_at = monotonic()  # sightings of other hosts' claims: this process's clock alone
    _release_deliveries(store, recorder, now, seen_at, released)
    _release_revisions(store, recorder, now, seen_at, claim_timeout_s, gone, released)
    if released.deliveries or released.revisions:
        log.warning(
            "released the claims of processes that ended or whose heartbeat stopped: %d deliveries due again now, "
            "%d revisions to take over", len(released.deliveries), len(released.revisions),
        )  # fmt: skip
    return released


def _unchanged_long_enough(
    key: tuple[object, ...], seen_at: float, stopped_after: float, now: datetime, released: Released,
    seen: set[tuple[object, ...]],
) -> float | None:  # fmt: skip
    """How long this process has seen another host's claim ``key`` unchanged, once that is ``stopped_after`` or
    more; None before (a pass is asked for when it will be: looked at again within SIGHTINGS_GAP_S, or the sightings
    start over). ``seen`` collects the keys this pass looked at."""
    seen.add(key)
    unchanged_for = _UNCHANGED.seen_for(key, seen_at)
    if unchanged_for < stopped_after:
        released.look_again(now + timedelta(seconds=min(claims.HEARTBEAT_S, stopped_after - unchanged_for)))
        return None
    return unchanged_for


def _release_deliveries(
    store: Store, recorder: AuditRecorder, now: datetime, seen_at: float, released: Released
) -> None:
    host = socket.gethostname()
    overdue = claims.overdue_before(now)
    confirm = claims.CONFIRM_OVERDUE_S
    stopped_after = claims.HEARTBEAT_S + claims.RENEWAL_SLACK_S
    overdue_seen: set[tuple[object, ...]] = set()
    unchanged_seen: set[tuple[object, ...]] = set()
    with store.session("finding deliveries claimed by a process that ended") as session:
        database_now = claims.database_now(session)  # the lease's clock (radtrace.reporting.dispatch.claims)
        rows = session.execute(
            sa.select(OutboxMessage.id, OutboxMessage.attempts, OutboxMessage.claimed_by, OutboxMessage.heartbeat_at)
            .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.attempts > 0,
                   OutboxMessage.heartbeat_at.is_not(None), OutboxMessage.claimed_by.is_not(None),
                   # this host's lease not over yet (over: any dispatcher may claim it); another's: sightings tell
                   sa.or_(OutboxMessage.next_attempt_at > database_now,
                          ~OutboxMessage.claimed_by.contains(f"@{host}:", autoescape=True)))
            .order_by(OutboxMessage.heartbeat_at)
            .limit(LOOK_AT_MOST)
        ).all()  # fmt: skip
    for outbox_id, attempts, claimed_by, heartbeat_at in rows:
        holder = claims.ClaimHolder.parse(str(claimed_by))
        if holder is None or heartbeat_at is None:
            continue
        key = ("delivery", outbox_id, str(claimed_by), heartbeat_at)
        why: str | None
        if not holder.on_this_machine:  # its liveness shows only in its beat, written from its clock: see _UNCHANGED
            unchanged_for = _unchanged_long_enough(key, seen_at, stopped_after, now, released, unchanged_seen)
            if unchanged_for is None:
                continue
            elsewhere = "another host" if not holder.on_this_host else "another boot under this host name"
            why = (
                f"whose heartbeat stopped at {heartbeat_at:%H:%M:%S} UTC by its clock, as seen from {host}: the same "
                f"beat seen for {unchanged_for:.0f} s by this process ({elsewhere}: its beat every "
                f"{claims.HEARTBEAT_S:.0f} s is all that tells it is alive)"
            )
        else:
            why = holder.ended()  # provably ended (its pid in this namespace and boot is gone): nothing sends it now
        if why is None:
            if holder.beside_us:  # alive here; if it sends on (its beat renewed), look again soon: a kill -9 now
                if heartbeat_at > overdue:  # is then found in seconds, not a whole reconcile interval later
                    released.look_again(now + timedelta(seconds=2 * claims.HEARTBEAT_S))
                continue  # a stuck send, or one whose database is away: its lease decides
            if heartbeat_at > overdue:  # another namespace, renewed lately: look again once it would be overdue
                released.look_again(heartbeat_at + (now - overdue))
                continue
            overdue_seen.add(key)
            overdue_for = _OVERDUE.seen_for(key, now.timestamp())
            if overdue_for < confirm:  # the database may just be back: its holder's retried beat lands first
                released.look_again(now + timedelta(seconds=confirm - overdue_for))
                continue
            why = (
                f"whose heartbeat stopped at {heartbeat_at:%H:%M:%S} UTC ({(now - heartbeat_at).total_seconds():.0f}"
                " s ago; another PID namespace or boot under this host name: its pid cannot be looked at here)"
            )
        reason = f"claimed by {holder.process}, {why}: sent again now (released by {recorder.default_actor.process})"
        with store.session("releasing a delivery claimed by a process that ended", immediate=True) as session:
            due = claims.due_now(session, now)  # due now for this dispatcher and those whose clock is the database's
            done = session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id, OutboxMessage.state == OutboxState.PENDING,
                       OutboxMessage.attempts == attempts, OutboxMessage.claimed_by == claimed_by,
                       OutboxMessage.heartbeat_at == heartbeat_at)
                .values(next_attempt_at=due, last_error=reason, claimed_by=None, heartbeat_at=None)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if done.rowcount != 1:  # type: ignore[attr-defined]  # recorded, renewed or released meanwhile
                continue
            row = session.get(OutboxMessage, outbox_id)
            assert row is not None
            study = row.revision.study
            payload = {"outbox_id": row.id, "kind": row.kind, "destination": row.destination, "attempt": row.attempts,
                       "payload_sha256": row.payload_sha256, "error": reason,
                       "next_attempt_at": due.isoformat(),
                       "released_claim_of": holder.process, "claimed_by": str(claimed_by),
                       "heartbeat_at": heartbeat_at.isoformat(), "released_by_host": host}  # fmt: skip
            recorder.record(
                AuditEvent(EventType.DISPATCH_RETRY_SCHEDULED, recorder.default_actor, Outcome.MINOR_FAILURE,
                           study_uid=study.study_uid, accession=study.accession, payload=payload),
                session=session,
            )  # fmt: skip
            destination = row.destination
        log.warning("outbox %s %s: %s", outbox_id, destination, reason)
        released.deliveries.append(outbox_id)
    _OVERDUE.forget_all_but(overdue_seen, "delivery")  # the beats no longer seen (renewed, recorded, released)
    _UNCHANGED.forget_all_but(unchanged_seen, "delivery")


def _release_revisions(
    store: Store,
    recorder: AuditRecorder,
    now: datetime,
    seen_at: float,
    claim_timeout_s: float,
    gone: Callable[[str, datetime | None], str | None],
    released: Released,
) -> None:
    host = socket.gethostname()
    stopped_after = claim_timeout_s / 3 + RENEWAL_SLACK_S  # a beat every third of the claim, and the same slack
    columns = (Revision.id, Revision.attempts, Revision.claimed_by, Revision.claim_expires_at, Job.started_at)
    held = sa.and_(Job.revision_id == Revision.id, Job.attempt == Revision.attempts, Job.worker == Revision.claimed_by)
    with store.session("finding revisions claimed by a process that ended") as session:
        database_now = claims.database_now(session)  # claim_expires_at is written on it (radtrace.worker.claims)
        unrenewed_since = database_now + timedelta(seconds=claim_timeout_s * 2 / 3 - RENEWAL_SLACK_S)
        ours = session.execute(
            sa.select(*columns).outerjoin(Job, held)
            .where(Revision.state == RevisionState.PROCESSING, Revision.claim_expires_at > database_now,
                   Revision.claim_expires_at <= unrenewed_since,  # its heartbeat missed a beat: see RENEWAL_SLACK_S
                   Revision.claimed_by.startswith(f"{host}:", autoescape=True))
            .order_by(Revision.claim_expires_at)
            .limit(LOOK_AT_MOST)
        ).all()  # fmt: skip
        others = session.execute(  # another host's claim and beat, written from its clock: sightings alone tell
            sa.select(*columns).outerjoin(Job, held)
            .where(Revision.state == RevisionState.PROCESSING, Revision.claim_expires_at.is_not(None),
                   Revision.claimed_by.contains(":"),  # host:pid, as a worker names itself
                   ~Revision.claimed_by.startswith(f"{host}:", autoescape=True))
            .order_by(Revision.id)
            .limit(LOOK_AT_MOST)
        ).all()  # fmt: skip
    unchanged_seen: set[tuple[object, ...]] = set()
    for revision_id, attempts, claimed_by, expires, claimed_at in [*ours, *others]:
        why: str | None
        if str(claimed_by).startswith(f"{host}:"):
            why = gone(str(claimed_by), claimed_at)  # no job row: no claim time, so only a pid nobody has counts
        else:
            key = ("revision", revision_id, str(claimed_by), attempts, expires)
            unchanged_for = _unchanged_long_enough(key, seen_at, stopped_after, now, released, unchanged_seen)
            if unchanged_for is None:
                continue
            why = (
                f"whose heartbeat stopped (its claim last renewed until {expires:%H:%M:%S} UTC by the database's "
                f"clock), as seen from {host}: the same claim seen for {unchanged_for:.0f} s by this process (another "
                f"host: its beat every {claim_timeout_s / 3:.0f} s is all that tells it is alive)"
            )
        if why is None:
            continue
        reason = (f"claimed by worker {claimed_by}, {why}: its claim released now for another worker to take over "
                  f"(released by {recorder.default_actor.process})")  # fmt: skip
        with store.session("releasing a revision claimed by a process that ended", immediate=True) as session:
            done = session.execute(
                sa.update(Revision)
                .where(Revision.id == revision_id, Revision.state == RevisionState.PROCESSING,
                       Revision.claimed_by == claimed_by, Revision.attempts == attempts,
                       Revision.claim_expires_at == expires)
                .values(claim_expires_at=claims.database_now(session))  # over, by the clock take-overs judge it on
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if done.rowcount != 1:  # type: ignore[attr-defined]
                continue
            revision = session.get(Revision, revision_id)
            assert revision is not None
            study = revision.study
            recorder.record(
                AuditEvent(EventType.INFERENCE_FAILED, recorder.default_actor, Outcome.MINOR_FAILURE,
                           study_uid=study.study_uid, accession=study.accession,
                           payload={"revision": revision.number, "attempt": attempts, "worker": claimed_by,
                                    "error": reason, "released_claim_of": claimed_by, "released_by_host": host}),
                session=session,
            )  # fmt: skip
            released.revisions.append((revision_id, study.study_uid, revision.number, revision.priority))
        log.warning("revision %s: %s", revision_id, reason)
    _UNCHANGED.forget_all_but(unchanged_seen, "revision")
