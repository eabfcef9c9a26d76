"""One study revision end to end, with no Celery in sight: claim, read, record, draft, enqueue, settle.

The database is the truth and every step is safe to run twice (DESIGN.md, principles 1-2):

1. *claim* the revision (:mod:`radtrace.worker.attempts`: one conditional UPDATE, a lost worker's claim is
   taken over, a later revision waits for the study's earlier ones);
2. select the revision's images from the spool (:mod:`radtrace.worker.revision_inputs`), ``model.read`` them: a
   skip ends ``skipped(reason)``; a reading is audited as ``inference_completed`` (model identity, input hashes,
   prompt, raw output) and handed to the drafter (:mod:`radtrace.worker.reading_record`);
3. build and keep the SR, companion, HL7 and FHIR (:mod:`radtrace.worker.drafting`: in the worker's thread,
   or in draft processes while the worker reads the next batch) and write the outbox rows (``Outbox.enqueue``
   keeps existing rows, and the SR UID is derived from the study and revision, so a second run adds nothing);
4. ``reported``, only if the claim is still ours; a failed attempt is retried or ends ``failed(reason)``. An
   attempt whose end the database was away for is taken over by its worker, not counted, and its audited reading
   drafted again (:meth:`radtrace.worker.attempts.RevisionAttempts.lost_to_database`); one a store error of ours
   ended (a statement timeout: :func:`radtrace.worker.database_outage.is_database_outage`) counts.

While a worker holds claims it renews them every third of ``broker.claim_timeout_s`` (one heartbeat for all,
:mod:`radtrace.worker.claims`), so an inference longer than the timeout is not taken over; a worker that dies
stops renewing and its claims expire ``claim_timeout_s`` later at most.

A GPU worker reads in batches (:meth:`StudyPipeline.process_batch`): with the revision its doorbell named it
claims up to ``model.batch_size - 1`` other due ones (STAT first, then oldest), reads them in one batched call
(pictures prepared on a thread pool), and records, finishes or fails each revision on its own. A batch the model
cannot read as a whole is read one study at a time, retried after the backoff when its model server is at fault, or
held while the server does not answer (:mod:`radtrace.worker.batch_reading`).
With draft processes (``model.draft_processes``) it does not wait for a batch's drafts: while they build it claims
and reads the next batch of due revisions, and finishes the previous one after that read, until none is due.

:meth:`StudyPipeline.dispatch` makes one delivery attempt and moves the revision to ``dispatched`` once every
outbox row is delivered (or ``failed`` when one failed for good).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from radtrace.audit.events import Actor, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.errors import (
    RadtraceError,
    ReadsHeldError,
    StoreUnavailableError,
)
from radtrace.logging import patient_values, redacting, study_key
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage, identity_conflict
from radtrace.reporting.dispatch.outbox import Outbox
from radtrace.reporting.draft_store import BuiltDrafts, drafts_root, enqueue_built
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Priority, Revision, RevisionState, Study
from radtrace.worker.attempts import ProcessResult, Result, RevisionAttempts
from radtrace.worker.batch_reading import BatchReading, Reader
from radtrace.worker.claims import (
    Claim,
    ClaimDecision,
    Heartbeat,
    claim_decision,
    claims_kept_alive,
    due_revisions,
    retry_delay,
    worker_name,
)
from radtrace.worker.disk_space import DraftSpace, drafts_size
from radtrace.worker.drafting import Drafter, InlineDrafter, drafts_of
from radtrace.worker.kept_readings import kept_readings
from radtrace.worker.outage import OutageNotice, model_server_key
from radtrace.worker.reading_record import ReadingRecord
from radtrace.worker.revision_inputs import RevisionInputs
from radtrace.worker.settlement import Deliveries, DispatchResult, StageObserver

__all__ = [
    "ClaimDecision",
    "DispatchResult",
    "ProcessResult",
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

Key = tuple[str, int]  # (Study Instance UID, revision number)
OnResult = Callable[[Key, ProcessResult], None]


class _Unobserved:
    def observe(self, stage: str, seconds: float) -> None:
        pass

    def finished_in(self, state: str) -> None:
        pass


@dataclass(frozen=True)
class _InHand:
    """One claimed revision after its batch was read: what it is waiting for, or how its attempt ends."""

    claim: Claim
    outcome: Future[BuiltDrafts] | list[int] | Skipped | RadtraceError
    reading: Reading | None = None
    read_done: float | None = None
    patient_values: tuple[str, ...] = ()  # scrubbed from the log while it is finished (another thread)


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
        drafter: Drafter | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.observer: StageObserver = observer or _Unobserved()
        self.worker = worker or worker_name()
        self.actor = Actor(process=f"radtrace-worker@{self.worker}")
        self.recorder = AuditRecorder(store, self.actor)
        self.clock = clock
        self.outbox = outbox or Outbox(
            store, self.recorder, settings.dispatch, payload_dir(settings), clock=clock, actor=self.actor
        )
        self.deliveries = Deliveries(store, self.outbox, self.recorder, self.observer, clock)
        self.attempts = RevisionAttempts(settings, store, self.recorder, actor=self.actor, worker=self.worker,
                                         clock=clock, observer=self.observer)  # fmt: skip
        self.drafter: Drafter = drafter or InlineDrafter(settings)
        self.inputs = RevisionInputs(settings, store)  # what a claimed revision is read from
        self.recording = ReadingRecord(settings, store, self.recorder, self.attempts, self.outbox, self.drafter)
        self.space = DraftSpace(drafts_root(settings))  # a full disk: revisions wait, not read
        self.stopping = stopping  # the worker is shutting down: take no further batch
        outage = OutageNotice(store, self.recorder, self.actor, self.worker, self.observer, clock,
                              server=model_server_key(settings.model))  # fmt: skip
        self.reading = BatchReading(settings.model, reader, outage, self.observer, clock=clock, stopping=stopping)

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
        self, study_uid: str, revision: int, *, size: int | None = None, on_result: OnResult | None = None
    ) -> list[tuple[Key, ProcessResult]]:
        """Process the named revision and up to ``size - 1`` (``model.batch_size``) other due ones, read together.

        The named revision comes first in the result (whether or not it could be claimed), then each other
        revision taken. The others are taken STAT first, then oldest, each with the same conditional claim; when
        fewer are due than the batch holds, the worker looks once more after ``model.batch_wait_ms`` and then
        reads what it has. Each revision is recorded, finished, skipped or failed on its own: one that fails is
        retried alone, and a batch the model cannot read as a whole (out of memory) is read one study at a time;
        a batch its model server did not read (away, timed out, 429 or 5xx) is retried whole, after the backoff.

        With a drafter that overlaps (draft processes), the drafts of one batch build while the next batch of
        due revisions is claimed and read, for as long as revisions are due, the worker is not stopping, and
        half of ``broker.visibility_timeout_s`` has not passed (so the broker does not hand this doorbell to
        another worker); each batch is finished on a thread as its drafts come back, while the next one is read.
        ``on_result`` hears each revision's result as soon as it is settled (from that thread too).
        """
        size = self.settings.model.batch_size if size is None else size
        results: list[tuple[Key, ProcessResult]] = []

        def settled(key: Key, result: ProcessResult) -> None:
            results.append((key, result))
            if on_result is not None:
                on_result(key, result)

        first = self.attempts.claim(study_uid, revision)
        claims = [first] if isinstance(first, Claim) else []
        tried = {(study_uid, revision)}
        if not isinstance(first, Claim):
            settled((study_uid, revision), first)
        taken: list[Claim] = []  # the following batches' claims (draft processes: see the docstring above)
        try:
            if size > 1:
                self._claim_more(claims, tried, size, settled)
            if claims:
                self._process_claimed(claims, tried, size, settled, taken)
        except StoreUnavailableError as exc:  # their ends could not be recorded: taken over (counted unless an outage)
            ended = {key for key, _ in results}
            held = [claim for claim in [*claims, *taken] if (claim.study_uid, claim.number) not in ended]
            self.attempts.lost_to_database(held, exc)
            raise
        results.sort(key=lambda item: item[0] != (study_uid, revision))  # the named revision first
        return results

    def _process_claimed(
        self, claims: list[Claim], tried: set[Key], size: int, settled: OnResult, taken: list[Claim]
    ) -> None:
        """Read, draft and end the claimed batch, and the following ones (their claims go into ``taken``)."""
        deadline = time.monotonic() + self.settings.broker.visibility_timeout_s / 2
        interval = self.settings.broker.claim_timeout_s / 3
        with (
            claims_kept_alive(claims, self.attempts.renew, interval) as heartbeat,
            ThreadPoolExecutor(1, thread_name_prefix="radtrace-finish") as finisher,
        ):
            finishing: list[Future[None]] = []
            in_hand = self._read_and_submit(claims)
            while self.drafter.overlaps and not self.stopping() and time.monotonic() < deadline:
                following: list[Claim] = []
                try:
                    self._claim_more(following, tried, size, settled)
                finally:
                    taken.extend(following)
                if not following:
                    break
                heartbeat.add(following)
                # the batch in hand is finished as its drafts come back, while the model reads the next one
                finishing.append(finisher.submit(self._settle, in_hand, settled, heartbeat))
                in_hand = self._read_and_submit(following)
            self._settle(in_hand, settled, heartbeat)
            for finished in finishing:
                finished.result()  # an error of the store reaches the task, as in the worker's own thread

    def _claim_more(self, claims: list[Claim], tried: set[Key], size: int, settled: OnResult) -> None:
        """Fill ``claims`` with due revisions up to ``size``, waiting once for a shallow queue when a batch has begun;
        ``tried`` grows by each one tried. One lost to another worker is simply not ours (no result); one that ended
        on being claimed (taken over once too often: failed) is settled."""
        for wait in (False, True):
            if wait:
                if not claims or len(claims) >= size or self.settings.model.batch_wait_ms == 0:
                    return  # no batch to fill (a doorbell for a revision already done), or a full one
                time.sleep(self.settings.model.batch_wait_ms / 1000)
            due = due_revisions(self.store, self.clock(), limit=2 * size, besides=[c.revision_id for c in claims])
            for key in [*self.attempts.lost(), *due]:  # attempts lost to the database first: still claimed by us
                if len(claims) >= size:
                    return
                if key in tried:
                    continue
                tried.add(key)
                taken = self.attempts.claim(*key)
                if isinstance(taken, Claim):
                    claims.append(taken)
                elif taken.result is Result.FAILED:
                    settled(key, taken)

    def _read_and_submit(self, claims: Sequence[Claim]) -> list[_InHand]:
        """Read the claimed revisions together; record each reading and hand it to the drafter. Those the drafts'
        disk has no room for wait, not read (:mod:`radtrace.worker.disk_space`); one whose reading is kept from an
        attempt that could not store its drafts is drafted from it, not read (:mod:`radtrace.worker.kept_readings`)."""
        room, full = self.space.room_for(len(claims))
        waiting = [] if full is None else [_InHand(claim, full) for claim in claims[room:]]
        claims = claims[:room]
        patient: dict[int, tuple[str, ...]] = {}  # revision id -> its patient values, once its headers are read
        inputs = [self._gather(claim, patient) for claim in claims]
        gathered = [(claim, item) for claim, item in zip(claims, inputs, strict=True) if isinstance(item, tuple)]
        kept = kept_readings(self.store, [claim for claim, _ in gathered])
        to_read = [(claim, item) for claim, item in gathered if claim.revision_id not in kept]
        with redacting(*(value for values in patient.values() for value in values)):  # one batch: every study's
            readings = self.reading.read([item for _, item in to_read], [claim for claim, _ in to_read])
        done = time.monotonic()
        in_hand: list[_InHand] = []
        for claim, item in zip(claims, inputs, strict=True):
            values = patient.get(claim.revision_id, ())
            if not isinstance(item, tuple):  # enqueued by an earlier attempt, a conflict, or unreadable
                in_hand.append(_InHand(claim, item, patient_values=values))
                continue
            reused = kept.get(claim.revision_id)
            outcome = reused or readings.pop(0)
            if isinstance(outcome, RadtraceError):  # a view's pixel data this node could not read: retried
                outcome = self.inputs.read_failure(outcome)
            if reused is not None:
                log.info("%s: drafting again from its recorded reading (its drafts could not be stored, or its "
                         "end recorded); not read again", claim.names())  # fmt: skip
            if isinstance(outcome, Reading):
                submit = functools.partial(self.recording.submit, claim, outcome, item[1], record=reused is None)
                with redacting(*values):
                    in_hand.append(_InHand(claim, self._guarded(claim, submit), outcome, done, values))
            else:
                in_hand.append(_InHand(claim, outcome, None, done, values))
        return in_hand + waiting

    def _settle(self, in_hand: Sequence[_InHand], settled: OnResult, heartbeat: Heartbeat) -> None:
        """End each revision's attempt once its drafts are built: enqueue their deliveries and finish it (its
        claim is renewed until then)."""
        for item in in_hand:
            with redacting(*item.patient_values):
                outcome = item.outcome
                if isinstance(outcome, Future):
                    enqueue = functools.partial(self._enqueue_built, item.claim, item.reading, outcome)
                    outcome = self._guarded(item.claim, enqueue)
                heartbeat.drop(item.claim)
                result = self._end_attempt(item.claim, outcome, item.read_done)
            settled((item.claim.study_uid, item.claim.number), result)

    def _enqueue_built(self, claim: Claim, reading: Reading | None, built: Future[BuiltDrafts]) -> list[int]:
        assert reading is not None  # drafts are built from a reading
        drafts = drafts_of(built)
        self.space.noted(drafts_size(drafts.files))
        return enqueue_built(self.settings, self.outbox, claim.revision_id, reading, drafts)

    def _end_attempt(
        self, claim: Claim, outcome: list[int] | Skipped | RadtraceError, read_done: float | None
    ) -> ProcessResult:
        """Finish one claimed revision from its outcome: reported, skipped, or a failed attempt."""
        if isinstance(outcome, ReadsHeldError):  # held for a model server that is down, and the worker stops
            return self.attempts.put_back(claim, outcome)
        if isinstance(outcome, RadtraceError):
            # a spooled file's path in its reason: UIDs, scrubbed from the log (SpoolReadError, SpoolChangedError)
            with redacting(*getattr(outcome, "identifiers", ())):
                return self.attempts.failed(claim, outcome)
        if isinstance(outcome, Skipped):
            return self.attempts.finish(claim, RevisionState.SKIPPED, reason=outcome.reason)
        result = self.attempts.finish(claim, RevisionState.REPORTED, outbox_ids=outcome)
        if result.result is Result.REPORTED and read_done is not None:
            self.observer.observe("report", time.monotonic() - read_done)
        return result

    def _gather(
        self, claim: Claim, patient: dict[int, tuple[str, ...]]
    ) -> tuple[list[StudyImage], list[Any]] | list[int] | Skipped | RadtraceError:
        """What one claimed revision needs read: its images and source datasets; or, when it needs no reading,
        its existing outbox rows (an earlier attempt died after enqueueing), a skip, or the error. Its patient
        values go into ``patient`` once its headers are read, and are scrubbed from the log from then on."""

        def gather() -> tuple[list[StudyImage], list[Any]] | list[int] | Skipped:
            outbox_ids = self.inputs.existing_outbox(claim.revision_id)
            if outbox_ids:
                return outbox_ids
            images, sources = self.inputs.images(claim.revision_id)
            patient[claim.revision_id] = patient_values(sources)
            scope.enter_context(redacting(*patient[claim.revision_id]))
            if (conflict := identity_conflict(images)) is not None:  # two patients' images: never read together
                log.warning("study %s revision %d: %s; not read", study_key(claim.study_uid), claim.number,
                            conflict.reason)  # fmt: skip
                self.recorder.record(self.attempts.event(
                    claim, EventType.PATIENT_IDENTITY_CONFLICT, Outcome.SERIOUS_FAILURE, reason=conflict.reason,
                    identities=conflict.identities,
                ))  # fmt: skip
                return conflict
            return images, sources

        with contextlib.ExitStack() as scope:  # around _guarded: its log of an exception is scrubbed too
            return self._guarded(claim, gather)

    def _guarded(self, claim: Claim, work: Callable[[], _T]) -> _T | RadtraceError:
        """``work()``, with a failure turned into the error that ends this claim's attempt (and no other's)."""
        try:
            return work()
        except RadtraceError as exc:
            return exc
        except Exception as exc:  # a bug must end in failed(reason), not a claim nobody explains
            log.exception("unexpected error processing revision %s", claim.revision_id)
            return RadtraceError(f"unexpected {type(exc).__name__}: {exc}")

    # --- dispatch ------------------------------------------------------------------------------

    def dispatch(self, outbox_id: int) -> DispatchResult:
        """One delivery attempt for one outbox row (if due), then settle its revision's state."""
        return self.deliveries.dispatch(outbox_id)

    def settle(self, outbox_id: int) -> RevisionState | None:
        """See :meth:`Deliveries.settle`."""
        return self.deliveries.settle(outbox_id)
