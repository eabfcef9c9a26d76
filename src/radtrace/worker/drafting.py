"""Where a GPU worker's drafts are built: in its own thread, or in a pool of processes beside it.

Building one study's SR, companion, HL7 and FHIR costs about a tenth of a second of CPU (highdicom, pydicom,
hl7apy, all pure Python). Built in the worker's own thread, that time is added to every batch while the model
waits: at batch 256 on a GPU, about 23 s of CPU after an 85 s generate. With ``model.draft_processes`` > 0 the
worker hands each reading to a pool of that many processes (spawn context: no copy of the model or of CUDA
state) and reads the next batch while they build; :class:`~radtrace.worker.pipeline.StudyPipeline` enqueues the
deliveries and finishes each revision when its drafts are back.

A draft process needs no database: it builds and keeps the files (:func:`~radtrace.reporting.draft_store.
build_and_keep`); the worker keeps the claims, records, enqueues and finishes. A draft process that dies
(killed, out of memory) breaks the pool: every draft in it fails with a retryable error (the revision is read
again later, up to ``broker.max_attempts``), and the next batch gets a fresh pool.

A draft process logs as the worker does: it configures radtrace's logging (``logging.format`` and ``level``, the
patient-data filter, warnings captured) when it starts, and builds each study's drafts with that study's
identifiers registered (:func:`radtrace.logging.redacting`): those the worker had registered when it handed the
job over, and those in the job's headers. Without it a library's warning there (pydicom, highdicom, hl7apy) went
to stderr as it was written, the patient's name included.

A draft process ends with its worker, however the worker ends: it watches its parent and exits once it has gone.
Before, a worker killed with ``kill -9`` (out of memory, or ``radtrace serve`` killed outright) left its draft
process (about 240 MB) and multiprocessing's resource tracker running for ever, orphaned; each crash of a worker that
``radtrace serve`` restarted added two more.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings, Settings
from radtrace.errors import DraftProcessLostError
from radtrace.logging import configure_logging, patient_values, redacting, registered
from radtrace.model.reading import Reading
from radtrace.model.study import carry_unparsable, is_bulk
from radtrace.reporting.draft_store import BuiltDrafts, build_and_keep, drafts_root

__all__ = ["DraftJob", "Drafter", "InlineDrafter", "PoolDrafter", "drafter_for", "drafts_of", "headers_only"]

log = logging.getLogger(__name__)

#: How often a draft process looks whether its worker is still there.
PARENT_CHECK_S = 1.0


def headers_only(dataset: Dataset) -> Dataset:
    """A copy of a source image without its pixel and overlay data, for the drafts (they reference an image,
    never carry it): a draft process is not sent megabytes per film. The original is not changed."""
    copy = Dataset({tag: element for tag, element in dataset.items() if not is_bulk(tag)})
    if (meta := getattr(dataset, "file_meta", None)) is not None:
        copy.file_meta = meta
    implicit_vr, little_endian = dataset.original_encoding
    copy.set_original_encoding(implicit_vr, little_endian, dataset.original_character_set)
    carry_unparsable(dataset, copy)  # what was left out as read: the drafts say so
    return copy


@dataclass(frozen=True)
class DraftJob:
    """Everything one study's drafts are built from (picklable: it crosses to a draft process)."""

    study_uid: str
    revision: int
    reading: Reading
    sources: Sequence[Dataset]
    predecessors: Sequence[Dataset]


class Drafter(Protocol):
    """Builds and keeps drafts; ``overlaps`` when it does so while the worker goes on reading."""

    overlaps: bool

    def submit(self, job: DraftJob) -> Future[BuiltDrafts]:
        """Start building ``job``'s drafts; the future holds them, or the error that ends the attempt."""
        ...

    def close(self) -> None:
        """Stop the drafter (waits for drafts in hand)."""
        ...


def _build(reporting: ReportingSettings, root: Path, job: DraftJob) -> BuiltDrafts:
    return build_and_keep(
        reporting, root, study_uid=job.study_uid, revision=job.revision, reading=job.reading, sources=job.sources,
        predecessors=job.predecessors,
    )  # fmt: skip


def _start_draft_process(fmt: str, level: str, worker_pid: int | None = None) -> None:
    """A draft process's initializer: radtrace's logging, as its worker configured it (stderr, the worker's), and a
    thread that ends the process once ``worker_pid`` is no longer its parent (the worker ended, even by SIGKILL)."""
    configure_logging(fmt, level)
    if worker_pid is not None:
        threading.Thread(target=_end_with, args=(worker_pid,), name="radtrace-draft-parent", daemon=True).start()


def _end_with(worker_pid: int) -> None:
    """Exit this process at once when its parent is no longer ``worker_pid`` (re-parented: the worker has ended)."""
    while os.getppid() == worker_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)  # nothing to hand back: the worker that would take it is gone


def _build_redacting(reporting: ReportingSettings, root: Path, job: DraftJob, values: frozenset[str]) -> BuiltDrafts:
    """:func:`_build` in a draft process, with the study's identifiers registered while it builds."""
    with redacting(*values):
        return _build(reporting, root, job)


class InlineDrafter:
    """Builds in the calling thread: the future is done when ``submit`` returns (tests; ``draft_processes = 0``)."""

    overlaps = False

    def __init__(self, settings: Settings) -> None:
        self.reporting = settings.reporting
        self.root = drafts_root(settings)

    def submit(self, job: DraftJob) -> Future[BuiltDrafts]:
        future: Future[BuiltDrafts] = Future()
        try:
            future.set_result(_build(self.reporting, self.root, job))
        except Exception as exc:  # the caller's future.result() raises it, as a pool's would
            future.set_exception(exc)
        return future

    def close(self) -> None:
        pass


class PoolDrafter:
    """Builds in a pool of ``processes`` spawned processes (or the given executor factory, for tests)."""

    overlaps = True

    def __init__(self, settings: Settings, processes: int, *, executor: Any = None) -> None:
        self.reporting = settings.reporting
        self.root = drafts_root(settings)
        self.processes = processes
        self.log_settings = (settings.logging.format, settings.logging.level)
        self._make_executor = executor or self._spawn_pool
        self._executor: Executor | None = None

    def _spawn_pool(self) -> Executor:
        return ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_draft_process,
            initargs=(*self.log_settings, os.getpid()),
        )

    def submit(self, job: DraftJob) -> Future[BuiltDrafts]:
        if self._executor is None:
            self._executor = self._make_executor()
        # the context's registered values do not cross to the draft process: they travel with the job
        values = registered() | frozenset(patient_values(job.sources))
        try:
            return self._executor.submit(_build_redacting, self.reporting, self.root, job, values)
        except BrokenProcessPool:  # a draft process died since the last batch: a fresh pool
            log.warning("a draft process died; starting a new pool of %d", self.processes)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._make_executor()
            return self._executor.submit(_build_redacting, self.reporting, self.root, job, values)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
            self._executor = None


def drafts_of(future: Future[BuiltDrafts]) -> BuiltDrafts:
    """The built drafts, or the error that ends this revision's attempt: a draft process that died is retryable."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise DraftProcessLostError("the process building the drafts died before it finished") from exc


def drafter_for(settings: Settings) -> Drafter:
    """The drafter ``model.draft_processes`` asks for."""
    processes = settings.model.draft_processes
    return PoolDrafter(settings, processes) if processes > 0 else InlineDrafter(settings)
