"""Release at once the claims of a process on this host that provably ended (kill -9, a crash, the OOM killer).

A claim is only a lease: an outbox row being sent has ``next_attempt_at`` pushed a lease ahead (300 s or more,
:mod:`radtrace.reporting.dispatch.outbox`) and its holder and heartbeat in ``claimed_by`` and ``heartbeat_at``
(:mod:`radtrace.reporting.dispatch.claims`), a revision being read has ``claimed_by`` and ``claim_expires_at``
(``broker.claim_timeout_s``, :mod:`radtrace.worker.claims`). A holder that dies is found only once its lease runs
out, so on a one-machine site "kill -9 it and start it again" stalled a delivery about six minutes.

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

Each release is a conditional UPDATE (the row still as it was read), so two reconcilers release it once. Claims of
processes on other hosts are never released early: their liveness cannot be known here; the lease decides.
"""

from __future__ import annotations

import logging
import socket
import threading
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

#: Claims of another PID namespace whose beat a pass of this process found overdue, (outbox id, claimed_by, the beat)
#: -> (when first found, when last found): released only :data:`radtrace.reporting.dispatch.claims.CONFIRM_OVERDUE_S`
#: after the first, by passes no more than :data:`SIGHTINGS_GAP_S` apart (a longer gap: this process's passes failed,
#: the database was away for it too, and the holder's beat may be about to land: it is looked at as if new).
_OVERDUE_SINCE: dict[tuple[int, str, datetime], tuple[datetime, datetime]] = {}
SIGHTINGS_GAP_S = 10.0
_OVERDUE_LOCK = threading.Lock()


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
) -> Released:
    """Release the live claims held by processes of this host that provably ended (see the module docstring); a
    revision's claim only once its heartbeat (every third of ``claim_timeout_s``) has missed a beat, a delivery's once
    its heartbeat is overdue."""
    released = Released()
    _release_deliveries(store, recorder, now, released)
    unrenewed_since = now + timedelta(seconds=claim_timeout_s * 2 / 3 - RENEWAL_SLACK_S)
    _release_revisions(store, recorder, now, unrenewed_since, gone, released)
    if released.deliveries or released.revisions:
        log.warning(
            "released the claims of processes of this host that are not running: %d deliveries due again now, "
            "%d revisions to take over", len(released.deliveries), len(released.revisions),
        )  # fmt: skip
    return released


def _release_deliveries(store: Store, recorder: AuditRecorder, now: datetime, released: Released) -> None:
    host = socket.gethostname()
    overdue = claims.overdue_before(now)
    confirm = timedelta(seconds=claims.CONFIRM_OVERDUE_S)
    seen: set[tuple[int, str, datetime]] = set()
    with store.session("finding deliveries claimed by a process that ended") as session:
        rows = session.execute(
            sa.select(OutboxMessage.id, OutboxMessage.attempts, OutboxMessage.claimed_by, OutboxMessage.heartbeat_at)
            .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.attempts > 0,
                   OutboxMessage.next_attempt_at > now, OutboxMessage.heartbeat_at.is_not(None),
                   OutboxMessage.claimed_by.contains(f"@{host}:", autoescape=True))
            .order_by(OutboxMessage.heartbeat_at)
            .limit(LOOK_AT_MOST)
        ).all()  # fmt: skip
    for outbox_id, attempts, claimed_by, heartbeat_at in rows:
        holder = claims.ClaimHolder.parse(str(claimed_by))
        if holder is None or not holder.on_this_host or heartbeat_at is None:
            continue
        why = holder.ended()  # provably ended (its pid in this namespace and boot is gone): nothing sends it now
        if why is None:
            if holder.beside_us:  # alive here; if it sends on (its beat renewed), look again soon: a kill -9 now
                if heartbeat_at > overdue:  # is then found in seconds, not a whole reconcile interval later
                    released.look_again(now + timedelta(seconds=2 * claims.HEARTBEAT_S))
                continue  # a stuck send, or one whose database is away: its lease decides
            if heartbeat_at > overdue:  # another namespace, renewed lately: look again once it would be overdue
                released.look_again(heartbeat_at + (now - overdue))
                continue
            first_seen = _first_seen_overdue(outbox_id, str(claimed_by), heartbeat_at, now, seen)
            if now < first_seen + confirm:  # the database may just be back: its holder's retried beat lands first
                released.look_again(first_seen + confirm)
                continue
            why = (
                f"whose heartbeat stopped at {heartbeat_at:%H:%M:%S} UTC ({(now - heartbeat_at).total_seconds():.0f}"
                " s ago; another PID namespace or boot under this host name: its pid cannot be looked at here)"
            )
        reason = f"claimed by {holder.process}, {why}: sent again now (released by {recorder.default_actor.process})"
        with store.session("releasing a delivery claimed by a process that ended", immediate=True) as session:
            done = session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id, OutboxMessage.state == OutboxState.PENDING,
                       OutboxMessage.attempts == attempts, OutboxMessage.claimed_by == claimed_by,
                       OutboxMessage.heartbeat_at == heartbeat_at)
                .values(next_attempt_at=now, last_error=reason, claimed_by=None, heartbeat_at=None)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if done.rowcount != 1:  # type: ignore[attr-defined]  # recorded, renewed or released meanwhile
                continue
            row = session.get(OutboxMessage, outbox_id)
            assert row is not None
            study = row.revision.study
            payload = {"outbox_id": row.id, "kind": row.kind, "destination": row.destination, "attempt": row.attempts,
                       "payload_sha256": row.payload_sha256, "error": reason, "next_attempt_at": now.isoformat(),
                       "released_claim_of": holder.process, "claimed_by": str(claimed_by),
                       "heartbeat_at": heartbeat_at.isoformat()}  # fmt: skip
            recorder.record(
                AuditEvent(EventType.DISPATCH_RETRY_SCHEDULED, recorder.default_actor, Outcome.MINOR_FAILURE,
                           study_uid=study.study_uid, accession=study.accession, payload=payload),
                session=session,
            )  # fmt: skip
            destination = row.destination
        log.warning("outbox %s %s: %s", outbox_id, destination, reason)
        released.deliveries.append(outbox_id)
    with _OVERDUE_LOCK:  # forget the beats no longer overdue (renewed, recorded, released)
        for key in set(_OVERDUE_SINCE) - seen:
            del _OVERDUE_SINCE[key]


def _first_seen_overdue(
    outbox_id: int, claimed_by: str, heartbeat_at: datetime, now: datetime, seen: set[tuple[int, str, datetime]]
) -> datetime:
    """When a pass of this process first found this claim's beat overdue, its passes since no more than
    :data:`SIGHTINGS_GAP_S` apart (``now`` if this is the first)."""
    key = (outbox_id, claimed_by, heartbeat_at)
    seen.add(key)
    with _OVERDUE_LOCK:
        first, last = _OVERDUE_SINCE.get(key, (now, now))
        if now - last > timedelta(seconds=SIGHTINGS_GAP_S):
            first = now
        _OVERDUE_SINCE[key] = (first, max(now, last))
        return first


def _release_revisions(
    store: Store,
    recorder: AuditRecorder,
    now: datetime,
    unrenewed_since: datetime,
    gone: Callable[[str, datetime | None], str | None],
    released: Released,
) -> None:
    host = socket.gethostname()
    with store.session("finding revisions claimed by a process that ended") as session:
        rows = session.execute(
            sa.select(Revision.id, Revision.attempts, Revision.claimed_by, Revision.claim_expires_at, Job.started_at)
            .outerjoin(Job, sa.and_(Job.revision_id == Revision.id, Job.attempt == Revision.attempts,
                                    Job.worker == Revision.claimed_by))
            .where(Revision.state == RevisionState.PROCESSING, Revision.claim_expires_at > now,
                   Revision.claim_expires_at <= unrenewed_since,  # its heartbeat missed a beat: see RENEWAL_SLACK_S
                   Revision.claimed_by.startswith(f"{host}:", autoescape=True))
            .order_by(Revision.claim_expires_at)
            .limit(LOOK_AT_MOST)
        ).all()  # fmt: skip
    for revision_id, attempts, claimed_by, expires, claimed_at in rows:
        why = gone(str(claimed_by), claimed_at)  # no job row: no claim time, so only a pid nobody has counts
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
                .values(claim_expires_at=now)
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
                                    "error": reason, "released_claim_of": claimed_by}),
                session=session,
            )  # fmt: skip
            released.revisions.append((revision_id, study.study_uid, revision.number, revision.priority))
        log.warning("revision %s: %s", revision_id, reason)
