"""A full disk does not cost model readings: the worker looks at the free space of the drafts' file system before it
reads a batch, and a reading whose drafts could not be stored is drafted again from the audit log's copy instead of
being read again.

On a real tmpfs (mounted by the test: CI runs as root; skipped where mount is refused), the data directory full, one
study waiting for 60 s of the worker's default backoff (10 s, doubling): before, each retry read the study again
(decode and model) only to fail storing its drafts, three readings in the 60 s; now none until there is space, and a
reading already made when the disk filled is not made again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from radtrace.audit.chain import verify_chain
from radtrace.config import Settings
from radtrace.errors import RadtraceError
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.worker.pipeline import Result, StudyPipeline
from tests_support import fill_file_system, small_tmpfs
from worker_support import audit_events, queue_studies, revision_row, worker_settings

pytestmark = pytest.mark.integration

WAIT_S = 60.0


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs as the data directory."""
    with small_tmpfs(tmp_path / "radtrace") as mounted:
        yield mounted


@pytest.fixture
def settings(data_dir: Path, tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    # the default backoff: 10 s, doubling, up to 600 s
    return worker_settings(tmp_path, url, tiny_model_dir, model={"batch_wait_ms": 0},
                           broker={"retry_backoff_initial_s": 10.0, "retry_backoff_max_s": 600.0})  # fmt: skip


class CountingReader:
    """The real reader, counting the studies it reads; ``then`` runs after each read (fills the disk)."""

    def __init__(self, reader: StudyReader, then: object = None) -> None:
        self.reader, self.then, self.studies = reader, then, 0

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        self.studies += len(studies)
        outcomes = self.reader.read_each(studies)
        if callable(self.then):
            self.then()
        return outcomes

    def unavailable(self) -> str | None:
        return None


def _wait(pipeline: StudyPipeline, uid: str, clock: list[datetime]) -> list[str]:
    """Ring the revision as the worker would for ``WAIT_S`` of its backoff; the reasons it waited with."""
    started, reasons = clock[0], []
    while clock[0] - started < timedelta(seconds=WAIT_S):
        outcome = pipeline.process(uid, 1)
        assert outcome.result is Result.RETRY, outcome
        rev = revision_row(pipeline.store, uid)
        assert (rev.state, rev.attempts) == (RevisionState.QUEUED, 0)
        reasons.append(str(rev.reason))
        assert outcome.retry_at is not None
        clock[0] = outcome.retry_at + timedelta(seconds=0.01)
    return reasons


def test_a_full_disk_is_waited_out_without_reading_the_study(settings: Settings, store: Store) -> None:
    [uid] = queue_studies(settings, store, 1, seed=650)
    filler = fill_file_system(settings.data_dir)
    reader = CountingReader(StudyReader(settings.model, data_dir=settings.data_dir))
    clock = [datetime.now(UTC)]
    pipeline = StudyPipeline(settings, store, reader, worker="gpu0", clock=lambda: clock[0])

    reasons = _wait(pipeline, uid, clock)

    assert reader.studies == 0, f"{reader.studies} readings during a {WAIT_S:.0f} s full-disk wait"
    assert len(reasons) >= 3
    assert reasons[0].startswith(f"waiting: disk full: {settings.data_dir}/drafts, 0 MB free"), reasons[0]
    assert "not read until there is space" in reasons[0]
    assert "no attempt counted" in reasons[0]

    filler.unlink()  # space again
    assert pipeline.process(uid, 1).result is Result.REPORTED
    assert reader.studies == 1
    rev = revision_row(store, uid)
    assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 1, None)
    kinds = [kind for kind, _, _ in audit_events(store)]
    assert kinds.count("inference_completed") == 1
    assert "study_failed" not in kinds
    assert verify_chain(store).ok


def test_a_reading_whose_drafts_found_the_disk_full_is_drafted_again_without_reading(
    settings: Settings, store: Store
) -> None:
    """The disk fills while the model reads (another program's file): the drafts cannot be stored, and every retry
    drafts from the reading recorded in the audit log."""
    [uid] = queue_studies(settings, store, 1, seed=660)
    fillers: list[Path] = []
    reader = CountingReader(StudyReader(settings.model, data_dir=settings.data_dir))
    reader.then = lambda: fillers.append(fill_file_system(settings.data_dir)) if not fillers else None
    clock = [datetime.now(UTC)]
    pipeline = StudyPipeline(settings, store, reader, worker="gpu0", clock=lambda: clock[0])

    reasons = _wait(pipeline, uid, clock)

    assert reader.studies == 1, f"{reader.studies} readings during a {WAIT_S:.0f} s full-disk wait"
    assert "No space left on device" in reasons[0], reasons[0]  # the reading's drafts found the disk full
    assert all(reason.startswith("waiting: disk full: ") for reason in reasons[1:]), reasons

    fillers[0].unlink()
    assert pipeline.process(uid, 1).result is Result.REPORTED
    assert reader.studies == 1  # the reading made before the disk filled
    events = audit_events(store)
    readings = [payload for kind, _, payload in events if kind == "inference_completed"]
    assert len(readings) == 1
    assert [kind for kind, _, _ in events].count("report_created") == 1
    waits = [payload for kind, _, payload in events if kind == "report_failed"]
    assert waits[0]["reading_kept"] is True  # the reading's own attempt: its drafts found the disk full
    assert all(payload["read"] is False for payload in waits[1:])  # then waited, not read
    assert revision_row(store, uid).state is RevisionState.REPORTED
    assert verify_chain(store).ok
    assert os.path.isfile(settings.data_dir / "drafts" / uid / "1" / "sr.dcm")
