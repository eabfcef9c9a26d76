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

A worker warms its drafter at start, before it takes a study (:meth:`PoolDrafter.warm`, from
:meth:`radtrace.worker.tasks.WorkerRuntime.warm`, while the model loads): the draft processes are spawned and import
what a study's drafts import on first use (:func:`warm_drafting`: highdicom, hl7apy's v2.5.1 library, the FHIR
resource models). Before, the first study after a start waited for all of it: about 4 s of its time to
"reported" on a loaded 2-core machine (bench/first_draft.py), the draft process's start, its imports and first build.

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
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings, Settings
from radtrace.errors import DraftProcessLostError
from radtrace.logging import configure_logging, patient_values, redacting, registered
from radtrace.model.reading import Reading
from radtrace.model.study import carry_unparsable, is_bulk
from radtrace.reporting.draft_store import BuiltDrafts, build_and_keep, drafts_root

__all__ = [
    "DraftJob",
    "Drafter",
    "InlineDrafter",
    "PoolDrafter",
    "drafter_for",
    "drafts_of",
    "headers_only",
    "warm_drafting",
]

log = logging.getLogger(__name__)

#: How often a draft process looks whether its worker is still there.
PARENT_CHECK_S = 1.0
#: The HL7 version of the ORU draft (radtrace.reporting.hl7): hl7apy loads its library on the first message.
_HL7_VERSION = "2.5.1"
#: highdicom's cached readers of the standard's tables (highdicom._standard_utils), each read on an SR's first build:
#: the module-attribute map is 22 MB of JSON, 0.5 s and more of the first study's drafts.
_HIGHDICOM_TABLES = ("get_sop_class_iod_map", "get_iod_module_map", "get_module_attribute_map")
#: The FHIR R4B models a draft's Bundle validates (radtrace.reporting.fhir), its resources and their elements:
#: fhir.resources imports each on the first validation that meets it.
_FHIR_MODELS = (
    "Patient", "Device", "Observation", "DiagnosticReport", "Annotation", "Attachment", "CodeableConcept", "Coding",
    "HumanName", "Identifier", "Quantity", "Reference",
)  # fmt: skip


def warm_drafting() -> None:
    """Import now what building a study's first drafts imports on first use: the builders (highdicom, hl7apy,
    fhir.resources, by :mod:`radtrace.reporting.drafts`), hl7apy's v2.5.1 library, the FHIR models a draft's Bundle
    holds, and ``datetime.strptime``'s module; and read the DICOM standard's tables highdicom checks an SR against
    (which modules an IOD has, which attributes a module has: JSON it reads once, on its first SR); so that the first
    study's drafts cost what any study's do. Builds nothing and writes nothing."""
    import hl7apy
    from fhir.resources.R4B import get_fhir_model_class
    from highdicom import _standard_utils as highdicom_standard

    import radtrace.reporting.drafts  # noqa: F401  # imported by build_and_keep when it first builds

    datetime.strptime("20260101", "%Y%m%d")  # its first call imports _strptime
    hl7apy.load_library(_HL7_VERSION)
    for table in _HIGHDICOM_TABLES:  # cached once read; ~0.5 s of the first study's drafts (the 22 MB module table)
        load = getattr(highdicom_standard, table, None)
        if callable(load):  # highdicom's own (0.28): a version without one only loses its warm-up
            load()
    for name in _FHIR_MODELS:
        get_fhir_model_class(name)


def _warm_draft_process() -> int:
    """A draft process's warm-up job (:meth:`PoolDrafter.warm`): its pid, once warm."""
    warm_drafting()
    return os.getpid()


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

    def warm(self) -> Callable[[], None]:
        """Start getting ready for the first drafts (at the worker's start, before it takes a study); the function
        returned waits until ready."""
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

    def warm(self) -> Callable[[], None]:
        warm_drafting()  # in the worker's own process: it builds the drafts
        return lambda: None

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

    def warm(self) -> Callable[[], None]:
        """Spawn the draft processes now and warm each (:func:`warm_drafting`); the function returned waits for them
        and logs how long it took. A process that fails to warm up is logged, not raised: its first draft imports
        what it needs, as before."""
        if self._executor is None:
            self._executor = self._make_executor()
        started = time.monotonic()
        warming = [self._executor.submit(_warm_draft_process) for _ in range(self.processes)]

        def ready() -> None:
            try:
                pids = {future.result() for future in warming}
            except Exception as exc:  # a process that died warming: the pool is rebuilt on the first submit
                log.warning("the draft processes could not be warmed (%s: %s); the first drafts warm them",
                            type(exc).__name__, exc)  # fmt: skip
                return
            log.info("draft processes ready: %d warmed in %.1f s", len(pids), time.monotonic() - started)

        return ready

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
