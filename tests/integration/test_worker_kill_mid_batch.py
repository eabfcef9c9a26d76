"""kill -9 a real ``radtrace worker`` while it reads a batch (four revisions claimed, their requests at the model
server): once a worker runs again, every revision is taken over and ends dispatched, the lost attempt counted, with
one set of deliveries each; the drafts of each revision have the SOP Instance UIDs and HL7 control ID they would have
had without the kill (derived from the study and revision), so a report sent twice would be the same report.

The model server is vLLM-like (:func:`worker_support.fake_vllm_server`): it holds every request until the kill, so
the kill lands inside the read whatever the machine's speed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from radtrace.config import load_settings
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


def test_a_worker_killed_mid_batch_leaves_every_study_dispatched_once_by_the_next(
    tmp_path: Path, sqlite_store: Store
) -> None:
    text = (FIXTURES / "nv_normal.txt").read_text(encoding="utf-8")
    (tmp_path / "drop").mkdir()
    with fake_vllm_server() as server:
        server.answer = lambda request: None  # hold every request
        settings = load_settings(
            data_dir=tmp_path / "radtrace",
            store={"url": str(sqlite_store.engine.url)},
            model={"backend": "vllm", "vllm_url": server.url, "vllm_model": "m", "batch_size": 4,
                   "request_timeout_s": 120},
            dispatch={"file_drop_dir": tmp_path / "drop"},
            broker={"claim_timeout_s": 3, "overdue_after_s": 1, "reconcile_interval_s": 1, "max_attempts": 3,
                    "retry_backoff_initial_s": 0.2, "retry_backoff_max_s": 1},
        )  # fmt: skip
        uids = []
        for index in range(4):
            uid, _ = spool_study(settings, sqlite_store, make_study(StudySpec(seed=120 + index), [ImageSpec()]))
            uids.append(uid)
            time.sleep(0.002)
        assert ring_process(settings, uids[0], 1)

        first_log = tmp_path / "worker-1.log"
        with running_worker(settings, log_file=first_log) as first:
            deadline = time.monotonic() + 60
            while server.requests < 4:  # the batch is being read
                assert time.monotonic() < deadline, first_log.read_text(errors="replace")[-4000:]
                assert first.poll() is None, first_log.read_text(errors="replace")[-4000:]
                time.sleep(0.1)
            assert {revision_row(sqlite_store, uid).state for uid in uids} == {RevisionState.PROCESSING}
            os.killpg(first.pid, signal.SIGKILL)  # the worker and anything it started
            first.wait(10)
        assert {revision_row(sqlite_store, uid).state for uid in uids} == {RevisionState.PROCESSING}
        with sqlite_store.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)) == 0

        server.answer = lambda request: completion(text)
        server.released.set()  # the held requests end (their client is gone)
        second_log = tmp_path / "worker-2.log"
        with running_worker(settings, log_file=second_log):
            for uid in uids:  # the reconciler finds the expired claims and rings them
                revision = wait_for_state(sqlite_store, uid, {RevisionState.DISPATCHED, RevisionState.FAILED},
                                          timeout=90, log_file=second_log)  # fmt: skip
                assert revision.state is RevisionState.DISPATCHED, revision.reason
                assert revision.attempts == 2  # the lost attempt counts

    with sqlite_store.session() as session:
        jobs = session.execute(sa.select(Job.revision_id, Job.attempt, Job.state, Job.error).order_by(Job.id)).all()
        rows = session.execute(
            sa.select(OutboxMessage.revision_id, OutboxMessage.destination, OutboxMessage.state, OutboxMessage.attempts)
        ).all()
    for revision_id in {job.revision_id for job in jobs}:
        mine = [(job.attempt, str(job.state), job.error) for job in jobs if job.revision_id == revision_id]
        assert [(attempt, state) for attempt, state, _ in mine] == [(1, "failed"), (2, "succeeded")]
        assert "claim expired" in str(mine[0][2])
    kinds = [(revision_id, destination) for revision_id, destination, _, _ in rows]
    assert len(kinds) == len(set(kinds)) == 16  # one row per report (SR, companion, HL7, FHIR) and destination
    assert {(str(state), attempts) for _, _, state, attempts in rows} == {("delivered", 1)}
    assert len({revision_id for revision_id, _ in kinds}) == 4
    # what reached the drop: one file per report, named by the identifiers the revision always gets
    dropped = sorted(path.name for path in (tmp_path / "drop").rglob("*") if path.is_file())
    assert len(dropped) == len(rows), dropped
    readings = [payload for kind, _, payload in audit_events(sqlite_store) if kind == "inference_completed"]
    assert len(readings) == 4  # each study read once: the killed read recorded nothing
    identity = ModelIdentity.model_validate(readings[0]["identity"])
    for uid in uids:
        sr_uid = sr_uids(uid, 1, identity).sop_instance_uid  # what the revision's SR is called, killed or not
        sr = pydicom.dcmread(tmp_path / "drop" / f"{sr_uid}.dcm")
        assert (sr.StudyInstanceUID, sr.SOPInstanceUID) == (uid, sr_uid)
        hl7 = (tmp_path / "drop" / f"{sr_uid}.hl7").read_bytes()
        assert hl7.split(b"\r")[0].split(b"|")[9].decode() == control_id_for(sr_uid)
