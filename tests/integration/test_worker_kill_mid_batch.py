"""kill -9 a real ``radtrace worker`` while it reads a batch (four revisions claimed, their requests at the model
server), or between keeping its drafts and committing their outbox rows: once a worker runs again, every revision is
taken over and ends dispatched, the lost attempt counted, with one set of deliveries each; each revision's SR and HL7
carry the SOP Instance UID and control ID they would have had without the kill (derived from the study and
revision), so a report sent twice would be the same report.

The model server is vLLM-like (:func:`worker_support.fake_vllm_server`): in the first test it holds every request
until the kill, so the kill lands inside the read whatever the machine's speed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from radtrace.config import Settings, load_settings
from radtrace.model.reading import ModelIdentity
from radtrace.reporting.hl7 import control_id_for
from radtrace.reporting.sr import sr_uids
from radtrace.store.engine import Store
from radtrace.store.models import Job, OutboxMessage, RevisionState
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.doorbell import ring_process
from worker_support import (
    audit_events,
    completion,
    fake_vllm_server,
    revision_row,
    running_worker,
    spool_study,
    wait_for_state,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "model_outputs"


def _settings(tmp_path: Path, store: Store, url: str, batch_size: int) -> Settings:
    (tmp_path / "drop").mkdir()
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": str(store.engine.url)},
        model={"backend": "vllm", "vllm_url": url, "vllm_model": "m", "batch_size": batch_size,
               "request_timeout_s": 120},
        dispatch={"file_drop_dir": tmp_path / "drop"},
        broker={"claim_timeout_s": 3, "overdue_after_s": 1, "reconcile_interval_s": 1, "max_attempts": 3,
                "retry_backoff_initial_s": 0.2, "retry_backoff_max_s": 1},
    )  # fmt: skip


def _queue(settings: Settings, store: Store, count: int) -> list[str]:
    uids = []
    for index in range(count):
        uid, _ = spool_study(settings, store, make_study(StudySpec(seed=120 + index), [ImageSpec()]))
        uids.append(uid)
        time.sleep(0.002)
    assert ring_process(settings, uids[0], 1)
    return uids


def _until(condition: Callable[[], bool], worker: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, log_file.read_text(errors="replace")[-4000:]
        assert worker.poll() is None, log_file.read_text(errors="replace")[-4000:]
        time.sleep(0.02)


def _kill(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and anything it started (draft processes)
    worker.wait(10)


def _outbox_count(store: Store) -> int:
    with store.session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) or 0)


def _restart_and_check(settings: Settings, store: Store, tmp_path: Path, uids: list[str], *, readings: int) -> None:
    """A second worker: every revision dispatched at attempt 2, delivered once, under the identifiers it always
    gets; ``readings`` inference_completed events in all."""
    second_log = tmp_path / "worker-2.log"
    with running_worker(settings, log_file=second_log):
        for uid in uids:  # the reconciler finds the expired claims and rings them
            revision = wait_for_state(store, uid, {RevisionState.DISPATCHED, RevisionState.FAILED},
                                      timeout=90, log_file=second_log)  # fmt: skip
            assert revision.state is RevisionState.DISPATCHED, revision.reason
            assert revision.attempts == 2  # the lost attempt counts
    with store.session() as session:
        jobs = session.execute(sa.select(Job.revision_id, Job.attempt, Job.state, Job.error).order_by(Job.id)).all()
        rows = session.execute(
            sa.select(OutboxMessage.revision_id, OutboxMessage.destination, OutboxMessage.state, OutboxMessage.attempts)
        ).all()
    for revision_id in {job.revision_id for job in jobs}:
        mine = [(job.attempt, str(job.state), job.error) for job in jobs if job.revision_id == revision_id]
        assert [(attempt, state) for attempt, state, _ in mine] == [(1, "failed"), (2, "succeeded")]
        assert "claim expired" in str(mine[0][2])
    kinds = [(revision_id, destination) for revision_id, destination, _, _ in rows]
    assert len(kinds) == len(set(kinds)) == 4 * len(uids)  # one row per report (SR, companion, HL7, FHIR)
    assert {(str(state), attempts) for _, _, state, attempts in rows} == {("delivered", 1)}
    assert len({revision_id for revision_id, _ in kinds}) == len(uids)
    # what reached the drop: one file per report, named by the identifiers the revision always gets
    dropped = sorted(path.name for path in (tmp_path / "drop").rglob("*") if path.is_file())
    assert len(dropped) == len(rows), dropped
    completed = [payload for kind, _, payload in audit_events(store) if kind == "inference_completed"]
    assert len(completed) == readings
    identity = ModelIdentity.model_validate(completed[0]["identity"])
    for uid in uids:
        sr_uid = sr_uids(uid, 1, identity).sop_instance_uid  # what the revision's SR is called, killed or not
        sr = pydicom.dcmread(tmp_path / "drop" / f"{sr_uid}.dcm")
        assert (sr.StudyInstanceUID, sr.SOPInstanceUID) == (uid, sr_uid)
        hl7 = (tmp_path / "drop" / f"{sr_uid}.hl7").read_bytes()
        assert hl7.split(b"\r")[0].split(b"|")[9].decode() == control_id_for(sr_uid)


def test_a_worker_killed_mid_batch_leaves_every_study_dispatched_once_by_the_next(
    tmp_path: Path, sqlite_store: Store
) -> None:
    text = (FIXTURES / "nv_normal.txt").read_text(encoding="utf-8")
    with fake_vllm_server() as server:
        server.answer = lambda request: None  # hold every request
        settings = _settings(tmp_path, sqlite_store, server.url, batch_size=4)
        uids = _queue(settings, sqlite_store, 4)
        first_log = tmp_path / "worker-1.log"
        with running_worker(settings, log_file=first_log) as first:
            _until(lambda: server.requests >= 4, first, first_log)  # the batch is being read
            assert {revision_row(sqlite_store, uid).state for uid in uids} == {RevisionState.PROCESSING}
            _kill(first)
        assert {revision_row(sqlite_store, uid).state for uid in uids} == {RevisionState.PROCESSING}
        assert _outbox_count(sqlite_store) == 0

        server.answer = lambda request: completion(text)
        server.released.set()  # the held requests end (their client is gone)
        _restart_and_check(settings, sqlite_store, tmp_path, uids, readings=4)  # the killed read recorded nothing


def test_a_worker_killed_between_writing_its_drafts_and_committing_their_outbox_rows(
    tmp_path: Path, sqlite_store: Store
) -> None:
    """The reading is recorded and the drafts kept on disk; the outbox rows are not committed (the test holds the
    database's write lock from the moment the reading is recorded): the next attempt reads again (at least once)
    and writes the same drafts and rows, under the same identifiers."""
    text = (FIXTURES / "nv_normal.txt").read_text(encoding="utf-8")
    with fake_vllm_server() as server:
        server.answer = lambda request: completion(text)
        settings = _settings(tmp_path, sqlite_store, server.url, batch_size=2)
        uids = _queue(settings, sqlite_store, 2)
        drafts = settings.data_dir / "drafts"

        def recorded() -> bool:
            return sum(kind == "inference_completed" for kind, _, _ in audit_events(sqlite_store)) == 2

        first_log = tmp_path / "worker-1.log"
        lock = sqlite3.connect(settings.store_url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
        try:
            with running_worker(settings, log_file=first_log) as first:
                _until(recorded, first, first_log)
                lock.execute("BEGIN IMMEDIATE")  # the outbox rows cannot be committed now
                _until(lambda: all(any((drafts / uid).rglob("sr.dcm")) for uid in uids), first, first_log)
                time.sleep(1)  # the worker is waiting for the lock, its drafts kept
                _kill(first)
        finally:
            if lock.in_transaction:
                lock.execute("ROLLBACK")
            lock.close()
        assert _outbox_count(sqlite_store) == 0, "the outbox was committed before the lock: the test missed its window"
        assert {revision_row(sqlite_store, uid).state for uid in uids} == {RevisionState.PROCESSING}
        _restart_and_check(settings, sqlite_store, tmp_path, uids, readings=4)  # read again: at least once
