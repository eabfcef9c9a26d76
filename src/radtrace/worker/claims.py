"""Claims on revisions: who may take one, which are due, and the heartbeat that keeps a worker's claims alive.

A claim is the conditional UPDATE that moves a revision ``queued → processing`` under this worker's name with an
expiry (:class:`radtrace.worker.pipeline.StudyPipeline` takes it). A GPU worker reading a batch holds several at
once; one heartbeat thread renews all of them every third of ``broker.claim_timeout_s``, so a reading longer
than the timeout is not taken over, and a worker that dies stops renewing: its claims lapse.

The expiry (``claim_expires_at``) is written and judged on the database's clock
(:func:`radtrace.reporting.dispatch.claims.database_now`: on PostgreSQL the one clock every node shares), never on a
worker's wall clock: a node whose clock runs minutes ahead does not take a live reading over, and one behind does not
hold a dead one's up (:func:`claim_decision`'s ``lease_now``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.config import BrokerSettings
from radtrace.errors import RadtraceError, StoreUnavailableError
from radtrace.logging import study_key
from radtrace.reporting.dispatch.claims import BEAT_RETRY_S
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Priority, Revision, RevisionState, Study
from radtrace.worker.database_outage import is_database_outage

__all__ = [
    "Claim",
    "ClaimDecision",
    "Heartbeat",
    "claim_decision",
    "claim_event",
    "claims_kept_alive",
    "due_revisions",
    "held_by",
    "last_received",
    "retry_delay",
    "seconds_between",
    "worker_name",
]

log = logging.getLogger(__name__)

ClaimDecision = Literal["claim", "take-over", "not-due", "busy", "done"]


@dataclass(frozen=True)
class Claim:
    """One attempt at one revision, held by this worker."""

    revision_id: int
    study_uid: str
    accession: str | None
    number: int
    attempt: int
    job_id: int
    study_id: int

    def names(self) -> str:
        """How a log line names it: the study's key and the revision's number, as the listener's lines do (the
        revision's row ID alone matched nothing an operator sees in ``radtrace status`` or the listener's log)."""
        return f"study {study_key(self.study_uid)} revision {self.number}"


def worker_name() -> str:
    """This process as a claim holder: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_decision(
    state: RevisionState,
    claim_expires_at: datetime | None,
    next_attempt_at: datetime | None,
    now: datetime,
    *,
    ours: bool = False,
    lease_now: datetime | None = None,
) -> ClaimDecision:
    """Whether a worker may take a revision now (pure).

    ``ours``: the live claim is this worker's own. A worker takes revisions only while it holds none (one
    batch at a time), so finding its own claim means an earlier attempt of its died without releasing it (the
    database went away while it recorded the failure): take it over now rather than wait ``claim_timeout_s``.
    ``lease_now``: the database's clock, which ``claim_expires_at`` is written on (``now``, this worker's, when not
    given); a retry's ``next_attempt_at`` is this worker's schedule, judged on ``now``.
    """
    if state is RevisionState.QUEUED:
        return "claim" if next_attempt_at is None or next_attempt_at <= now else "not-due"
    if state is RevisionState.PROCESSING:
        expired = claim_expires_at is None or claim_expires_at <= (now if lease_now is None else lease_now)
        return "take-over" if ours or expired else "busy"
    if state is RevisionState.RECEIVING:
        return "not-due"
    return "done"


def retry_delay(settings: BrokerSettings, attempts: int) -> timedelta:
    """Delay before the next attempt after ``attempts`` failed ones: doubling from the initial, capped."""
    seconds = settings.retry_backoff_initial_s * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, settings.retry_backoff_max_s))


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end``; None when either is unknown."""
    return None if start is None or end is None else (end - start).total_seconds()


def held_by(claim: Claim, worker: str) -> tuple[sa.ColumnElement[bool], ...]:
    """The conditions under which the revision is still claimed by this attempt of ``worker``."""
    return (
        Revision.id == claim.revision_id,
        Revision.state == RevisionState.PROCESSING,
        Revision.claimed_by == worker,
        Revision.attempts == claim.attempt,
    )


def due_revisions(store: Store, now: datetime, *, limit: int, besides: Sequence[int] = ()) -> list[tuple[str, int]]:
    """Up to ``limit`` queued revisions due now, STAT first, then oldest: (study UID, number).

    Candidates only: taking one is still the conditional UPDATE, which another worker may win.
    """
    if limit <= 0:
        return []
    with store.session("looking for due revisions") as session:
        rows = session.execute(
            sa.select(Study.study_uid, Revision.number)
            .join(Study, Revision.study_id == Study.id)
            .where(
                Revision.state == RevisionState.QUEUED,
                sa.or_(Revision.next_attempt_at.is_(None), Revision.next_attempt_at <= now),
                Revision.id.not_in(list(besides)) if besides else sa.true(),
            )
            .order_by(sa.case((Revision.priority == Priority.STAT, 0), else_=1), Revision.queued_at, Revision.id)
            .limit(limit)
        ).all()
    return [(row[0], row[1]) for row in rows]


class Heartbeat:
    """The claims one heartbeat renews; a pipelined worker adds the next batch's while the last one's drafts build.

    A renewal that fails is told and counted by whose error it is (:func:`.database_outage.is_database_outage`, the
    rule an attempt's count follows): the database's outage ("database unavailable while renewing a claim"), said once
    per outage with the claims it leaves unrenewed, the rest of that beat not tried (each would wait for the same
    connection timeout), and the beat tried again every :data:`BEAT_RETRY_S` so the claims are renewed within a
    second of its return, before another worker takes a live attempt over and counts it; or an error of ours the
    database answered (a statement or lock timeout, a deadlock, a pool with no connection free), said for each claim
    as ours, not an outage, and tried again at the next beat, not every second (the same statement would only time
    out again). :attr:`missed` counts the renewals missed each way."""

    def __init__(self, claims: Sequence[Claim]) -> None:
        self._alive = list(claims)
        self._lock = threading.Lock()
        self.missed: Counter[str] = Counter()  # renewals not made, by whose error: "outage" or "ours"
        self._away_since: float | None = None  # time.monotonic() when a beat first found the database away

    def add(self, claims: Sequence[Claim]) -> None:
        """Renew these too, from the next beat on."""
        with self._lock:
            self._alive.extend(claims)

    def drop(self, claim: Claim) -> bool:
        """Stop renewing ``claim`` (its attempt is ending, or it was lost); False when it was not renewed anyway."""
        with self._lock:
            if claim not in self._alive:
                return False
            self._alive.remove(claim)
            return True

    def beat(self, renew: Callable[[Claim], bool]) -> bool:
        """Renew every claim once; one found lost is not renewed again. False when the database was away (the rest
        of the beat not tried): beat again in :data:`BEAT_RETRY_S`."""
        with self._lock:
            claims = list(self._alive)
        for number, claim in enumerate(claims):
            try:
                if not renew(claim) and self.drop(claim):  # not dropped meanwhile (its attempt ended): lost
                    log.warning("%s: claim lost while processing", claim.names())
            except StoreUnavailableError as exc:
                if not is_database_outage(exc):
                    self._ours(claim, exc)
                    continue
                unrenewed = len(claims) - number
                self.missed["outage"] += unrenewed
                if self._away_since is None:
                    self._away_since = time.monotonic()
                    log.warning("%d claim(s) not renewed: %s; trying again every %.0f s (a claim not renewed for "
                                "broker.claim_timeout_s lapses, and another worker may take its attempt over)",
                                unrenewed, exc.reason, BEAT_RETRY_S)  # fmt: skip
                return False
            except RadtraceError as exc:  # a permanent store error: a statement of ours the database refused
                self._ours(claim, exc)
        if self._away_since is not None:
            log.warning("claims renewed again after %.1f s of the database unavailable (%d renewal(s) missed)",
                        time.monotonic() - self._away_since, self.missed["outage"])  # fmt: skip
            self._away_since = None
        return True

    def _ours(self, claim: Claim, exc: RadtraceError) -> None:
        self.missed["ours"] += 1
        log.error("%s: claim not renewed: %s (an error of ours the database answered, not its outage; tried again at "
                  "the next beat)", claim.names(), exc.reason)  # fmt: skip


@contextlib.contextmanager
def claims_kept_alive(claims: Sequence[Claim], renew: Callable[[Claim], bool], interval_s: float
                      ) -> Iterator[Heartbeat]:  # fmt: skip
    """Renew every claim in ``claims`` (and those added to the yielded :class:`Heartbeat`) each ``interval_s`` on
    one thread while the body runs.

    A claim found lost (``renew`` returned False) is not renewed again; a database that is away is logged and the
    beat tried again every :data:`BEAT_RETRY_S` (:class:`Heartbeat`): the claims may lapse, and finishing them will
    tell.
    """
    stop = threading.Event()
    heartbeat = Heartbeat(claims)

    def beat() -> None:
        wait = interval_s
        while not stop.wait(wait):
            wait = interval_s if heartbeat.beat(renew) else min(BEAT_RETRY_S, interval_s)

    first = claims[0].revision_id if claims else 0
    thread = threading.Thread(target=beat, name=f"radtrace-claims-{first}", daemon=True)
    thread.start()
    try:
        yield heartbeat
    finally:
        stop.set()
        thread.join()


def claim_event(
    actor: Actor, claim: Claim, kind: EventType, outcome: Outcome = Outcome.SUCCESS, **details: Any
) -> AuditEvent:
    """An audit event about one attempt at one revision; ``model_name``, ``model_version`` and ``labels`` go to
    their columns, other non-None details to the payload beside the revision number and attempt."""
    model_name = details.pop("model_name", None)
    model_version = details.pop("model_version", None)
    labels = details.pop("labels", ())
    payload = {"revision": claim.number, "attempt": claim.attempt}
    payload.update({key: value for key, value in details.items() if value is not None})
    return AuditEvent(
        kind,
        actor,
        outcome,
        study_uid=claim.study_uid,
        accession=claim.accession,
        model_name=model_name,
        model_version=model_version,
        labels=tuple(label for label in labels if "," not in label),
        payload=payload,
    )


def last_received(session: Session, revision_id: int) -> datetime | None:
    """When the revision's last instance arrived."""
    return session.scalar(sa.select(sa.func.max(Instance.received_at)).where(Instance.revision_id == revision_id))
