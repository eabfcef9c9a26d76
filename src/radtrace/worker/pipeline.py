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

While a worker holds claims it renews them every third of ``broker.claim_timeout_s`` (one heartbeat for all,
:mod:`radtrace.worker.claims`), so an inference longer than the timeout is not taken over; a worker that dies
stops renewing and its claims expire ``claim_timeout_s`` later at most.

A GPU worker reads in batches (:meth:`StudyPipeline.process_batch`): with the revision its doorbell named it
claims up to ``model.batch_size - 1`` other due ones (STAT first, then oldest), reads them in one batched call
(pictures prepared on a thread pool), and records, finishes or fails each revision on its own.

A retryable error puts the revision back to ``queued`` with ``next_attempt_at`` after an exponential
backoff, until ``max_attempts``; a permanent one (or the last attempt) ends ``failed(reason)``. Both are
audited (``inference_failed``, and ``study_failed`` for the end). :meth:`StudyPipeline.dispatch` makes
one delivery attempt and moves the revision to ``dispatched`` once every outbox row is delivered (or
``failed`` when one failed for good).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.errors import DicomInputError, RadtraceError, is_retryable
from radtrace.logging import study_key
from radtrace.model.reading import FindingStatus, Reading
from radtrace.model.study import Skipped, StudyImage, identity_conflict, study_image
from radtrace.reporting.dispatch.outbox import Outbox
from radtrace.reporting.draft_store import build_keep_and_enqueue, failure_event_type
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import (
    Instance,
    Job,
    JobState,
    OutboxMessage,
    Priority,
    Revision,
    RevisionState,
    Study,
)
from radtrace.worker.claims import (
    Claim,
    ClaimDecision,
    claim_decision,
    claim_event,
    claims_kept_alive,
    due_revisions,
    held_by,
    last_received,
    retry_delay,
    seconds_between,
    worker_name,
)
from radtrace.worker.settlement import Deliveries, DispatchResult, StageObserver

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

_T = TypeVar("_T")

JOB_KIND = "process"


class Reader(Protocol):
    """What the pipeline needs of the model: :class:`radtrace.model.reader.StudyReader` is one."""

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        """Read several studies in as few batched calls as the model allows; one outcome per study, in order.
        A study that cannot be read yields its error; an error of the whole call (the model) is raised."""
        ...


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


def payload_dir(settings: Settings) -> Path:
    """Where the outbox keeps its payload files (content-addressed)."""
    return settings.data_dir / "outbox"


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
        self.deliveries = Deliveries(store, self.outbox, self.recorder, self.observer, clock)

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
        return self.process_batch(study_uid, revision, size=1)[0][1]

    def process_batch(
        self, study_uid: str, revision: int, *, size: int | None = None
    ) -> list[tuple[tuple[str, int], ProcessResult]]:
        """Process the named revision and up to ``size - 1`` (``model.batch_size``) other due ones, read together.

        The named revision comes first in the result (whether or not it could be claimed), then each other
        revision taken. The others are taken STAT first, then oldest, each with the same conditional claim; when
        fewer are due than the batch holds, the worker looks once more after ``model.batch_wait_ms`` and then
        reads what it has. Each revision is recorded, finished, skipped or failed on its own: one that fails is
        retried alone, and a batch the model cannot read as a whole (out of memory) is read one study at a time.
        """
        size = self.settings.model.batch_size if size is None else size
        first = self._claim(study_uid, revision)
        results: list[tuple[tuple[str, int], ProcessResult | Claim]] = [((study_uid, revision), first)]
        claims = [first] if isinstance(first, Claim) else []
        if size > 1:
            self._claim_more(claims, results, size)
        finished = dict(zip(claims, self._process_claims(claims), strict=True))
        return [(key, finished[item] if isinstance(item, Claim) else item) for key, item in results]

    def _claim_more(
        self, claims: list[Claim], results: list[tuple[tuple[str, int], ProcessResult | Claim]], size: int
    ) -> None:
        """Fill ``claims`` (and ``results``) with due revisions up to ``size``, waiting once for a shallow queue."""
        for wait in (False, True):
            if wait:
                if len(claims) >= size or self.settings.model.batch_wait_ms == 0:
                    return
                time.sleep(self.settings.model.batch_wait_ms / 1000)
            tried = {key for key, _ in results}
            for key in due_revisions(self.store, self.clock(), limit=2 * size, besides=[c.revision_id for c in claims]):
                if len(claims) >= size:
                    return
                if key in tried:
                    continue
                taken = self._claim(*key)
                if isinstance(taken, Claim):  # one lost to another worker is simply not ours: no result
                    claims.append(taken)
                    results.append((key, taken))

    def _process_claims(self, claims: Sequence[Claim]) -> list[ProcessResult]:
        """Read the claimed revisions together, then record and finish each on its own; results in order."""
        if not claims:
            return []
        outcomes: list[list[int] | Skipped | RadtraceError] = []
        read_done: list[float | None] = []
        interval = self.settings.broker.claim_timeout_s / 3
        with claims_kept_alive(claims, self._renew_claim, interval):
            inputs = [self._gather(claim) for claim in claims]
            readings = self._read_all([item for item in inputs if isinstance(item, tuple)])
            done = time.monotonic()
            for claim, item in zip(claims, inputs, strict=True):
                if not isinstance(item, tuple):  # enqueued by an earlier attempt, a conflict, or unreadable
                    outcomes.append(item)
                    read_done.append(None)
                    continue
                outcome = readings.pop(0)
                read_done.append(done)
                if isinstance(outcome, Reading):
                    record = functools.partial(self._record_and_enqueue, claim, outcome, item[1])
                    outcomes.append(self._guarded(claim, record))
                else:
                    outcomes.append(outcome)
        return [self._settle_attempt(c, o, d) for c, o, d in zip(claims, outcomes, read_done, strict=True)]

    def _gather(self, claim: Claim) -> tuple[list[StudyImage], list[Any]] | list[int] | Skipped | RadtraceError:
        """What one claimed revision needs read: its images and source datasets; or, when it needs no reading,
        its existing outbox rows (an earlier attempt died after enqueueing), a skip, or the error."""

        def gather() -> tuple[list[StudyImage], list[Any]] | list[int] | Skipped:
            outbox_ids = self._existing_outbox(claim.revision_id)
            if outbox_ids:
                return outbox_ids
            images, sources = self._images(claim.revision_id)
            if (conflict := identity_conflict(images)) is not None:  # two patients' images: never read together
                log.warning("study %s revision %d: %s; not read", study_key(claim.study_uid), claim.number,
                            conflict.reason)  # fmt: skip
                self.recorder.record(self._event(claim, EventType.PATIENT_IDENTITY_CONFLICT, Outcome.SERIOUS_FAILURE,
                                                 reason=conflict.reason, identities=conflict.identities))  # fmt: skip
                return conflict
            return images, sources

        return self._guarded(claim, gather)

    def _read_all(self, gathered: list[tuple[list[StudyImage], list[Any]]]) -> list[Reading | Skipped | RadtraceError]:
        """Read every gathered study, batched; when the batch as a whole fails (the model), each study alone."""
        if not gathered:
            return []
        studies = [images for images, _ in gathered]
        started = time.monotonic()
        try:
            outcomes = self.reader.read_each(studies)
        except RadtraceError as exc:
            if len(studies) == 1:
                outcomes = [exc]
            else:
                log.warning("a batch of %d failed as a whole (%s); reading each study alone", len(studies), exc.reason)
                outcomes = [self._read_alone(images) for images in studies]
        except Exception as exc:  # a bug must end in failed(reason), not a claim nobody explains
            log.exception("unexpected error reading a batch of %d", len(studies))
            outcomes = [RadtraceError(f"unexpected {type(exc).__name__}: {exc}")] * len(studies)
        elapsed = time.monotonic() - started
        for _ in studies:
            self.observer.observe("read", elapsed)
        return outcomes

    def _read_alone(self, images: list[StudyImage]) -> Reading | Skipped | RadtraceError:
        try:
            return self.reader.read_each([images])[0]
        except RadtraceError as exc:
            return exc

    def _guarded(self, claim: Claim, work: Callable[[], _T]) -> _T | RadtraceError:
        """``work()``, with a failure turned into the error that ends this claim's attempt (and no other's)."""
        try:
            return work()
        except RadtraceError as exc:
            return exc
        except Exception as exc:  # a bug must end in failed(reason), not a claim nobody explains
            log.exception("unexpected error processing revision %s", claim.revision_id)
            return RadtraceError(f"unexpected {type(exc).__name__}: {exc}")

    def _record_and_enqueue(self, claim: Claim, reading: Reading, sources: list[Any]) -> list[int]:
        self._record_reading(claim, reading)
        return self._enqueue(claim, reading, sources)

    def _settle_attempt(
        self, claim: Claim, outcome: list[int] | Skipped | RadtraceError, read_done: float | None
    ) -> ProcessResult:
        """Finish one claimed revision from its outcome: reported, skipped, or a failed attempt."""
        if isinstance(outcome, RadtraceError):
            return self._failed_attempt(claim, outcome)
        if isinstance(outcome, Skipped):
            return self._finish(claim, RevisionState.SKIPPED, reason=outcome.reason)
        result = self._finish(claim, RevisionState.REPORTED, outbox_ids=outcome)
        if result.result is Result.REPORTED and read_done is not None:
            self.observer.observe("report", time.monotonic() - read_done)
        return result

    def _renew_claim(self, claim: Claim) -> bool:
        """Push our claim's expiry ``claim_timeout_s`` ahead; False when the claim is no longer ours."""
        now = self.clock()
        with self.store.session("renewing a claim", immediate=True) as session:
            renewed = session.execute(
                sa.update(Revision)
                .where(*held_by(claim, self.worker))
                .values(claim_expires_at=now + timedelta(seconds=self.settings.broker.claim_timeout_s))
                .execution_options(synchronize_session=False)
            )
            return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]

    def _claim(self, study_uid: str, number: int) -> Claim | ProcessResult:
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
            waited: dict[str, float | None] = {"start": seconds_between(rev.next_attempt_at or rev.queued_at, now)}
            if attempt == 1:
                waited["complete"] = seconds_between(last_received(session, rev.id), rev.queued_at)
            if decision == "take-over":
                self._close_lost_jobs(session, rev.id, now)
            job = Job(revision_id=rev.id, kind=JOB_KIND, attempt=attempt, state=JobState.RUNNING, worker=self.worker)
            session.add(job)
            session.flush()
            claim = Claim(rev.id, study.study_uid, study.accession, rev.number, attempt, job.id, study.id)
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

    def _record_reading(self, claim: Claim, reading: Reading) -> None:
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

    def _enqueue(self, claim: Claim, reading: Reading, sources: list[Any]) -> list[int]:
        # Drafts are kept under <data_dir>/drafts whether or not a destination is configured (issue 15).
        return build_keep_and_enqueue(
            self.settings, self.outbox, revision_id=claim.revision_id, study_uid=claim.study_uid,
            revision=claim.number, reading=reading, sources=sources,
        )  # fmt: skip

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

    def _finish(
        self, claim: Claim, state: RevisionState, *, reason: str | None = None, outbox_ids: Sequence[int] = ()
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

    def _failed_attempt(self, claim: Claim, error: RadtraceError, *, final: bool = False) -> ProcessResult:
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
                    failure_event_type(error),  # report_failed when the drafts could not be built
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

    def _event(self, claim: Claim, kind: EventType, outcome: Outcome = Outcome.SUCCESS, **details: Any) -> AuditEvent:
        return claim_event(self.actor, claim, kind, outcome, **details)

    # --- dispatch ------------------------------------------------------------------------------

    def dispatch(self, outbox_id: int) -> DispatchResult:
        """One delivery attempt for one outbox row (if due), then settle its revision's state."""
        return self.deliveries.dispatch(outbox_id)

    def settle(self, outbox_id: int) -> RevisionState | None:
        """See :meth:`Deliveries.settle`."""
        return self.deliveries.settle(outbox_id)
