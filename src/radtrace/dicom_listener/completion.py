"""Study completion: a study is complete after ``settle_seconds`` with no new instance.

DICOM has no end-of-study signal, so completion is a guess; the guess is made from the database
alone, so it survives restarts: :func:`due_revisions` is a pure function over the open (receiving)
revisions and the time; :func:`complete_due` applies it in one transaction per revision, re-checking
under the study's lock that nothing arrived meanwhile; :class:`CompletionTimer` is the thin loop that
calls it when the next revision is due or when a new instance arrives. A listener killed mid-study
finds the study's receiving revision at start and completes it when it is due.

A completed revision is ``queued`` for the model or ``skipped(reason)`` by :mod:`.filtering`, with
an audit event either way. Once a revision's ``queued`` row is committed, the broker doorbell is rung
(:func:`radtrace.worker.doorbell.ring_process`, best effort, never raises); a ring that does not reach
the broker is rung again by the worker's reconciler, which finds queued rows: the row is the truth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.dicom_listener.filtering import FilterRule, InstanceFacts, decide
from radtrace.dicom_listener.ingest import lock_study
from radtrace.errors import RadtraceError
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Priority, Revision, RevisionState, Study
from radtrace.worker.doorbell import ring_process

__all__ = ["CompletedRevision", "CompletionTimer", "OpenRevision", "complete_due", "due_revisions", "next_due_at"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenRevision:
    """A revision still receiving, and when its study last got a new instance."""

    revision_id: int
    last_instance_at: datetime | None
    opened_at: datetime


@dataclass(frozen=True)
class CompletedRevision:
    """What completion did to one revision."""

    revision_id: int
    study_key: str
    state: RevisionState
    reason: str | None
    study_uid: str
    number: int
    priority: Priority = Priority.ROUTINE


def _quiet_since(revision: OpenRevision) -> datetime:
    return revision.last_instance_at or revision.opened_at


def due_revisions(open_revisions: Sequence[OpenRevision], now: datetime, settle_seconds: float) -> list[int]:
    """IDs of the revisions whose study has had no new instance for ``settle_seconds`` at ``now``."""
    settle = timedelta(seconds=settle_seconds)
    return [r.revision_id for r in open_revisions if now - _quiet_since(r) >= settle]


def next_due_at(open_revisions: Sequence[OpenRevision], settle_seconds: float) -> datetime | None:
    """When the earliest open revision becomes due, or ``None`` when none is open."""
    if not open_revisions:
        return None
    return min(_quiet_since(r) for r in open_revisions) + timedelta(seconds=settle_seconds)


def open_revisions(store: Store) -> list[OpenRevision]:
    """Every revision in ``receiving`` with its study's last-instance time."""
    with store.session("finding studies still receiving") as session:
        rows = session.execute(
            sa.select(Revision.id, Study.last_instance_at, Revision.opened_at)
            .join(Study, Study.id == Revision.study_id)
            .where(Revision.state == RevisionState.RECEIVING)
        ).all()
    return [OpenRevision(row[0], row[1], row[2]) for row in rows]


def complete_due(
    store: Store,
    recorder: AuditRecorder,
    settle_seconds: float,
    *,
    now: datetime | None = None,
    actor: Actor | None = None,
    rule: FilterRule | None = None,
    doorbell: Settings | None = None,
) -> list[CompletedRevision]:
    """Queue or skip every revision due at ``now``; each in its own transaction with its audit event.

    With ``doorbell`` (the settings naming the broker), each queued revision's doorbell is rung right
    after its transaction commits, so a worker starts at once instead of at the reconciler's next pass.
    """
    now = now or utc_now()
    done: list[CompletedRevision] = []
    for revision_id in due_revisions(open_revisions(store), now, settle_seconds):
        completed = _complete_one(store, recorder, revision_id, now, settle_seconds, actor or Actor(), rule)
        if completed is None:
            continue
        # after the commit: a transaction that failed (disk full, database gone) said "queued" before
        log.info("study %s revision %d %s", completed.study_key, completed.number, completed.state.value)
        if doorbell is not None and completed.state is RevisionState.QUEUED:
            # never raises; False: the reconciler rings
            ring_process(doorbell, completed.study_uid, completed.number, priority=completed.priority)
        done.append(completed)
    return done


def _complete_one(
    store: Store,
    recorder: AuditRecorder,
    revision_id: int,
    now: datetime,
    settle_seconds: float,
    actor: Actor,
    rule: FilterRule | None,
) -> CompletedRevision | None:
    with store.session("completing a study", immediate=True) as session:
        revision = session.get_one(Revision, revision_id)
        study = session.get_one(Study, revision.study_id)
        lock_study(session, study.study_uid)
        session.refresh(revision)
        session.refresh(study)
        still_open = OpenRevision(revision.id, study.last_instance_at, revision.opened_at)
        if revision.state is not RevisionState.RECEIVING or not due_revisions([still_open], now, settle_seconds):
            return None  # an instance arrived meanwhile, or another listener completed it
        facts = [
            InstanceFacts(*row)
            for row in session.execute(
                sa.select(
                    Instance.sop_class_uid,
                    Instance.modality,
                    Instance.body_part,
                    Instance.requested_priority,
                    Instance.calling_ae,
                ).where(Instance.revision_id == revision.id)
            )
        ]
        decision = decide(facts, study.study_description, rule)
        payload: dict[str, object] = {"revision": revision.number, "instances": len(facts)}
        if decision.queue:
            revision.state = RevisionState.QUEUED
            revision.queued_at = now
            revision.priority = decision.priority
            event = AuditEvent(
                EventType.STUDY_QUEUED,
                actor,
                study_uid=study.study_uid,
                accession=study.accession,
                payload=payload | {"priority": decision.priority.value},
            )
        else:
            revision.state = RevisionState.SKIPPED
            revision.reason = decision.reason
            revision.finished_at = now
            event = AuditEvent(
                EventType.STUDY_SKIPPED,
                actor,
                study_uid=study.study_uid,
                accession=study.accession,
                payload=payload | {"reason": decision.reason},
            )
        recorder.record(event, session=session)
        return CompletedRevision(
            revision.id, study.study_key, revision.state, decision.reason, study.study_uid, revision.number,
            decision.priority,
        )  # fmt: skip


class CompletionTimer:
    """A daemon thread that completes due revisions: at the next due time, on :meth:`poke`, at start.

    Its only state is the database's, so a restart rebuilds every pending timer. While completing fails (the
    database away, its disk full) it tries again every :attr:`retry_s` and says so once, then once every
    :attr:`repeat_warning_s` with a count, and once when it works again: not a line every 2 s.
    """

    retry_s: float = 2.0
    repeat_warning_s: float = 60.0

    def __init__(
        self,
        store: Store,
        recorder: AuditRecorder,
        settle_seconds: float,
        *,
        actor: Actor | None = None,
        on_completed: Callable[[CompletedRevision], None] | None = None,
        max_sleep_s: float = 30.0,
        doorbell: Settings | None = None,
        rule: FilterRule | None = None,
    ) -> None:
        self.store = store
        self.rule = rule
        self.doorbell = doorbell
        self.recorder = recorder
        self.settle_seconds = settle_seconds
        self.actor = actor or Actor()
        self.on_completed = on_completed
        self.max_sleep_s = max_sleep_s
        self._wake = threading.Event()
        self._next_wake = 0.0  # time.monotonic() of the loop's next planned run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="radtrace-completion", daemon=True)
        self._failing_since: float | None = None  # time.monotonic() of the first failure in a row
        self._warned_at = 0.0
        self._failures = 0

    def start(self) -> None:
        """Start the loop (it first completes whatever became due while no listener ran)."""
        self._thread.start()

    def poke(self) -> None:
        """A new instance arrived: wake the loop if it would otherwise sleep past this study's due time.

        New instances only push due times later, so during a burst this is almost always a no-op.
        """
        if self._next_wake > time.monotonic() + self.settle_seconds:
            self._next_wake = 0.0
            self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _failed(self, reason: str, exc: BaseException | None = None) -> None:
        """One completion pass failed: a warning the first time and every :attr:`repeat_warning_s` after."""
        now = time.monotonic()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = self._warned_at = now
            log.warning("study completion failed, retrying every %g s: %s", self.retry_s, reason, exc_info=exc)
        elif now - self._warned_at >= self.repeat_warning_s:
            self._warned_at = now
            log.warning("study completion still failing after %d tries in %.0f s, retrying: %s", self._failures,
                        now - self._failing_since, reason)  # fmt: skip

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("study completion works again after %d failed tries in %.0f s", self._failures,
                     time.monotonic() - self._failing_since)  # fmt: skip
        self._failing_since, self._failures = None, 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._next_wake = float("inf")  # a poke while the database is read makes the wait below return
            sleep_s = self.max_sleep_s
            try:
                for completed in complete_due(
                    self.store, self.recorder, self.settle_seconds, actor=self.actor, doorbell=self.doorbell,
                    rule=self.rule,
                ):  # fmt: skip
                    if self.on_completed is not None:
                        self.on_completed(completed)
                due_at = next_due_at(open_revisions(self.store), self.settle_seconds)
                if due_at is not None:
                    # a short floor: a study whose last image came just after its first is due a moment later
                    sleep_s = min(sleep_s, max(0.005, (due_at - utc_now()).total_seconds() + 0.002))
            except RadtraceError as exc:  # database down: try again shortly, never die
                self._failed(exc.reason)
                sleep_s = min(sleep_s, self.retry_s)
            except Exception as exc:
                self._failed(f"unexpected {type(exc).__name__}", exc)
                sleep_s = min(sleep_s, self.retry_s)
            else:
                self._recovered()
            self._next_wake = time.monotonic() + sleep_s
            self._wake.wait(sleep_s)
            self._wake.clear()
