"""Thin Celery tasks: IDs in, one pipeline call, ring what comes next. No logic lives here.

``process_study(study_uid, revision)`` on the GPU queue and ``dispatch(outbox_id)`` on the dispatch
queue; both ``acks_late`` with ``reject_on_worker_lost``. The pipeline's retries are in the database
(``next_attempt_at``); the task only re-rings at that time. An unreachable database (the one error
the pipeline lets through) is retried here with backoff, a bounded number of times; after that the
reconciler rings again once the row is overdue.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from celery.exceptions import Reject, Retry
from celery.signals import worker_shutting_down

from radtrace.config import Settings
from radtrace.errors import RadtraceError, RetryableError
from radtrace.logging import study_key
from radtrace.worker.app import DISPATCH_TASK, PROCESS_TASK
from radtrace.worker.doorbell import ring_dispatch, ring_process
from radtrace.worker.metrics import WorkerMetrics
from radtrace.worker.pipeline import ProcessResult, Result, StudyPipeline, retry_delay

__all__ = ["WorkerRuntime", "register_tasks"]

log = logging.getLogger(__name__)


class WorkerRuntime:
    """What one worker process holds for its life: the store and the pipeline (with the model)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.stopping = threading.Event()  # set on the worker's warm shutdown: finish what is in hand, take no more
        self._pipeline: StudyPipeline | None = None
        self._lock = threading.Lock()

    @property
    def pipeline(self) -> StudyPipeline:
        """The pipeline, built on first use (the model itself loads on the first reading)."""
        with self._lock:
            if self._pipeline is None:
                from radtrace.model.reader import StudyReader
                from radtrace.store.engine import Store
                from radtrace.worker.drafting import drafter_for

                store = Store.from_url(
                    self.settings.store_url,
                    pool_size=self.settings.store.pool_size,
                    connect_timeout_s=self.settings.store.connect_timeout_s,
                )
                reader = StudyReader.for_service(self.settings)
                self._pipeline = StudyPipeline(
                    self.settings, store, reader, observer=self.metrics, drafter=drafter_for(self.settings),
                    stopping=self.stopping.is_set,
                )  # fmt: skip
            return self._pipeline

    def warm(self) -> None:
        """Load the model and warm the drafter now, before taking work (GPU workers): the draft processes start and
        import while the model loads (:meth:`radtrace.worker.drafting.PoolDrafter.warm`), not on the first study's
        clock."""
        drafts_ready = self.pipeline.drafter.warm()
        reader = self.pipeline.reading.reader
        backend = getattr(reader, "backend", None)  # StudyReader builds (loads) it on first access
        log.info("model ready: %s", type(backend).__name__)
        drafts_ready()


def register_tasks(app: Celery, settings: Settings, runtime: WorkerRuntime | None = None) -> WorkerRuntime:
    """Register ``process_study`` and ``dispatch`` on ``app``; returns the runtime they use."""
    held = runtime or WorkerRuntime(settings)
    app.conf.radtrace_runtime = held
    max_retries = settings.broker.max_attempts

    # shared=False: Celery's default adds every task to each app finalised later in the process, so a second app
    # (serve's in-process pieces, tests) took the first app's closures too and warned that a name was taken.
    options: dict[str, Any] = {"bind": True, "acks_late": True, "reject_on_worker_lost": True,
                               "max_retries": max_retries, "shared": False}  # fmt: skip

    def ring_next(key: tuple[str, int], result: ProcessResult) -> None:
        """Ring what one settled revision needs next: its deliveries, its retry, the study's next revision."""
        uid, number = key
        for outbox_id in result.outbox_ids:
            ring_dispatch(settings, outbox_id)
        if result.result is Result.RETRY and result.retry_at is not None:
            ring_process(settings, uid, number, at=result.retry_at)
        if result.next_revision is not None:
            ring_process(settings, uid, result.next_revision)

    def retry_or_leave(task: Any, exc: RetryableError, what: str) -> str:
        """Ask the broker to run ``task`` again after a backoff; where it cannot (the retries spent, or the broker
        itself unreachable, e.g. the embedded broker on a full disk), leave the row to the reconciler, which rings
        it again once overdue, and say so in one line: Celery logged each as a multi-line traceback."""
        if task.request.retries >= max_retries:
            log.warning("%s: %s; retries spent (%d): the reconciler rings it again once overdue", what, exc.reason,
                        max_retries)  # fmt: skip
            return "left to the reconciler"
        countdown = retry_delay(settings.broker, task.request.retries + 1).total_seconds()
        try:
            task.retry(exc=exc, countdown=countdown)
        except Retry:  # queued: said here, or a database outage mid-study left no line at all (Celery's is DEBUG)
            log.warning("%s: %s; tried again in %.0f s (retry %d of %d)", what, exc.reason, countdown,
                        task.request.retries + 1, max_retries)  # fmt: skip
            raise
        except Reject as rejected:  # Celery's answer when the retry's message could not be published
            log.warning("%s: %s; its retry could not be queued (broker: %s): the reconciler rings it again once "
                        "overdue", what, exc.reason, rejected.reason)  # fmt: skip
            return "left to the reconciler"
        raise AssertionError("Task.retry returned")  # pragma: no cover - it raises Retry

    def process_and_ring(study_uid: str, revision: int) -> Result:
        """Process the named revision with a batch of other due ones (and, with draft processes, the batches
        due after it); ring what each needs next as soon as it is settled."""
        return held.pipeline.process_batch(study_uid, revision, on_result=ring_next)[0][1].result

    def process_study(self: Any, study_uid: str, revision: int) -> str:
        try:
            stat = held.pipeline.waiting_stat(besides=(study_uid, revision))
            if stat is not None:  # one waiting STAT study first, whatever this doorbell named
                log.info("a STAT revision goes first")
                process_and_ring(*stat)
            return process_and_ring(study_uid, revision).value
        except RetryableError as exc:
            return retry_or_leave(self, exc, f"study {study_key(study_uid)} revision {revision} not processed")

    def dispatch(self: Any, outbox_id: int) -> str:
        try:
            result = held.pipeline.dispatch(outbox_id)
        except RetryableError as exc:
            return retry_or_leave(self, exc, f"dispatch {outbox_id} not attempted")
        except RadtraceError as exc:  # e.g. no such row: nothing to deliver, nothing to retry
            log.warning("dispatch %s refused: %s", outbox_id, exc.reason)
            return "refused"
        if result.retry_at is not None and result.delivery.attempted:  # its retry
            ring_dispatch(settings, outbox_id, at=result.retry_at)
        for waiting in result.delivery.wake:  # its send freed a slot of its destination: a waiting row goes next
            ring_dispatch(settings, waiting)
        return result.delivery.state.value

    def stop_taking_batches(**_: Any) -> None:
        held.stopping.set()

    worker_shutting_down.connect(stop_taking_batches, weak=False)
    app.task(name=PROCESS_TASK, **options)(process_study)
    app.task(name=DISPATCH_TASK, **options)(dispatch)
    return held
