"""A full disk while the worker keeps a revision's drafts (seen from outside: a 64 MB tmpfs data directory filled by
the drafts): the study waits for space, its attempt not counted, and ends reported once there is space again; no
half-written draft or temporary file is left behind. A folder radtrace may not write fails the study with a reason
naming the setting; another I/O error is retried like any transient failure."""

from __future__ import annotations

import errno
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from radtrace.audit.chain import verify_chain
from radtrace.audit.events import Actor, EventType
from radtrace.audit.queries import AuditQuery, run_query
from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.qa.metrics import read_rule_inputs
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import audit_events, queue_studies, revision_row, worker_settings

pytestmark = pytest.mark.integration


class FailingWrites:
    """``os.fsync`` that fails with ``code`` for regular files under ``folder`` while ``failing`` (the disk is
    full when the written data is flushed: ext4 and tmpfs may also say so at write())."""

    def __init__(self, folder: Path, code: int) -> None:
        self.folder, self.code, self.failing, self.failed = str(folder), code, True, 0
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if self.failing and stat.S_ISREG(os.fstat(fd).st_mode) and target.startswith(self.folder):
            self.failed += 1
            raise OSError(self.code, os.strerror(self.code), target)
        self.real(fd)


@pytest.fixture
def settings(tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    return worker_settings(tmp_path, url, tiny_model_dir, model={"batch_wait_ms": 0})


@pytest.fixture
def clock() -> list[datetime]:
    return [datetime.now(UTC)]


def _pipeline(settings: Settings, store: Store, clock: list[datetime]) -> StudyPipeline:
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    return StudyPipeline(settings, store, reader, worker="gpu0", clock=lambda: clock[0])


def _study_with_failing_writes(
    settings: Settings, store: Store, clock: list[datetime], monkeypatch: pytest.MonkeyPatch, *, seed: int,
    folder: str, code: int,
) -> tuple[str, FailingWrites, StudyPipeline]:  # fmt: skip
    """One queued study, the writes under ``<data_dir>/<folder>`` failing with ``code``, and a pipeline to read it."""
    [uid] = queue_studies(settings, store, 1, seed=seed)
    failing = FailingWrites(settings.data_dir / folder, code)
    monkeypatch.setattr(os, "fsync", failing)
    return uid, failing, _pipeline(settings, store, clock)


def _leftovers(settings: Settings) -> list[str]:
    drafts = settings.data_dir / "drafts"
    return sorted(str(p.relative_to(drafts)) for p in drafts.rglob("*") if p.is_file()) if drafts.is_dir() else []


def test_a_full_disk_holds_the_study_uncounted_until_there_is_space_and_it_ends_reported(
    settings: Settings, store: Store, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, full, pipeline = _study_with_failing_writes(settings, store, clock, monkeypatch, seed=610, folder="drafts",
                                                     code=errno.ENOSPC)  # fmt: skip

    delays = []
    for _ in range(settings.broker.max_attempts + 2):  # longer than the attempts a study is given
        outcome = pipeline.process(uid, 1)
        assert outcome.result is Result.RETRY, outcome
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.QUEUED, 0, None)
        assert rev.reason is not None
        assert rev.reason.startswith(f"waiting: drafts could not be stored under {settings.data_dir}/drafts/"), rev
        assert "No space left on device" in rev.reason
        assert "no attempt counted" in rev.reason
        assert _leftovers(settings) == []  # neither half a revision nor a temporary file
        assert outcome.retry_at is not None
        delays.append((outcome.retry_at - clock[0]).total_seconds())
        assert pipeline.process(uid, 1).result is Result.NOT_CLAIMED  # not before its backoff
        clock[0] = outcome.retry_at + timedelta(seconds=0.01)
    assert full.failed >= settings.broker.max_attempts + 2
    backoff = settings.broker
    assert delays[0] == pytest.approx(backoff.retry_backoff_initial_s)
    assert delays == sorted(delays)
    assert max(delays) == pytest.approx(backoff.retry_backoff_max_s)

    full.failing = False  # space again
    done = pipeline.process(uid, 1)

    assert done.result is Result.REPORTED, done
    rev = revision_row(store, uid)
    assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 1, None)
    assert _leftovers(settings) == [f"{uid}/1/{name}" for name in ("companion.dcm", "oru.hl7", "report.fhir.json",
                                                                   "sr.dcm")]  # fmt: skip
    events = audit_events(store)
    waits = [payload for kind, _, payload in events if kind == "report_failed"]
    assert len(waits) == settings.broker.max_attempts + 2
    assert all(p["attempt_counted"] is False and "No space left on device" in p["error"] for p in waits)
    assert "study_failed" not in [kind for kind, _, _ in events]
    assert [kind for kind, _, _ in events].count("inference_completed") == 1  # read once, drafted again from it
    assert verify_chain(store).ok


def test_a_failed_write_leaves_the_revisions_kept_drafts_whole(
    settings: Settings, store: Store, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later attempt of a revision whose drafts are kept (its deliveries could not be queued) that runs out of
    space keeps the earlier attempt's set as it was: never a new SR beside an old HL7."""
    from radtrace.reporting.dispatch.outbox import ReportFiles
    from radtrace.reporting.draft_store import DraftsDiskFullError, keep_drafts

    def files(text: bytes) -> ReportFiles:
        return ReportFiles(sr=b"SR " + text, hl7=b"HL7 " + text, fhir=b"{}", sr_sop_instance_uid="1.2.3.4")

    root = settings.data_dir / "drafts"
    keep_drafts(root, "1.2.3", 1, files(b"first"))
    calls = [0]
    real = os.fsync

    def full_at_second_file(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            calls[0] += 1
            if calls[0] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", full_at_second_file)
    with pytest.raises(DraftsDiskFullError, match="No space left on device"):
        keep_drafts(root, "1.2.3", 1, files(b"second"))

    assert sorted(p.name for p in (root / "1.2.3" / "1").iterdir()) == ["oru.hl7", "report.fhir.json", "sr.dcm"]
    assert (root / "1.2.3" / "1" / "sr.dcm").read_bytes() == b"SR first"
    assert (root / "1.2.3" / "1" / "oru.hl7").read_bytes() == b"HL7 first"


def test_a_temporary_file_a_killed_writer_left_is_removed_by_the_next_attempt(settings: Settings) -> None:
    from radtrace.reporting.dispatch.outbox import ReportFiles
    from radtrace.reporting.draft_store import keep_drafts

    directory = settings.data_dir / "drafts" / "1.2.3" / "1"
    directory.mkdir(parents=True)
    stale, fresh = directory / ".sr.dcm.4242.tmp", directory / ".oru.hl7.4243.tmp"  # kill -9 mid-write
    for left in (stale, fresh):
        left.write_bytes(b"half")
    os.utime(stale, (0, 0))

    keep_drafts(settings.data_dir / "drafts", "1.2.3", 1, ReportFiles(sr=b"SR", hl7=b"HL7", fhir=b"{}",
                                                                       sr_sop_instance_uid="1.2.3.4"))  # fmt: skip

    assert not stale.exists()  # an hour old: its writer is gone
    assert fresh.exists()  # may be another process's write in progress


def test_a_drafts_folder_radtrace_may_not_write_fails_the_study_naming_the_setting(
    settings: Settings, store: Store, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, _, pipeline = _study_with_failing_writes(settings, store, clock, monkeypatch, seed=620, folder="drafts",
                                                  code=errno.EACCES)  # fmt: skip

    outcome = pipeline.process(uid, 1)

    assert outcome.result is Result.FAILED
    rev = revision_row(store, uid)
    assert (rev.state, rev.attempts) == (RevisionState.FAILED, 1)
    assert rev.reason is not None
    assert "Permission denied" in rev.reason
    assert "setting data_dir or RADTRACE_DATA_DIR" in rev.reason
    assert "radtrace study retry" in rev.reason


def test_an_io_error_keeping_the_drafts_is_retried_and_counted(
    settings: Settings, store: Store, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, broken, pipeline = _study_with_failing_writes(settings, store, clock, monkeypatch, seed=630,
                                                       folder="drafts", code=errno.EIO)  # fmt: skip

    outcome = pipeline.process(uid, 1)
    assert outcome.result is Result.RETRY, outcome
    assert revision_row(store, uid).attempts == 1
    assert outcome.retry_at is not None
    clock[0] = outcome.retry_at + timedelta(seconds=0.01)
    broken.failing = False
    assert pipeline.process(uid, 1).result is Result.REPORTED
    assert revision_row(store, uid).attempts == 2


def test_a_full_disk_under_the_outbox_payloads_waits_uncounted_too(
    settings: Settings, store: Store, clock: list[datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drafts are kept; storing their deliveries' payloads (same disk, usually) runs out of space."""
    uid, full, pipeline = _study_with_failing_writes(settings, store, clock, monkeypatch, seed=640, folder="outbox",
                                                     code=errno.ENOSPC)  # fmt: skip

    for _ in range(settings.broker.max_attempts + 1):
        outcome = pipeline.process(uid, 1)
        assert outcome.result is Result.RETRY, outcome
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts) == (RevisionState.QUEUED, 0)
        assert rev.reason is not None
        assert rev.reason.startswith("waiting: cannot store a payload under "), rev.reason
        assert outcome.retry_at is not None
        clock[0] = outcome.retry_at + timedelta(seconds=0.01)
    assert full.failed > 0

    full.failing = False
    assert pipeline.process(uid, 1).result is Result.REPORTED
    assert revision_row(store, uid).attempts == 1
    events = audit_events(store)
    # read once: each retry drafted again from the recorded reading (before c28547f: read on every retry)
    assert [kind for kind, _, _ in events].count("inference_completed") == 1
    # the reading worked, queueing its report did not: report_failed (before: inference_failed)
    waits = [payload for kind, _, payload in events if kind == "report_failed"]
    assert len(waits) == settings.broker.max_attempts + 1
    assert all(p["reading_kept"] is True and p["attempt_counted"] is False for p in waits), waits
    assert all("No space left on device" in p["error"] for p in waits), waits
    assert "inference_failed" not in [kind for kind, _, _ in events]
    # the audit explorer's event-type filter finds them there; the QA rules count one reading, one study reported
    found = run_query(store, AuditQuery(study_uid=uid, event_type=EventType.REPORT_FAILED), Actor(user="qa"))
    assert len(found.events) == len(waits)
    readings, endings = read_rule_inputs(store, clock[0] - timedelta(days=1))
    assert (len(readings), [failed for _, failed in endings]) == (1, [False])
