"""A spooled file this node cannot read (missing, an I/O error, a stale NFS handle, permission lost on a shared data
directory) is the node's failure, not the study's: the attempt counts and is retried, so the study is reported once
the file can be read again (on another node, or after a remount), and fails after ``broker.max_attempts`` with the
reason naming the file relative to ``data_dir`` when no node ever can. A file that is read but is not what was
accepted stays the study's (failed at once: test_worker_pipeline.py).

Before, revision_inputs raised every ``OSError`` as a DicomInputError: a spool file renamed away for a moment, or an
NFS mount gone stale on one node, failed the study for good at its first attempt.
"""

from __future__ import annotations

import errno
import io
import logging
import socket
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.config import Settings
from radtrace.errors import RadtraceError
from radtrace.logging import PatientDataFilter, study_key
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Job, RevisionState, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker import revision_inputs
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import audit_events, revision_row, spool_study, worker_settings

pytestmark = pytest.mark.integration

SPEC = StudySpec(seed=71, patient_name="SPOOLREAD^QUENTINA", patient_id="SPQX77123")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def wsettings(tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    return worker_settings(tmp_path, str(store.engine.url.render_as_string(hide_password=False)), tiny_model_dir)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The worker's log as a site's handler writes it (with the patient-data filter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PatientDataFilter())
    radtrace_log = logging.getLogger("radtrace")
    radtrace_log.addHandler(handler)
    try:
        yield stream
    finally:
        radtrace_log.removeHandler(handler)


def _spooled(settings: Settings, store: Store, study_uid: str) -> Path:
    with store.session() as session:
        [path] = session.scalars(
            sa.select(Instance.path).join(Study, Instance.study_id == Study.id).where(Study.study_uid == study_uid)
        ).all()
    return settings.spool_dir / str(path)


def _job_errors(store: Store) -> list[str | None]:
    with store.session() as session:
        return list(session.scalars(sa.select(Job.error).order_by(Job.id)))


def _reason_for(settings: Settings, file: Path, why: str) -> str:
    return f"spooled file {file.relative_to(settings.data_dir)} cannot be read on {socket.gethostname()}: {why}"


def test_a_spool_file_missing_on_this_node_is_retried_and_reported_once_it_is_back(
    wsettings: Settings, store: Store, log_lines: io.StringIO
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study(SPEC, [ImageSpec(view="PA")]))
    file = _spooled(wsettings, store, study_uid)
    away = file.with_name("elsewhere")
    file.rename(away)  # an NFS client that does not see it yet, a remount in progress
    clock = Clock()
    pipeline = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                             clock=clock)  # fmt: skip

    first = pipeline.process(study_uid, number)

    expected = _reason_for(wsettings, file, "No such file or directory")
    assert (first.result, first.reason) == (Result.RETRY, expected)
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts) == (RevisionState.QUEUED, 1)  # counted, and queued again
    [(_kind, outcome, failed)] = [event for event in audit_events(store) if event[0] == "inference_failed"]
    assert (outcome, failed["error"], failed["retryable"]) == ("minor_failure", expected, True)
    assert _job_errors(store) == [expected]

    away.rename(file)  # back
    clock.advance(60)
    second = pipeline.process(study_uid, number)

    assert second.result is Result.REPORTED
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts) == (RevisionState.REPORTED, 2)
    logged = log_lines.getvalue()
    assert "No such file or directory" in logged
    assert study_key(study_uid) in logged
    for identifier in (study_uid, file.stem, "SPOOLREAD", "SPQX77123"):  # a log line names the study by its key
        assert identifier not in logged


def test_a_spool_file_no_node_can_read_fails_the_study_after_max_attempts_naming_it(
    wsettings: Settings, store: Store
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study(SPEC, [ImageSpec(view="PA")]))
    file = _spooled(wsettings, store, study_uid)
    file.unlink()
    clock = Clock()
    pipeline = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                             clock=clock)  # fmt: skip

    results = []
    for _ in range(wsettings.broker.max_attempts):
        results.append(pipeline.process(study_uid, number).result)
        clock.advance(60)

    assert results == [Result.RETRY] * (wsettings.broker.max_attempts - 1) + [Result.FAILED]
    rev = revision_row(store, study_uid)
    expected = _reason_for(wsettings, file, "No such file or directory")
    assert rev.state is RevisionState.FAILED
    assert rev.reason == f"gave up after {wsettings.broker.max_attempts} attempts: {expected}"
    assert "SPOOLREAD" not in rev.reason
    assert "SPQX77123" not in rev.reason
    assert [kind for kind, _, _ in audit_events(store)][-1] == "study_failed"


@pytest.mark.parametrize(
    ("code", "why"),
    [(errno.EIO, "Input/output error"), (errno.ESTALE, "Stale file handle"), (errno.EACCES, "Permission denied")],
)
def test_a_node_local_read_error_is_retried_not_blamed_on_the_study(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch, code: int, why: str
) -> None:
    # EIO and ESTALE need a failing disk or NFS server, and root reads a mode-000 file: the read raises them here
    study_uid, number = spool_study(wsettings, store, make_study(SPEC, [ImageSpec(view="PA")]))
    file = _spooled(wsettings, store, study_uid)
    hashed = revision_inputs._file_sha256
    failing = {"left": 1}

    def flaky(path: Path) -> str:
        if failing["left"]:
            failing["left"] -= 1
            raise OSError(code, why, str(path))
        return hashed(path)

    monkeypatch.setattr(revision_inputs, "_file_sha256", flaky)
    clock = Clock()
    pipeline = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                             clock=clock)  # fmt: skip

    first = pipeline.process(study_uid, number)
    assert (first.result, first.reason) == (Result.RETRY, _reason_for(wsettings, file, why))
    clock.advance(60)
    assert pipeline.process(study_uid, number).result is Result.REPORTED
    assert revision_row(store, study_uid).attempts == 2


class _VanishingReader:
    """The model, with the frontal film renamed away once between its header's read and its pixel data's."""

    def __init__(self, reader: StudyReader, file: Path) -> None:
        self.reader, self.file, self.renamed = reader, file, False

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        if self.renamed:
            return self.reader.read_each(studies)
        self.renamed = True
        self.file.rename(self.file.with_name("elsewhere"))
        try:
            return self.reader.read_each(studies)
        finally:
            self.file.with_name("elsewhere").rename(self.file)


def test_pixel_data_this_node_could_not_read_as_the_model_read_is_retried(wsettings: Settings, store: Store) -> None:
    study_uid, number = spool_study(wsettings, store, make_study(SPEC, [ImageSpec(view="PA")]))
    file = _spooled(wsettings, store, study_uid)
    clock = Clock()
    reader = _VanishingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir), file)
    pipeline = StudyPipeline(wsettings, store, reader, clock=clock)

    first = pipeline.process(study_uid, number)

    assert (first.result, first.reason) == (Result.RETRY, _reason_for(wsettings, file, "No such file or directory"))
    clock.advance(60)
    assert pipeline.process(study_uid, number).result is Result.REPORTED
    assert revision_row(store, study_uid).attempts == 2


def test_a_spool_file_changed_on_disk_fails_at_once_naming_it_and_no_uid_in_the_log(
    wsettings: Settings, store: Store, log_lines: io.StringIO
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study(SPEC, [ImageSpec(view="PA")]))
    file = _spooled(wsettings, store, study_uid)
    file.write_bytes(b"not dicom at all")  # read, and not what was accepted: the study's, on any node

    result = StudyPipeline(wsettings, store, _NoModel()).process(study_uid, number)

    changed = f"spooled file {file.relative_to(wsettings.data_dir)} does not match its recorded SHA-256"
    assert (result.result, result.reason) == (Result.FAILED, changed)
    assert revision_row(store, study_uid).attempts == 1
    logged = log_lines.getvalue()
    assert "does not match its recorded SHA-256" in logged
    for identifier in (study_uid, file.stem):  # before, the line named the SOP Instance UID
        assert identifier not in logged


class _NoModel:
    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        raise AssertionError("a study whose spooled file changed is not read")


def test_a_lateral_this_node_could_not_read_is_retried_not_left_out_of_the_draft(
    wsettings: Settings, store: Store, log_lines: io.StringIO
) -> None:
    """Before, a lateral whose file could not be read as the model read it (a stale NFS handle, a remount) was
    dropped with "reading the frontal alone": the draft was made without it, for good, and the warning's traceback
    named the host path with the study's and the image's UIDs. A lateral that is no readable image stays left out
    (test_worker_pipeline); one this node could not read is retried like a frontal."""
    datasets = make_study(SPEC, [ImageSpec(view="PA"), ImageSpec(view="LL")])
    study_uid, number = spool_study(wsettings, store, datasets)
    lateral = wsettings.spool_dir / study_uid / f"{datasets[1].SOPInstanceUID}.dcm"
    assert lateral.is_file()
    clock = Clock()
    model = StudyReader(wsettings.model, data_dir=wsettings.data_dir)
    model.profile = type("WithLateral", (type(model.profile),), {"takes_lateral": True})()  # shown both views
    reader = _VanishingReader(model, lateral)
    pipeline = StudyPipeline(wsettings, store, reader, clock=clock)

    first = pipeline.process(study_uid, number)

    assert (first.result, first.reason) == (Result.RETRY, _reason_for(wsettings, lateral, "No such file or directory"))
    assert "reading the frontal alone" not in log_lines.getvalue()
    clock.advance(60)
    assert pipeline.process(study_uid, number).result is Result.REPORTED
    assert revision_row(store, study_uid).attempts == 2
    completed = [payload for kind, _outcome, payload in audit_events(store) if kind == "inference_completed"]
    assert len(completed) == 1
    assert "reading the frontal alone" not in log_lines.getvalue()
    assert str(datasets[1].SOPInstanceUID) not in log_lines.getvalue()
