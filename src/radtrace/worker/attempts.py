"""One attempt at one revision: claim it, keep the claim, and end it reported, skipped, retried or failed.

*Claim* (one conditional UPDATE): ``queued`` (and due) → ``processing`` with ``claimed_by`` and
``claim_expires_at``, ``attempts`` + 1, a ``jobs`` row and ``inference_started`` in the same transaction. A
revision already ``processing`` under a live claim, or past ``processing``, is left alone; one whose claim
expired (its worker died) is taken over, and that lost attempt counts, so a study that kills its worker ends
``failed`` after ``broker.max_attempts``. One exception: an attempt this very worker process left ``processing``
because the database went away before its end could be recorded (:meth:`RevisionAttempts.lost_to_database`, noted as
the error left the pipeline) is no fault of the study's. Taking it over, the worker first records the end it could not
(``report_failed`` ``reading_kept: true`` when that attempt's ``inference_completed`` is in the audit log, else
``inference_failed`` ``read: false``; both ``attempt_counted: false``), and the attempt is not counted: three short
database outages no longer fail a study, and the reading is drafted again, not read again
(:mod:`radtrace.worker.kept_readings`). Only this process's own note counts: a worker that died (the claim of another
process, or of this pid after a restart) may have died of the study, and its attempt counts as before. Only an outage
counts as away (:func:`radtrace.worker.database_outage.is_database_outage`): a store error that is ours (a statement
timeout, a deadlock, SQLite's busy timeout) ends the attempt as an ordinary failure, recorded as the worker takes it
over (``inference_failed`` or ``report_failed`` with that error) and counted, so a bug in our own SQL fails the study
after ``max_attempts`` instead of being retried forever.
Each claim writes a token of its own (``claim_token`` in its ``inference_started``): a claim whose commit reached the
database but whose reply was lost (the connection broke after COMMIT) is found by its worker on the next try, by that
token, and kept as it is, not taken over as another attempt.
A later revision waits until the study's earlier ones are past ``processing`` (its SR names theirs as predecessors);
the end of the earlier one says which revision to ring next.

*End*: ``reported`` or ``skipped`` (:meth:`RevisionAttempts.finish`), or a failed attempt
(:meth:`RevisionAttempts.failed`): a retryable error puts the revision back to ``queued`` with
``next_attempt_at`` after an exponential backoff (or the model server's longer Retry-After, up to
``broker.retry_backoff_max_s``), until ``max_attempts``; a permanent one (or the last
attempt) ends ``failed(reason)``. A full disk (the drafts' or the outbox payloads' file system or quota:
:func:`waits_for_space`) is no fault of the study: the revision goes back to ``queued`` with the same backoff,
its attempt not counted and "waiting: …" as its reason, so it ends reported once there is space again; its next
attempt drafts from the reading already recorded (:mod:`radtrace.worker.kept_readings`), and while the drafts' file
system has no room a revision waits without being read (:mod:`radtrace.worker.disk_space`).
Both are audited (``inference_failed`` or ``report_failed``, and
``study_failed`` for the end). Every end applies only while the claim is still ours.

What a restart loses
--------------------
The two notes above live in this process's memory only, by design: the attempts it lost to the database
(:meth:`RevisionAttempts.lost_to_database`) and the tokens of its claims whose reply it did not hear. A worker killed
-9 (or its node lost) and started again is another process, another ``host:pid`` in ``claimed_by``, and knows
neither. They are not persisted, because at-least-once does not rest on them, only the count does:

* the revision stays ``processing`` under the dead process's claim, which lapses (``broker.claim_timeout_s`` after its
  last beat, sooner where :mod:`radtrace.worker.dead_claims` proves the process gone); the next worker takes it over
  as any lost worker's attempt: read again, or, when the lost attempt had written its outbox rows, those rows kept
  and not read again (:meth:`radtrace.worker.revision_inputs.RevisionInputs.existing_outbox`); finished once, its
  deliveries once (outbox rows per revision and destination, SR UIDs derived from the study and revision). A live
  claim is never taken over: nothing is read twice at once;
* the attempt counts. That is the safe side, not an accident: a process that died after its note may have died of
  the study (its drafts, its reading), and the note cannot say it did not; a study that kills its worker must fail
  after ``max_attempts``, not kill workers forever. A note that outlived the process would have to be written while
  the database is away (a file per host and pid on local disk) and would spare one counted attempt in a double fault
  (the database away, then the worker killed before it came back);
* the cost of that double fault on a study's last attempt: it ends ``failed`` ("gave up after N attempts: the worker
  was lost (claim expired)"), listed by ``radtrace status`` and queued again by ``radtrace study retry``.

``tests/integration/test_database_lost_attempt.py`` shows each outcome (the ``…_killed_…`` cases).
"""

from __future__ import annotations

import enum
import errno
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.errors import DispatchError, RadtraceError, StoreUnavailableError, is_retryable
from radtrace.reporting.dispatch.claims import database_now
from radtrace.reporting.draft_store import DraftsDiskFullError, DraftsNotStoredError, failure_event_type
from radtrace.store.engine import Store
from radtrace.store.models import Job, JobState, Revision, RevisionState, Study
from radtrace.worker.claims import (
    Claim,
    claim_decision,
    claim_event,
    held_by,
    last_received,
    retry_delay,
    seconds_between,
)
from radtrace.worker.database_outage import is_database_outage
from radtrace.worker.disk_space import NoRoomForDraftsError
from radtrace.worker.kept_readings import audited_events
from radtrace.worker.model_failures import retry_after
from radtrace.worker.revision_reasons import WAITING, after_wait, retried, waiting
from radtrace.worker.settlement import StageObserver

__all__ = ["JOB_KIND", "ProcessResult", "Result", "RevisionAttempts", "stored_details", "waits_for_space"]

log = logging.getLogger(__name__)

JOB_KIND = "process"


def waits_for_space(error: BaseException) -> bool:
    """Whether a failed attempt only waits for disk space: its drafts could not be kept, or its outbox payloads
    stored (:class:`DispatchError` from an ENOSPC or EDQUOT write), because a file system or quota is full."""
    if isinstance(error, DraftsDiskFullError):
        return True
    cause = error.__cause__
    full = isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, DispatchError) and full


def stored_details(error: BaseException) -> dict[str, bool]:
    """What a failed attempt's audit event says of its reading (:mod:`radtrace.worker.kept_readings`): not read (it
    waited for space before reading), or kept (read, only its drafts or payloads could not be written: drafted
    again from the recorded reading, not read again)."""
    if isinstance(error, NoRoomForDraftsError):
        return {"read": False}
    if isinstance(error, DraftsNotStoredError) or waits_for_space(error):
        return {"reading_kept": True}
    return {}


class Result(enum.StrEnum):
    """What one ``process`` call did."""

    REPORTED = "reported"
    SKIPPED = "skipped"
    FAILED = "failed"
    RETRY = "retry"  # back to queued; ring again at ``retry_at``
    NOT_CLAIMED = "not-claimed"  # someone else holds it, it is not due, or it is already done
    MISSING = "missing"  # no such revision


@dataclass(frozen=True)
class ProcessResult:
    """The outcome of one ``process`` call, and what the caller should ring next."""

    result: Result
    state: RevisionState | None = None
    reason: str | None = None
    retry_at: datetime | None = None
    outbox_ids: tuple[int, ...] = ()
    next_revision: int | None = None  # a later revision of the study that waited for this one


@dataclass(frozen=True)
class _Interrupted:
    """An attempt whose end the store could not record, noted by its worker: ``counted`` unless the database was
    away (:func:`radtrace.worker.database_outage.is_database_outage`)."""

    claim: Claim
    reason: str
    counted: bool


class RevisionAttempts:
    """Claims, renews and ends attempts for one worker (named ``worker`` in ``claimed_by``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        recorder: AuditRecorder,
        *,
        actor: Actor,
        worker: str,
        clock: Callable[[], datetime],
        observer: StageObserver,
    ) -> None:
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.actor = actor
        self.worker = worker
        self.clock = clock
        self.observer = observer
        self._lost: dict[int, _Interrupted] = {}  # revision id -> an attempt of ours whose end was not recorded
        # (study UID, number) -> the tokens of claims whose commit may have reached the database, their reply not
        self._unanswered: dict[tuple[str, int], list[str]] = {}

    def lost_to_database(self, claims: Sequence[Claim], error: StoreUnavailableError) -> None:
        """Note attempts whose end could not be recorded because of ``error``: they stay ``processing`` under this
        worker, which takes them over on its next try. Not counted when the database was away, counted (an
        ordinary failure) when the error was ours (see the module)."""
        counted = not is_database_outage(error)
        for claim in claims:
            self._lost[claim.revision_id] = _Interrupted(claim, error.reason, counted)
            log.warning("%s attempt %d: its end could not be recorded (%s); taken over, %s, on the next try",
                        claim.names(), claim.attempt, error.reason,
                        "counted (the database answered)" if counted else "not counted")  # fmt: skip

    def lost(self) -> list[tuple[str, int]]:
        """The revisions (study UID, number) of attempts noted by :meth:`lost_to_database` and not taken over yet,
        then those whose claim's reply was lost: a batch takes them first, as they wait for no one's claim to
        expire."""
        noted = [(lost.claim.study_uid, lost.claim.number) for lost in list(self._lost.values())]
        return [*noted, *(key for key in list(self._unanswered) if key not in noted)]

    def renew(self, claim: Claim) -> bool:
        """Push our claim's expiry ``claim_timeout_s`` ahead; False when the claim is no longer ours."""
        with self.store.session("renewing a claim", immediate=True) as session:
            expires = database_now(session) + timedelta(seconds=self.settings.broker.claim_timeout_s)
            renewed = session.execute(
                sa.update(Revision)
                .where(*held_by(claim, self.worker))
                .values(claim_expires_at=expires)  # on the database's clock: radtrace.worker.claims
                .execution_options(synchronize_session=False)
            )
            return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]

    def claim(self, study_uid: str, number: int) -> Claim | ProcessResult:
        """Claim the revision, take a lost attempt of it over, or say why not (see the module)."""
        key = (study_uid, number)
        unanswered = list(self._unanswered.get(key, ()))  # claims of ours that may have committed, their reply lost
        token = uuid.uuid4().hex
        self._unanswered[key] = [*unanswered, token]  # until this claim's answer is in
        try:
            result = self._claim(study_uid, number, token, unanswered)
        except StoreUnavailableError:
            raise  # committed or not: the next try finds out by its token
        except BaseException:
            self._unanswered.pop(key, None)  # not a store outage: nothing was committed
            raise
        self._unanswered.pop(key, None)
        return result

    def _claim(self, study_uid: str, number: int, token: str, unanswered: Sequence[str]) -> Claim | ProcessResult:
        now = self.clock()
        with self.store.session("claiming a revision", immediate=True) as session:
            row = session.execute(
                sa.select(Revision, Study)
                .join(Study, Revision.study_id == Study.id)
                .where(Study.study_uid == study_uid, Revision.number == number)
            ).first()
            if row is None:
                return ProcessResult(Result.MISSING)
            rev, study = row[0], row[1]
            lost = self._lost.get(rev.id)  # dropped once taken over, or when the row says it no longer applies
            lease_now = database_now(session)  # claims expire on the database's clock, not this worker's
            decision = claim_decision(rev.state, rev.claim_expires_at, rev.next_attempt_at, now,
                                      ours=rev.claimed_by == self.worker, lease_now=lease_now)  # fmt: skip
            if decision not in ("claim", "take-over"):
                self._lost.pop(rev.id, None)  # ended after all, or someone else's now
                return ProcessResult(Result.NOT_CLAIMED, rev.state, rev.reason, rev.next_attempt_at)
            earlier = session.scalar(
                sa.select(sa.func.min(Revision.number)).where(
                    Revision.study_id == rev.study_id,
                    Revision.number < rev.number,
                    Revision.state.in_([RevisionState.QUEUED, RevisionState.PROCESSING]),
                )
            )
            if earlier is not None:  # its SR must exist first: this one names it as predecessor
                return ProcessResult(Result.NOT_CLAIMED, rev.state, f"waiting for revision {earlier}")
            ours = decision == "take-over" and rev.claimed_by == self.worker
            if ours and unanswered and (kept := self._answered(session, rev, study, unanswered, lease_now)) is not None:
                return kept
            # the attempt this process could not end, still as it left it
            noted = lost if ours and lost and lost.claim.attempt == rev.attempts else None
            uncounted = noted.reason if noted is not None and not noted.counted else None
            attempt = rev.attempts if uncounted is not None else rev.attempts + 1
            lost_as = "worker lost: claim expired" if noted is None else noted.reason  # its job row's error
            lost_by = "the worker was lost (claim expired)" if noted is None else noted.reason
            # a wait is over once claimed; a lost attempt that counts is the failure this attempt follows
            reason = (retried(rev.attempts, self.settings.broker.max_attempts, lost_by, now)
                      if decision == "take-over" and uncounted is None else after_wait(rev.reason))  # fmt: skip
            taken = session.execute(
                sa.update(Revision)
                .where(
                    Revision.id == rev.id,
                    Revision.state == rev.state,
                    Revision.attempts == rev.attempts,
                    Revision.claim_expires_at.is_(None)
                    if rev.claim_expires_at is None
                    else Revision.claim_expires_at == rev.claim_expires_at,
                )  # as read: not renewed since
                .values(
                    state=RevisionState.PROCESSING,
                    attempts=attempt,
                    claimed_by=self.worker,
                    claim_expires_at=lease_now + timedelta(seconds=self.settings.broker.claim_timeout_s),
                    next_attempt_at=None,
                    reason=reason,
                    started_at=rev.started_at or now,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]  # another worker claimed it first
                self._lost.pop(rev.id, None)
                return ProcessResult(Result.NOT_CLAIMED, RevisionState.PROCESSING)
            waited: dict[str, float | None] = {"start": seconds_between(rev.next_attempt_at or rev.queued_at, now)}
            if attempt == 1:
                waited["complete"] = seconds_between(last_received(session, rev.id), rev.queued_at)
            if decision == "take-over":
                self._close_lost_jobs(session, rev.id, now, f"not counted: {uncounted}" if uncounted else lost_as)
            job = Job(revision_id=rev.id, kind=JOB_KIND, attempt=attempt, state=JobState.RUNNING, worker=self.worker)
            session.add(job)
            session.flush()
            claim = Claim(rev.id, study.study_uid, study.accession, rev.number, attempt, job.id, study.id)
            events = [] if noted is None else [self._lost_end(session, noted)]
            events.append(
                self.event(
                    claim,
                    EventType.INFERENCE_STARTED,
                    worker=self.worker,
                    taken_over_from=rev.claimed_by if decision == "take-over" else None,
                    claim_token=token,
                )
            )
            self.recorder.record_many(events, session=session)
        self._lost.pop(rev.id, None)  # committed: taken over (a claim that failed to commit keeps its note)
        if uncounted is not None:
            log.info("%s: attempt %d taken over, not counted (the database was unavailable: %s)", claim.names(),
                     attempt, uncounted)  # fmt: skip
        elif noted is not None:
            log.info("%s: attempt %d failed (%s); taken over as attempt %d", claim.names(), noted.claim.attempt,
                     noted.reason, attempt)  # fmt: skip
        self._observe(waited)
        if decision == "take-over" and attempt > self.settings.broker.max_attempts:
            return self.failed(claim, RadtraceError(f"gave up after {attempt - 1} attempts: {lost_by}"), final=True)
        return claim

    def _observe(self, durations: dict[str, float | None]) -> None:
        for stage, seconds in durations.items():
            if seconds is not None:
                self.observer.observe(stage, seconds)

    def _close_lost_jobs(self, session: Session, revision_id: int, now: datetime, error: str) -> None:
        session.execute(
            sa.update(Job)
            .where(Job.revision_id == revision_id, Job.kind == JOB_KIND, Job.state == JobState.RUNNING)
            .values(state=JobState.FAILED, finished_at=now, error=error)
            .execution_options(synchronize_session=False)
        )

    def _lost_end(self, session: Session, lost: _Interrupted) -> AuditEvent:
        """The end an attempt of ours could not record, as it would have been recorded: ``report_failed`` when its
        reading was audited, else ``inference_failed``. Lost to the database (not counted): its reading kept, or
        ``read: false``. Ended by a store error of ours: an ordinary failed attempt, counted, read again."""
        claim = lost.claim
        read = self._read_in(session, claim)
        kept: dict[str, Any] = {} if lost.counted else {"attempt_counted": False}
        if not lost.counted:
            kept.update({"reading_kept": True} if read else {"read": False})
        return self.event(
            claim,
            EventType.REPORT_FAILED if read else EventType.INFERENCE_FAILED,
            Outcome.MINOR_FAILURE,
            error=lost.reason,
            retryable=True,
            **kept,
        )

    @staticmethod
    def _read_in(session: Session, claim: Claim) -> bool:
        """Whether the attempt's reading was audited (its ``inference_completed``)."""
        return any(
            payload.get("attempt") == claim.attempt and "reading" in payload
            for payload in _events_of(session, claim, EventType.INFERENCE_COMPLETED)
        )

    def _answered(
        self, session: Session, rev: Revision, study: Study, tokens: Sequence[str], lease_now: datetime
    ) -> Claim | None:
        """Our claim of ``rev`` whose commit reached the database but whose reply did not (one of ``tokens`` is in
        its ``inference_started``), kept as it is and renewed; None when none of them committed."""
        probe = Claim(rev.id, study.study_uid, study.accession, rev.number, rev.attempts, 0, study.id)
        if not any(
            payload.get("attempt") == rev.attempts and payload.get("claim_token") in tokens
            for payload in _events_of(session, probe, EventType.INFERENCE_STARTED)
        ):
            return None
        job_id = session.scalar(
            sa.select(sa.func.max(Job.id)).where(
                Job.revision_id == rev.id, Job.kind == JOB_KIND, Job.attempt == rev.attempts,
                Job.state == JobState.RUNNING, Job.worker == self.worker,
            )
        )  # fmt: skip
        if job_id is None:  # pragma: no cover - the claim's transaction wrote both
            return None
        claim = Claim(rev.id, study.study_uid, study.accession, rev.number, rev.attempts, int(job_id), study.id)
        session.execute(
            sa.update(Revision)
            .where(*held_by(claim, self.worker))
            .values(claim_expires_at=lease_now + timedelta(seconds=self.settings.broker.claim_timeout_s))
            .execution_options(synchronize_session=False)
        )
        self._lost.pop(rev.id, None)  # a take-over of it that committed recorded its end
        log.info("%s: attempt %d was claimed (its commit reached the database, its reply was lost); kept, not "
                 "claimed again", claim.names(), claim.attempt)  # fmt: skip
        return claim

    def _release(self, session: Session, claim: Claim, now: datetime, **values: Any) -> bool:
        """Apply ``values`` to the revision only while our claim holds; False when it was lost."""
        released = session.execute(
            sa.update(Revision)
            .where(*held_by(claim, self.worker))
            .values(claimed_by=None, claim_expires_at=None, updated_at=now, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(released.rowcount == 1)  # type: ignore[attr-defined]

    def _job_done(self, session: Session, claim: Claim, state: JobState, now: datetime, error: str | None) -> None:
        job = session.get(Job, claim.job_id)
        if job is not None:
            job.state, job.finished_at, job.error = state, now, error

    def finish(
        self, claim: Claim, state: RevisionState, *, reason: str | None = None, outbox_ids: Sequence[int] = ()
    ) -> ProcessResult:
        now = self.clock()
        stamps: dict[str, Any] = {"reported_at": now} if state is RevisionState.REPORTED else {"finished_at": now}
        with self.store.session("finishing a revision", immediate=True) as session:
            if not self._release(session, claim, now, state=state, reason=reason, **stamps):
                log.warning("%s: claim lost before finishing; leaving it to its new holder", claim.names())
                return ProcessResult(Result.NOT_CLAIMED, RevisionState.PROCESSING)
            self._job_done(session, claim, JobState.SUCCEEDED, now, None)
            if state is RevisionState.SKIPPED:
                self.recorder.record(self.event(claim, EventType.STUDY_SKIPPED, reason=reason), session=session)
            following = self._next_revision(session, claim)
        log.info("%s %s (attempt %d)%s", claim.names(), state, claim.attempt, f": {reason}" if reason else "")
        if state.is_final:
            self.observer.finished_in(state.value)
        result = Result.REPORTED if state is RevisionState.REPORTED else Result.SKIPPED
        return ProcessResult(result, state, reason, outbox_ids=tuple(outbox_ids), next_revision=following)

    def failed(self, claim: Claim, error: RadtraceError, *, final: bool = False) -> ProcessResult:
        if not final and (waits_for_space(error) or _database_away(error)):  # no fault of the study: uncounted
            return self.put_back(claim, error, backoff=True)
        now = self.clock()
        max_attempts = self.settings.broker.max_attempts
        retry = not final and is_retryable(error) and claim.attempt < max_attempts
        if retry:
            retry_at = now + self._retry_delay(claim, error)
            reason = error.reason
            values: dict[str, Any] = {
                "state": RevisionState.QUEUED,
                "next_attempt_at": retry_at,
                "reason": retried(claim.attempt, max_attempts, error.reason, retry_at),
            }
        else:
            retry_at = None
            reason = error.reason
            if is_retryable(error):
                reason = f"gave up after {claim.attempt} attempts: {error.reason}"
            values = {"state": RevisionState.FAILED, "reason": reason, "finished_at": now}
        with self.store.session("recording a failed attempt", immediate=True) as session:
            if not self._release(session, claim, now, **values):
                log.warning("%s: claim lost before recording a failure", claim.names())
                return ProcessResult(Result.NOT_CLAIMED, RevisionState.PROCESSING)
            self._job_done(session, claim, JobState.RETRYING if retry else JobState.FAILED, now, error.reason)
            events = [
                self.event(
                    claim,
                    failure_event_type(error),  # report_failed when the drafts could not be built
                    Outcome.MINOR_FAILURE if retry else Outcome.SERIOUS_FAILURE,
                    error=error.reason,
                    retryable=is_retryable(error),
                    next_attempt_at=retry_at.isoformat() if retry_at else None,
                    **stored_details(error),
                )
            ]
            following = None
            if not retry:
                events.append(self.event(claim, EventType.STUDY_FAILED, Outcome.SERIOUS_FAILURE, reason=reason))
                following = self._next_revision(session, claim)
            self.recorder.record_many(events, session=session)
        log.warning("%s attempt %d failed (%s): %s", claim.names(), claim.attempt, values["state"], reason)
        if retry:
            return ProcessResult(Result.RETRY, RevisionState.QUEUED, reason, retry_at)
        self.observer.finished_in(RevisionState.FAILED.value)
        return ProcessResult(Result.FAILED, RevisionState.FAILED, reason, next_revision=following)

    def put_back(self, claim: Claim, error: RadtraceError, *, backoff: bool = False) -> ProcessResult:
        """Give a claimed revision back, its attempt not counted: ``queued`` and due now (or, with ``backoff``, after
        the backoff its tries so far call for: :meth:`_uncounted_delay`), ``attempts`` as before the claim. For a
        read held for a model server that is down when the worker stops (:mod:`radtrace.worker.breaker`), for drafts
        that wait for disk space (:func:`waits_for_space`) and for an attempt the database was away for, back before
        its end was recorded (:func:`_database_away`): an outage is no fault of the study's. Its reason says what it
        waits for, and the failed attempt before it, if any (:mod:`radtrace.worker.revision_reasons`)."""
        now = self.clock()
        with self.store.session("giving a revision back", immediate=True) as session:
            due = now + (self._uncounted_delay(session, claim) if backoff else timedelta(0))
            when = f"; tried again at {due:%H:%M:%S} UTC" if backoff else ""
            why = f"{WAITING}{error.reason}{when}; no attempt counted"
            reason = waiting(why, session.scalar(sa.select(Revision.reason).where(Revision.id == claim.revision_id)))
            values = {"state": RevisionState.QUEUED, "attempts": claim.attempt - 1, "next_attempt_at": due,
                      "reason": reason}  # fmt: skip
            if not self._release(session, claim, now, **values):
                log.warning("%s: claim lost before giving it back", claim.names())
                return ProcessResult(Result.NOT_CLAIMED, RevisionState.PROCESSING)
            self._job_done(session, claim, JobState.FAILED, now, f"not counted: {error.reason}")
            kind, stored = failure_event_type(error), stored_details(error)
            if _database_away(error):  # as its worker records an attempt lost to the database (_lost_end)
                read = self._read_in(session, claim)
                kind = EventType.REPORT_FAILED if read else EventType.INFERENCE_FAILED
                stored = {"reading_kept": True} if read else {"read": False}
            self.recorder.record(
                self.event(claim, kind, Outcome.MINOR_FAILURE, error=error.reason, retryable=True,
                           attempt_counted=False, next_attempt_at=due.isoformat(), **stored),
                session=session,
            )  # fmt: skip
        log.info("%s given back (attempt %d not counted): %s", claim.names(), claim.attempt,
                 reason)  # fmt: skip
        return ProcessResult(Result.RETRY, RevisionState.QUEUED, reason, due)

    def _uncounted_delay(self, session: Session, claim: Claim) -> timedelta:
        """The backoff for an attempt that is not counted: doubling with the revision's tries so far (its jobs),
        as a counted one does with its attempts."""
        tries = session.scalar(
            sa.select(sa.func.count(Job.id)).where(Job.revision_id == claim.revision_id, Job.kind == JOB_KIND)
        )
        return retry_delay(self.settings.broker, int(tries or 1))

    def _retry_delay(self, claim: Claim, error: RadtraceError) -> timedelta:
        """The backoff, or longer when the model server asked for a longer wait (Retry-After), up to
        ``broker.retry_backoff_max_s``: a server's word neither shortens the backoff nor parks a study for a day."""
        backoff = retry_delay(self.settings.broker, claim.attempt)
        asked = retry_after(error)
        if asked is None:
            return backoff
        return max(backoff, min(asked, timedelta(seconds=self.settings.broker.retry_backoff_max_s)))

    def _next_revision(self, session: Session, claim: Claim) -> int | None:
        """The study's next queued revision, which waited for this one to finish."""
        found = session.scalar(
            sa.select(sa.func.min(Revision.number)).where(
                Revision.study_id == claim.study_id,
                Revision.number > claim.number,
                Revision.state == RevisionState.QUEUED,
            )
        )
        return int(found) if found is not None else None

    def event(self, claim: Claim, kind: EventType, outcome: Outcome = Outcome.SUCCESS, **details: Any) -> AuditEvent:
        return claim_event(self.actor, claim, kind, outcome, **details)


def _database_away(error: BaseException) -> bool:
    """Whether a failed attempt's error is the database's outage (:func:`is_database_outage`) that was over by the
    time its end was recorded: the attempt waits, not counted, as one whose end could not be recorded at all."""
    return isinstance(error, StoreUnavailableError) and is_database_outage(error)


def _events_of(session: Session, claim: Claim, kind: EventType) -> list[dict[str, Any]]:
    """The payloads of the revision's ``kind`` events (:func:`radtrace.worker.kept_readings.audited_events`)."""
    events = audited_events(session, [claim.study_uid], (kind.value,)).get(claim.study_uid, [])
    return [payload for _kind, payload in events if payload.get("revision") == claim.number]
