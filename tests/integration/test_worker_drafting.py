"""Drafts built beside the GPU worker (``model.draft_processes``): the worker reads the next batch while the last
one's drafts build, every revision still ends reported (or retried, when a draft process dies), and the drafts
are the ones the worker would have built itself."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest

from radtrace.audit.chain import verify_chain
from radtrace.config import Settings
from radtrace.errors import DraftProcessLostError, RadtraceError
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.reporting.draft_store import BuiltDrafts
from radtrace.reporting.drafts import build_drafts
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.worker.drafting import (
    DraftJob,
    InlineDrafter,
    PoolDrafter,
    drafter_for,
    drafts_of,
    headers_only,
)
from radtrace.worker.pipeline import Result, StudyPipeline
from reporting_support import reading, source_study
from worker_support import audit_events, outbox_rows, queue_studies, revision_row, worker_settings

pytestmark = pytest.mark.integration

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"


def _settings(tmp_path: Path, store: Store, tiny_model_dir: Path, **model: Any) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    return worker_settings(tmp_path, url, tiny_model_dir, model={"batch_wait_ms": 0, **model})


class GatedExecutor(ThreadPoolExecutor):
    """A draft pool whose jobs wait until ``gate`` is set: a worker that waited for its drafts before reading
    the next batch would never get there."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__(2)
        self.gate = gate

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def gated() -> Any:
            if not self.gate.wait(60):
                raise TimeoutError("the worker never read the next batch while these drafts were building")
            return fn(*args, **kwargs)

        return super().submit(gated)


class RecordingReader:
    """The real reader; opens ``gate`` on its ``open_on``-th batched call and records each call's size. Then, still
    inside that call, it waits (up to 30 s) until ``settled()`` counts ``expect`` revisions: the previous batch is
    finished while this one is being read, not after."""

    def __init__(self, reader: StudyReader, gate: threading.Event, open_on: int, settled: Callable[[], int],
                 expect: int) -> None:  # fmt: skip
        self.reader, self.gate, self.open_on, self.settled, self.expect = reader, gate, open_on, settled, expect
        self.batches: list[int] = []
        self.settled_during_read: int | None = None

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        self.batches.append(len(studies))
        if len(self.batches) == self.open_on:
            self.gate.set()
            deadline = time.monotonic() + 30
            while self.settled() < self.expect and time.monotonic() < deadline:
                time.sleep(0.02)
            self.settled_during_read = self.settled()
        return self.reader.read_each(studies)


def test_the_next_batch_is_read_while_the_last_ones_drafts_build_and_it_is_finished_meanwhile(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    wsettings = _settings(tmp_path, store, tiny_model_dir, batch_size=2)
    uids = queue_studies(wsettings, store, 5, seed=300)
    gate = threading.Event()
    heard: list[tuple[tuple[str, int], Result]] = []
    reader = RecordingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir), gate, open_on=2,
                             settled=lambda: len(heard), expect=2)  # fmt: skip
    drafter = PoolDrafter(wsettings, 2, executor=lambda: GatedExecutor(gate))
    pipeline = StudyPipeline(wsettings, store, reader, worker="gpu0", drafter=drafter)

    try:
        results = pipeline.process_batch(uids[0], 1, on_result=lambda key, result: heard.append((key, result.result)))
    finally:
        drafter.close()

    # one doorbell: three batches, each read before the previous one's drafts were built, and the first batch
    # finished (and heard) while the second one was being read
    assert reader.batches == [2, 2, 1]
    assert reader.settled_during_read == 2
    assert results[0][0] == (uids[0], 1)
    assert sorted(key for key, _ in results) == sorted((uid, 1) for uid in uids)
    assert heard == [(key, result.result) for key, result in results]  # each heard once, as it was settled
    assert {result.result for _, result in results} == {Result.REPORTED}
    for uid in uids:
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.REPORTED, 1, None)
    assert {len(result.outbox_ids) for _, result in results} == {4}
    kinds = [kind for kind, _, _ in audit_events(store)]
    assert kinds.count("inference_completed") == kinds.count("report_created") == 5
    assert verify_chain(store).ok


def test_a_stopping_worker_finishes_the_batch_in_hand_and_takes_no_other(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    wsettings = _settings(tmp_path, store, tiny_model_dir, batch_size=2)
    uids = queue_studies(wsettings, store, 4, seed=320)
    drafter = PoolDrafter(wsettings, 1, executor=lambda: ThreadPoolExecutor(1))
    pipeline = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                             drafter=drafter, stopping=lambda: True)  # fmt: skip
    try:
        results = pipeline.process_batch(uids[0], 1)
    finally:
        drafter.close()

    assert [key for key, _ in results] == [(uids[0], 1), (uids[1], 1)]
    assert [revision_row(store, uid).state for uid in uids] == [RevisionState.REPORTED] * 2 + [RevisionState.QUEUED] * 2


def test_spawned_draft_processes_keep_every_draft_and_queue_every_delivery(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    """Real spawned draft processes (``model.draft_processes = 1``), as the service runs them."""
    for name in ("spawned", "inline"):
        (tmp_path / name).mkdir()
    spawned = _settings(tmp_path / "spawned", store, tiny_model_dir, batch_size=2, draft_processes=1)
    assert isinstance(drafter_for(spawned), PoolDrafter)
    uids = queue_studies(spawned, store, 3, seed=340)
    pool = drafter_for(spawned)
    pipeline = StudyPipeline(spawned, store, StudyReader(spawned.model, data_dir=spawned.data_dir), drafter=pool)
    try:
        results = pipeline.process_batch(uids[0], 1)
    finally:
        pool.close()

    assert [result.result for _, result in results] == [Result.REPORTED] * 3
    for uid in uids:
        sr = pydicom.dcmread(spawned.data_dir / "drafts" / uid / "1" / "sr.dcm")
        assert sr.StudyInstanceUID == uid
        assert sr.VerificationFlag == "UNVERIFIED"
    assert len(outbox_rows(store)) == 3 * 4
    inline = _settings(tmp_path / "inline", store, tiny_model_dir, draft_processes=0)
    assert isinstance(drafter_for(inline), InlineDrafter)


class ProcessKiller:
    """Unpickled in a draft process, it ends that process at once (as the kernel's OOM killer would)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (9,))


class DyingOnce:
    """The real draft processes; the first job kills the process building it."""

    overlaps = True

    def __init__(self, pool: PoolDrafter) -> None:
        self.pool, self.killed = pool, False

    def submit(self, job: DraftJob) -> Future[BuiltDrafts]:
        if not self.killed:
            self.killed = True
            job = dataclasses.replace(job, sources=[*job.sources, cast(Any, ProcessKiller())])
        return self.pool.submit(job)

    def close(self) -> None:
        self.pool.close()


def test_a_draft_process_that_dies_mid_draft_costs_one_retry_and_nothing_else(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    wsettings = _settings(tmp_path, store, tiny_model_dir, batch_size=1, draft_processes=1)
    [uid] = queue_studies(wsettings, store, 1, seed=360)
    drafter = DyingOnce(PoolDrafter(wsettings, 1))
    now = [datetime.now(UTC)]
    pipeline = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                             drafter=drafter, clock=lambda: now[0])  # fmt: skip
    try:
        outcome = pipeline.process(uid, 1)
        assert outcome.result is Result.RETRY
        assert outcome.reason == "the process building the drafts died before it finished"
        rev = revision_row(store, uid)
        assert (rev.state, rev.claimed_by) == (RevisionState.QUEUED, None)
        assert outcome.retry_at is not None
        now[0] = outcome.retry_at + timedelta(seconds=1)

        again = pipeline.process(uid, 1)  # a fresh pool
    finally:
        drafter.close()
    assert again.result is Result.REPORTED
    rev = revision_row(store, uid)
    assert (rev.state, rev.attempts) == (RevisionState.REPORTED, 2)
    kinds = [kind for kind, _, _ in audit_events(store)]
    assert kinds.count("inference_completed") == 2  # the reading is recorded again: at least once, not lost
    assert kinds.count("report_created") == 1
    assert kinds.count("report_failed") == 1  # the reading was fine: its drafts' process died
    assert "inference_failed" not in kinds
    assert verify_chain(store).ok


def test_a_draft_process_killed_between_studies_costs_nothing(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    wsettings = _settings(tmp_path, store, tiny_model_dir, batch_size=1, draft_processes=1)
    [first] = queue_studies(wsettings, store, 1, seed=370)
    pool = PoolDrafter(wsettings, 1)
    pipeline = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                             drafter=pool)  # fmt: skip
    try:
        assert pipeline.process(first, 1).result is Result.REPORTED
        [second] = queue_studies(wsettings, store, 1, seed=371)
        executor: Any = pool._executor
        for pid in list(executor._processes):  # kill -9 the idle draft process
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not executor._broken and time.monotonic() < deadline:
            time.sleep(0.05)
        assert executor._broken

        outcome = pipeline.process(second, 1)
    finally:
        pool.close()
    assert outcome.result is Result.REPORTED
    assert revision_row(store, second).attempts == 1


def test_a_broken_pool_is_a_retryable_error_naming_the_draft_process() -> None:
    future: Future[Any] = Future()
    future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
    with pytest.raises(DraftProcessLostError, match="the process building the drafts died"):
        drafts_of(future)


@pytest.mark.parametrize("name", ["factory", *sorted(path.name for path in REAL.glob("*.dcm"))])
def test_drafts_from_headers_only_equal_drafts_from_whole_images(name: str) -> None:
    """What crosses to a draft process (no pixel or overlay data, pickled) builds byte-identical drafts, and the
    worker's own dataset is not changed."""
    sources = source_study() if name == "factory" else [pydicom.dcmread(REAL / name, force=True)]
    read = reading(sources)
    when = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    settings = Settings().reporting
    pixels = [ds.get("PixelData") for ds in sources]

    whole = build_drafts(read, sources, settings=settings, revision=1, created_at=when)
    sent = [pickle.loads(pickle.dumps(headers_only(ds))) for ds in sources]  # noqa: S301 (our own bytes, as a pool sends them)
    stripped = build_drafts(read, sent, settings=settings, revision=1, created_at=when)

    assert stripped == whole
    assert all("PixelData" not in ds for ds in sent)
    assert [ds.get("PixelData") for ds in sources] == pixels
    assert len(pickle.dumps(sent)) < 20_000 < len(pickle.dumps(sources))
