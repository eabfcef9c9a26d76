"""One study revision end to end, with no Celery in sight: claim, read, record, draft, enqueue, settle.

The database is the truth and every step is safe to run twice (DESIGN.md, principles 1-2):

1. *claim* (one conditional UPDATE): ``queued`` (and due) → ``processing`` with ``claimed_by`` and
   ``claim_expires_at``, ``attempts`` + 1, a ``jobs`` row and ``inference_started`` in the same
   transaction. A revision already ``processing`` under a live claim, or past ``processing``, is left
   alone; one whose claim expired (its worker died) is taken over, and that lost attempt counts, so a
   study that kills its worker ends ``failed`` after ``broker.max_attempts``. A later revision waits
   until the study's earlier ones are past ``processing`` (its SR names theirs as predecessors); the
   result of the earlier one says which revision to ring next;
2. select the revision's images from the spool, ``model.read`` them: a skip ends ``skipped(reason)``;
   a reading is audited as ``inference_completed`` (model identity, input hashes, prompt, raw output);
3. build SR, HL7 and FHIR and write the outbox rows (``Outbox.enqueue`` keeps existing rows, and the SR
   UID is derived from the study and revision, so a second run adds nothing);
4. ``reported``, only if the claim is still ours.

While a worker holds a claim it renews it every third of ``broker.claim_timeout_s`` (the heartbeat), so an
inference longer than the timeout is not taken over; a worker that dies stops renewing and its claim
expires ``claim_timeout_s`` later at most.

A retryable error puts the revision back to ``queued`` with ``next_attempt_at`` after an exponential
backoff, until ``max_attempts``; a permanent one (or the last attempt) ends ``failed(reason)``. Both are
audited (``inference_failed``, and ``study_failed`` for the end). :meth:`StudyPipeline.dispatch` makes
one delivery attempt and moves the revision to ``dispatched`` once every outbox row is delivered (or
``failed`` when one failed for good).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import BrokerSettings, Settings
from radtrace.errors import DicomInputError, RadtraceError, is_retryable
from radtrace.model.reading import FindingStatus, Reading
from radtrace.model.study import Skipped, StudyImage, study_image
from radtrace.reporting.dispatch.outbox import Delivery, Outbox
from radtrace.reporting.draft_store import build_keep_and_enqueue
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import (
    Instance,
    Job,
    JobState,
    OutboxMessage,
    OutboxState,
    Priority,
    Revision,
    RevisionState,
    Study,
)

__all__ = [
    "ClaimDecision",
    "DispatchResult",
    "ProcessResult",
    "Reader",
    "Result",
    "StageObserver",
    "StudyPipeline",
    "claim_decision",
    "payload_dir",
    "retry_delay",
    "worker_name",
]

log = logging.getLogger(__name__)

JOB_KIND = "process"
ClaimDecision = Literal["claim", "take-over", "not-due", "busy", "done"]


class Reader(Protocol):
    """What the pipeline needs of the model: :class:`radtrace.model.reader.StudyReader` is one."""

    def read(self, images: Sequence[StudyImage]) -> Reading | Skipped: ...


class StageObserver(Protocol):
    """Where stage latencies go: :class:`radtrace.worker.metrics.WorkerMetrics` is one."""

    def observe(self, stage: str, seconds: float) -> None: ...

    def finished_in(self, state: str) -> None: ...


class _Unobserved:
    def observe(self, stage: str, seconds: float) -> None:
        pass

    def finished_in(self, state: str) -> None:
        pass


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
class DispatchResult:
    """One ``dispatch`` call: the delivery attempt, the revision's state after it, and when to ring again."""

    delivery: Delivery
    revision_state: RevisionState | None
    retry_at: datetime | None = None


@dataclass(frozen=True)
class _Claim:
    revision_id: int
    study_uid: str
    accession: str | None
    number: int
    attempt: int
    job_id: int
    study_id: int


def worker_name() -> str:
    """This process as a claim holder: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def payload_dir(settings: Settings) -> Path:
    """Where the outbox keeps its payload files (content-addressed)."""
    return settings.data_dir / "outbox"


def claim_decision(
    state: RevisionState,
    claim_expires_at: datetime | None,
    next_attempt_at: datetime | None,
    now: datetime,
    *,
    ours: bool = False,
) -> ClaimDecision:
    """Whether a worker may take a revision now (pure).

    ``ours``: the live claim is this worker's own. A worker processes one revision at a time, so finding its
    own claim means an earlier attempt of its died without releasing it (the database went away while it
    recorded the failure): take it over now rather than wait ``claim_timeout_s`` for it to lapse.
    """
    if state is RevisionState.QUEUED:
        return "claim" if next_attempt_at is None or next_attempt_at <= now else "not-due"
    if state is RevisionState.PROCESSING:
        return "take-over" if ours or claim_expires_at is None or claim_expires_at <= now else "busy"
    if state is RevisionState.RECEIVING:
        return "not-due"
    return "done"


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end``; None when either is unknown."""
    return None if start is None or end is None else (end - start).total_seconds()


def retry_delay(settings: BrokerSettings, attempts: int) -> timedelta:
    """Delay before the next attempt after ``attempts`` failed ones: doubling from the initial, capped."""
    seconds = settings.retry_backoff_initial_s * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, settings.retry_backoff_max_s))


class StudyPipeline:
    """Processes revisions and settles deliveries; one per worker process (the reader holds the model)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        reader: Reader,
        *,
        outbox: Outbox | None = None,
        worker: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        observer: StageObserver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.reader = reader
        self.observer: StageObserver = observer or _Unobserved()
        self.worker = worker or worker_name()
        self.actor = Actor(process=f"radtrace-worker@{self.worker}")
        self.recorder = AuditRecorder(store, self.actor)
        self.clock = clock
        self.outbox = outbox or Outbox(
            store, self.recorder, settings.dispatch, payload_dir(settings), clock=clock, actor=self.actor
        )

    # --- process -------------------------------------------------------------------------------

    def waiting_stat(self, besides: tuple[str, int]) -> tuple[str, int] | None:
        """The STAT revision queued longest and due now, other than ``besides``: (study UID, number), or None.

        A worker reads it before the revision its doorbell named, so STAT studies jump the queue on any
        broker (the embedded one has no message priorities).
        """
        now = self.clock()
        with self.store.session("looking for STAT revisions") as session:
            row = session.execute(
                sa.select(Study.study_uid, Revision.number)
                .join(Study, Revision.study_id == Study.id)
                .where(
                    Revision.state == RevisionState.QUEUED,
                    Revision.priority == Priority.STAT,
                    sa.or_(Revision.next_attempt_at.is_(None), Revision.next_attempt_at <= now),
                    sa.not_(sa.and_(Study.study_uid == besides[0], Revision.number == besides[1])),
                )
                .order_by(Revision.queued_at, Revision.id)
                .limit(1)
            ).first()
        return None if row is None else (row[0], row[1])

    def process(self, study_uid: str, revision: int) -> ProcessResult:
        """Process one revision if it is ours to process (see the module docstring)."""
        claimed = self._claim(study_uid, revision)
        if isinstance(claimed, ProcessResult):
            return claimed
        try:
            with self._claim_kept_alive(claimed):
                outcome, read_done = self._read_and_enqueue(claimed)
        except RadtraceError as exc:
            return self._failed_attempt(claimed, exc)
        except Exception as exc:  # a bug must end in failed(reason), not a claim nobody explains
            log.exception("unexpected error processing revision %s", claimed.revision_id)
            return self._failed_attempt(claimed, RadtraceError(f"unexpected {type(exc).__name__}: {exc}"))
        if isinstance(outcome, Skipped):
            return self._finish(claimed, RevisionState.SKIPPED, reason=outcome.reason)
        result = self._finish(claimed, RevisionState.REPORTED, outbox_ids=outcome)
        if result.result is Result.REPORTED and read_done is not None:
            self.observer.observe("report", time.monotonic() - read_done)
        return result

    def _read_and_enqueue(self, claimed: _Claim) -> tuple[list[int] | Skipped, float | None]:
        """Read the revision's images and write its drafts to the outbox: the outbox row IDs (or the skip), and
        when the reading ended (``time.monotonic()``; None when an earlier attempt had already enqueued)."""
        outbox_ids = self._existing_outbox(claimed.revision_id)
        if not outbox_ids:  # an earlier attempt that died after enqueueing needs no second reading
            images, sources = self._images(claimed.revision_id)
            started = time.monotonic()
            outcome = self.reader.read(images)
            read_done = time.monotonic()
            self.observer.observe("read", read_done - started)
            if isinstance(outcome, Skipped):
                return outcome, read_done
            self._record_reading(claimed, outcome)
            return self._enqueue(claimed, outcome, sources), read_done
        return outbox_ids, None

    @contextlib.contextmanager
    def _claim_kept_alive(self, claim: _Claim) -> Iterator[None]:
        """Renew the claim every third of ``claim_timeout_s`` while the body runs (the heartbeat)."""
        stop = threading.Event()
        interval = self.settings.broker.claim_timeout_s / 3

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    if not self._renew_claim(claim):
                        log.warning("revision %s: claim lost while processing", claim.revision_id)
                        return
                except RadtraceError as exc:  # the database is away: the claim may lapse, the finish will tell
                    log.warning("revision %s: claim not renewed: %s", claim.revision_id, exc.reason)

        thread = threading.Thread(target=beat, name=f"radtrace-claim-{claim.revision_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _renew_claim(self, claim: _Claim) -> bool:
        """Push our claim's expiry ``claim_timeout_s`` ahead; False when the claim is no longer ours."""
        now = self.clock()
        with self.store.session("renewing a claim", immediate=True) as session:
            renewed = session.execute(
                sa.update(Revision)
                .where(*self._ours(claim))
                .values(claim_expires_at=now + timedelta(seconds=self.settings.broker.claim_timeout_s))
                .execution_options(synchronize_session=False)
            )
            return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]

    def _ours(self, claim: _Claim) -> tuple[sa.ColumnElement[bool], ...]:
        """The conditions under which the revision is still claimed by this attempt of this worker."""
        return (
            Revision.id == claim.revision_id,
            Revision.state == RevisionState.PROCESSING,
            Revision.claimed_by == self.worker,
            Revision.attempts == claim.attempt,
        )

    def _claim(self, study_uid: str, number: int) -> _Claim | ProcessResult:
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
            decision = claim_decision(
                rev.state, rev.claim_expires_at, rev.next_attempt_at, now, ours=rev.claimed_by == self.worker
            )
            if decision not in ("claim", "take-over"):
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
            taken = session.execute(
                sa.update(Revision)
                .where(Revision.id == rev.id, Revision.state == rev.state, Revision.attempts == rev.attempts)
                .values(
                    state=RevisionState.PROCESSING,
                    attempts=rev.attempts + 1,
                    claimed_by=self.worker,
                    claim_expires_at=now + timedelta(seconds=self.settings.broker.claim_timeout_s),
                    next_attempt_at=None,
                    started_at=rev.started_at or now,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]  # another worker claimed it first
                return ProcessResult(Result.NOT_CLAIMED, RevisionState.PROCESSING)
            attempt = rev.attempts + 1
            waited: dict[str, float | None] = {"start": _seconds(rev.next_attempt_at or rev.queued_at, now)}
            if attempt == 1:
                waited["complete"] = _seconds(self._last_received(session, rev.id), rev.queued_at)
            if decision == "take-over":
                self._close_lost_jobs(session, rev.id, now)
            job = Job(revision_id=rev.id, kind=JOB_KIND, attempt=attempt, state=JobState.RUNNING, worker=self.worker)
            session.add(job)
            session.flush()
            claim = _Claim(rev.id, study.study_uid, study.accession, rev.number, attempt, job.id, study.id)
            self.recorder.record(
                self._event(
                    claim,
                    EventType.INFERENCE_STARTED,
                    worker=self.worker,
                    taken_over_from=rev.claimed_by if decision == "take-over" else None,
                ),
                session=session,
            )
        self._observe(waited)
        if decision == "take-over" and attempt > self.settings.broker.max_attempts:
            reason = f"gave up after {attempt - 1} attempts: the worker was lost (claim expired)"
            return self._failed_attempt(claim, RadtraceError(reason), final=True)
        return claim

    def _observe(self, durations: dict[str, float | None]) -> None:
        for stage, seconds in durations.items():
            if seconds is not None:
                self.observer.observe(stage, seconds)

    @staticmethod
    def _last_received(session: Session, revision_id: int) -> datetime | None:
        """When the revision's last instance arrived."""
        return session.scalar(sa.select(sa.func.max(Instance.received_at)).where(Instance.revision_id == revision_id))

    def _close_lost_jobs(self, session: Session, revision_id: int, now: datetime) -> None:
        session.execute(
            sa.update(Job)
            .where(Job.revision_id == revision_id, Job.kind == JOB_KIND, Job.state == JobState.RUNNING)
            .values(state=JobState.FAILED, finished_at=now, error="worker lost: claim expired")
            .execution_options(synchronize_session=False)
        )

    def _existing_outbox(self, revision_id: int) -> list[int]:
        with self.store.session("reading the outbox") as session:
            rows = session.scalars(
                sa.select(OutboxMessage.id).where(OutboxMessage.revision_id == revision_id).order_by(OutboxMessage.id)
            )
            return list(rows)

    def _images(self, revision_id: int) -> tuple[list[StudyImage], list[Any]]:
        """The study's instances up to this revision, the newest version of each SOP instance."""
        with self.store.session("selecting images") as session:
            rev = session.get(Revision, revision_id)
            assert rev is not None  # claimed a moment ago; revisions are never deleted
            rows = session.execute(
                sa.select(Instance.sop_instance_uid, Instance.version, Instance.path, Instance.sha256)
                .join(Revision, Instance.revision_id == Revision.id)
                .where(Instance.study_id == rev.study_id, Revision.number <= rev.number)
                .order_by(Instance.sop_instance_uid, Instance.version)
            ).all()
        newest = {sop: (path, digest) for sop, _, path, digest in rows}
        if not newest:
            raise DicomInputError("the revision has no instances")
        images: list[StudyImage] = []
        for sop, (path, digest) in sorted(newest.items()):
            try:
                data = (self.settings.spool_dir / path).read_bytes()
            except OSError as exc:
                raise DicomInputError(f"spooled instance {sop} cannot be read: {exc.strerror}") from exc
            if hashlib.sha256(data).hexdigest() != digest:  # changed on disk since it was accepted
                raise DicomInputError(f"spooled instance {sop} does not match its recorded SHA-256")
            images.append(study_image(data))
        return images, [image.dataset for image in images]

    def _record_reading(self, claim: _Claim, reading: Reading) -> None:
        identity = reading.identity
        present = [f.label for f in reading.findings if f.status is FindingStatus.PRESENT]
        self.recorder.record(
            self._event(
                claim,
                EventType.INFERENCE_COMPLETED,
                model_name=identity.model_name,
                model_version=identity.revision or identity.weights_sha256,
                labels=present,
                identity=identity.model_dump(mode="json"),
                inputs=[
                    {"sop_instance_uid": i.sop_instance_uid, "sha256": i.sha256, "role": i.role, "view": i.view}
                    for i in reading.images
                ],
                prompt=identity.prompt,
                raw_output=reading.raw_text,
                reading=json.loads(reading.to_json()),
            )
        )

    def _enqueue(self, claim: _Claim, reading: Reading, sources: list[Any]) -> list[int]:
        # Drafts are kept under <data_dir>/drafts whether or not a destination is configured (issue 15).
        return build_keep_and_enqueue(
            self.settings, self.outbox, revision_id=claim.revision_id, study_uid=claim.study_uid,
            revision=claim.number, reading=reading, sources=sources,
        )  # fmt: skip

    def _release(self, session: Session, claim: _Claim, now: datetime, **values: Any) -> bool:
        """Apply ``values`` to the revision only while our claim holds; False when it was lost."""
        released = session.execute(
            sa.update(Revision)
            .where(*self._ours(claim))
            .values(claimed_by=None, claim_expires_at=None, updated_at=now, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(released.rowcount == 1)  # type: ignore[attr-defined]

    def _job_done(self, session: Session, claim: _Claim, state: JobState, now: datetime, error: str | None) -> None:
        job = session.get(Job, claim.job_id)
        if job is not None:
            job.state, job.finished_at, job.error = state, now, error

    def _finish(
        self, claim: _Claim, state: RevisionState, *, reason: str | None = None, outbox_ids: Sequence[int] = ()
    ) -> ProcessResult:
        now = self.clock()
        stamps: dict[str, Any] = {"reported_at": now} if state is RevisionState.REPORTED else {"finished_at": now}
        with self.store.session("finishing a revision", immediate=True) as session:
            if not self._release(session, claim, now, state=state, reason=reason, **stamps):
                log.warning("revision %s: claim lost before finishing; leaving it to its new holder", claim.revision_id)
                return ProcessResult(Result.NOT_CLAIMED, RevisionState.PROCESSING)
            self._job_done(session, claim, JobState.SUCCEEDED, now, None)
            if state is RevisionState.SKIPPED:
                self.recorder.record(self._event(claim, EventType.STUDY_SKIPPED, reason=reason), session=session)
            following = self._next_revision(session, claim)
        log.info("revision %s %s (attempt %d)", claim.revision_id, state, claim.attempt)
        if state.is_final:
            self.observer.finished_in(state.value)
        result = Result.REPORTED if state is RevisionState.REPORTED else Result.SKIPPED
        return ProcessResult(result, state, reason, outbox_ids=tuple(outbox_ids), next_revision=following)

    def _failed_attempt(self, claim: _Claim, error: RadtraceError, *, final: bool = False) -> ProcessResult:
        now = self.clock()
        max_attempts = self.settings.broker.max_attempts
        retry = not final and is_retryable(error) and claim.attempt < max_attempts
        if retry:
            retry_at = now + retry_delay(self.settings.broker, claim.attempt)
            values: dict[str, Any] = {"state": RevisionState.QUEUED, "next_attempt_at": retry_at}
            reason = error.reason
        else:
            retry_at = None
            reason = error.reason
            if is_retryable(error):
                reason = f"gave up after {claim.attempt} attempts: {error.reason}"
            values = {"state": RevisionState.FAILED, "reason": reason, "finished_at": now}
        with self.store.session("recording a failed attempt", immediate=True) as session:
            if not self._release(session, claim, now, **values):
                log.warning("revision %s: claim lost before recording a failure", claim.revision_id)
                return ProcessResult(Result.NOT_CLAIMED, RevisionState.PROCESSING)
            self._job_done(session, claim, JobState.RETRYING if retry else JobState.FAILED, now, error.reason)
            events = [
                self._event(
                    claim,
                    EventType.INFERENCE_FAILED,
                    Outcome.MINOR_FAILURE if retry else Outcome.SERIOUS_FAILURE,
                    error=error.reason,
                    retryable=is_retryable(error),
                    next_attempt_at=retry_at.isoformat() if retry_at else None,
                )
            ]
            following = None
            if not retry:
                events.append(self._event(claim, EventType.STUDY_FAILED, Outcome.SERIOUS_FAILURE, reason=reason))
                following = self._next_revision(session, claim)
            self.recorder.record_many(events, session=session)
        log.warning("revision %s attempt %d failed (%s): %s", claim.revision_id, claim.attempt, values["state"], reason)
        if retry:
            return ProcessResult(Result.RETRY, RevisionState.QUEUED, reason, retry_at)
        self.observer.finished_in(RevisionState.FAILED.value)
        return ProcessResult(Result.FAILED, RevisionState.FAILED, reason, next_revision=following)

    def _next_revision(self, session: Session, claim: _Claim) -> int | None:
        """The study's next queued revision, which waited for this one to finish."""
        found = session.scalar(
            sa.select(sa.func.min(Revision.number)).where(
                Revision.study_id == claim.study_id,
                Revision.number > claim.number,
                Revision.state == RevisionState.QUEUED,
            )
        )
        return int(found) if found is not None else None

    def _event(
        self,
        claim: _Claim,
        kind: EventType,
        outcome: Outcome = Outcome.SUCCESS,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        labels: Sequence[str] = (),
        **details: Any,
    ) -> AuditEvent:
        payload = {"revision": claim.number, "attempt": claim.attempt}
        payload.update({key: value for key, value in details.items() if value is not None})
        return AuditEvent(
            kind,
            self.actor,
            outcome,
            study_uid=claim.study_uid,
            accession=claim.accession,
            model_name=model_name,
            model_version=model_version,
            labels=tuple(label for label in labels if "," not in label),
            payload=payload,
        )

    # --- dispatch ------------------------------------------------------------------------------

    def dispatch(self, outbox_id: int) -> DispatchResult:
        """One delivery attempt for one outbox row (if due), then settle its revision's state."""
        delivery = self.outbox.deliver(outbox_id)
        state = self.settle(outbox_id)
        retry_at = None
        if delivery.state is OutboxState.PENDING:
            with self.store.session("reading an outbox row") as session:
                retry_at = session.scalar(sa.select(OutboxMessage.next_attempt_at).where(OutboxMessage.id == outbox_id))
        return DispatchResult(delivery, state, retry_at)

    def settle(self, outbox_id: int) -> RevisionState | None:
        """``reported`` → ``dispatched`` once every row of the revision is delivered, or ``failed`` when a row
        failed for good and none is pending. Returns the revision's state."""
        now = self.clock()
        with self.store.session("settling a revision", immediate=True) as session:
            rev = session.scalar(
                sa.select(Revision)
                .join(OutboxMessage, OutboxMessage.revision_id == Revision.id)
                .where(OutboxMessage.id == outbox_id)
            )
            if rev is None:
                return None
            if rev.state is not RevisionState.REPORTED:
                return rev.state
            durations: dict[str, float | None] = {}
            rows = session.execute(
                sa.select(OutboxMessage.kind, OutboxMessage.destination, OutboxMessage.state, OutboxMessage.last_error)
                .where(OutboxMessage.revision_id == rev.id)
                .order_by(OutboxMessage.id)
            ).all()
            if any(row.state is OutboxState.PENDING for row in rows):
                return rev.state
            failed = [row for row in rows if row.state is OutboxState.FAILED]
            if failed:
                reason = "; ".join(f"delivery to {r.kind} {r.destination} failed: {r.last_error}" for r in failed)
                rev.state, rev.reason, rev.finished_at = RevisionState.FAILED, reason, now
                claim = _Claim(
                    rev.id, rev.study.study_uid, rev.study.accession, rev.number, rev.attempts, 0, rev.study_id
                )
                self.recorder.record(
                    self._event(claim, EventType.STUDY_FAILED, Outcome.SERIOUS_FAILURE, reason=reason),
                    session=session,
                )
            else:
                rev.state, rev.finished_at = RevisionState.DISPATCHED, now
                durations = {"deliver": _seconds(rev.reported_at, now),
                             "total": _seconds(self._last_received(session, rev.id), now)}  # fmt: skip
            state = rev.state
        self._observe(durations)
        self.observer.finished_in(state.value)
        return state
