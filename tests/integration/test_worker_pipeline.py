"""The study pipeline on SQLite and PostgreSQL with the tiny model: a queued revision becomes a delivered draft,
once, whatever runs twice, races, dies or fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from radtrace.audit.chain import verify_chain
from radtrace.config import Settings
from radtrace.errors import ModelError, RadtraceError
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.reporting.dispatch.outbox import KIND_FILE
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Job, JobState, OutboxState, Priority, Revision, RevisionState, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline, payload_dir
from worker_support import (
    CountingReader,
    audit_events,
    outbox_rows,
    queue_studies,
    revision_row,
    spool_study,
    worker_settings,
)

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FailingReader:
    """A model that fails the same way every time (e.g. out of GPU memory)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        self.calls += 1
        raise self.error


@pytest.fixture
def wsettings(tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    return worker_settings(tmp_path, str(store.engine.url.render_as_string(hide_password=False)), tiny_model_dir)


@pytest.fixture
def reader(wsettings: Settings) -> StudyReader:
    return StudyReader(wsettings.model, data_dir=wsettings.data_dir)


def _types(store: Store) -> list[str]:
    return [kind for kind, _, _ in audit_events(store)]


def test_a_queued_revision_is_read_reported_and_delivered_once(
    wsettings: Settings, store: Store, reader: StudyReader, tmp_path: Path
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    pipeline = StudyPipeline(wsettings, store, reader, worker="w1")

    result = pipeline.process(study_uid, number)

    assert result.result is Result.REPORTED
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts, rev.claimed_by, rev.reason) == (RevisionState.REPORTED, 1, None, None)
    assert rev.reported_at is not None
    assert rev.sr_sop_instance_uid
    rows = outbox_rows(store)
    drop = tmp_path / "drop" / (rev.sr_sop_instance_uid or "")
    assert sorted(row.destination for row in rows) == [
        f"{drop}{suffix}" for suffix in (".companion.dcm", ".dcm", ".fhir.json", ".hl7")
    ]
    assert {row.kind for row in rows} == {KIND_FILE}
    assert list(result.outbox_ids) == [row.id for row in rows]
    assert _types(store) == ["inference_started", "inference_completed", "report_created"]
    completed = audit_events(store)[1][2]
    assert completed["revision"] == 1
    assert completed["raw_output"]
    assert completed["prompt"] == "Find abnormalities and support devices."
    assert completed["identity"]["weights_sha256"]
    spooled = {row.sha256 for row in _instances(store)}
    assert {item["sha256"] for item in completed["inputs"]} <= spooled
    assert completed["inputs"][0]["role"] == "frontal"

    # running it again (a doorbell rung twice, a redelivered message) changes nothing
    again = pipeline.process(study_uid, number)
    assert again.result is Result.NOT_CLAIMED
    assert [row.id for row in outbox_rows(store)] == [row.id for row in rows]
    assert len(audit_events(store)) == 3

    for outbox_id in result.outbox_ids:
        assert pipeline.dispatch(outbox_id).delivery.state is OutboxState.DELIVERED
    rev = revision_row(store, study_uid)
    assert rev.state is RevisionState.DISPATCHED
    assert rev.finished_at is not None
    sr = pydicom.dcmread(tmp_path / "drop" / f"{rev.sr_sop_instance_uid}.dcm")
    assert sr.StudyInstanceUID == study_uid
    assert sr.VerificationFlag == "UNVERIFIED"
    delivered = len(audit_events(store))
    for outbox_id in result.outbox_ids:  # and dispatching again does nothing
        assert pipeline.dispatch(outbox_id).delivery.attempted is False
    assert len(audit_events(store)) == delivered
    assert revision_row(store, study_uid).state is RevisionState.DISPATCHED
    assert verify_chain(store).ok


def test_two_workers_racing_for_one_revision_read_it_once(
    wsettings: Settings, store: Store, reader: StudyReader
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    workers = [StudyPipeline(wsettings, store, reader, worker=f"w{i}") for i in (1, 2)]
    start = threading.Barrier(2)
    results: list[Result] = []

    def run(pipeline: StudyPipeline) -> None:
        start.wait(timeout=10)
        results.append(pipeline.process(study_uid, number).result)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == sorted([Result.REPORTED, Result.NOT_CLAIMED])
    assert _types(store).count("inference_completed") == 1
    assert revision_row(store, study_uid).attempts == 1


def test_a_stale_claim_is_taken_over_and_a_live_one_is_left_alone(
    wsettings: Settings, store: Store, reader: StudyReader
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    expires = datetime.now(UTC) + timedelta(seconds=3)  # on the database's clock (radtrace.worker.claims)
    _set(store, study_uid, state=RevisionState.PROCESSING, attempts=1, claimed_by="dead-worker",
         claim_expires_at=expires)  # fmt: skip
    pipeline = StudyPipeline(wsettings, store, reader, worker="w2", clock=clock)

    assert pipeline.process(study_uid, number).result is Result.NOT_CLAIMED
    assert revision_row(store, study_uid).claimed_by == "dead-worker"
    clock.advance(31)  # this worker's clock past the expiry: not the clock claims expire on
    assert pipeline.process(study_uid, number).result is Result.NOT_CLAIMED

    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    assert pipeline.process(study_uid, number).result is Result.REPORTED
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.REPORTED, 2, None)
    started = [payload for kind, _, payload in audit_events(store) if kind == "inference_started"]
    assert len(started) == 1
    assert len(started[0].pop("claim_token")) == 32  # its worker's own: a claim whose reply was lost is found by it
    assert started == [{"revision": 1, "attempt": 2, "worker": "w2", "taken_over_from": "dead-worker"}]


class SlowReader:
    """The real reader, slower than the claim timeout (a long generation on a busy GPU)."""

    def __init__(self, reader: StudyReader, seconds: float, during: Callable[[], None]) -> None:
        self.reader, self.seconds, self.during = reader, seconds, during

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        time.sleep(self.seconds)
        self.during()  # while the reading is still going on
        return self.reader.read_each(studies)


def test_a_reading_longer_than_the_claim_timeout_keeps_its_claim(
    tmp_path: Path, store: Store, reader: StudyReader, tiny_model_dir: Path
) -> None:
    url = str(store.engine.url.render_as_string(hide_password=False))
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, broker={"claim_timeout_s": 0.6})
    study_uid, number = spool_study(wsettings, store, make_study())
    other = StudyPipeline(wsettings, store, reader, worker="w2")
    tried: list[Result] = []

    def another_worker_tries() -> None:
        tried.append(other.process(study_uid, number).result)
        rev = revision_row(store, study_uid)
        assert rev.claimed_by == "w1"
        assert rev.claim_expires_at is not None
        assert rev.claim_expires_at > datetime.now(UTC)

    slow = StudyPipeline(wsettings, store, SlowReader(reader, 2.0, another_worker_tries), worker="w1")
    assert slow.process(study_uid, number).result is Result.REPORTED

    assert tried == [Result.NOT_CLAIMED]  # 2 s into a 0.6 s claim, the heartbeat kept it
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.REPORTED, 1, None)
    assert _types(store).count("inference_started") == 1


def test_a_claim_its_own_worker_could_not_release_is_retried_at_once_not_after_the_timeout(
    wsettings: Settings, store: Store, reader: StudyReader
) -> None:
    # The database went down while w1 recorded a failure: the claim stayed, live for 900 s.
    study_uid, number = spool_study(wsettings, store, make_study())
    _set(store, study_uid, state=RevisionState.PROCESSING, attempts=1, claimed_by="w1",
         claim_expires_at=datetime.now(UTC) + timedelta(seconds=900))  # fmt: skip
    assert StudyPipeline(wsettings, store, reader, worker="w2").process(study_uid, number).result is Result.NOT_CLAIMED

    assert StudyPipeline(wsettings, store, reader, worker="w1").process(study_uid, number).result is Result.REPORTED
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.REPORTED, 2, None)


def test_a_worker_lost_on_the_last_attempt_ends_failed(wsettings: Settings, store: Store, reader: StudyReader) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    _set(store, study_uid, state=RevisionState.PROCESSING, attempts=wsettings.broker.max_attempts,
         claimed_by="dead-worker", claim_expires_at=clock.now - timedelta(seconds=1))  # fmt: skip
    result = StudyPipeline(wsettings, store, reader, worker="w2", clock=clock).process(study_uid, number)
    assert result.result is Result.FAILED
    rev = revision_row(store, study_uid)
    assert rev.state is RevisionState.FAILED
    assert rev.reason == "gave up after 3 attempts: the worker was lost (claim expired)"
    assert "study_failed" in _types(store)
    assert "inference_completed" not in _types(store)


def test_a_study_without_a_frontal_image_is_skipped_with_its_reason(
    wsettings: Settings, store: Store, reader: StudyReader
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study(StudySpec(seed=3), [ImageSpec(view="LL")]))
    result = StudyPipeline(wsettings, store, reader).process(study_uid, number)
    assert (result.result, result.reason) == (Result.SKIPPED, "no frontal chest image")
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.reason) == (RevisionState.SKIPPED, "no frontal chest image")
    assert outbox_rows(store) == []
    assert _types(store) == ["inference_started", "study_skipped"]


def test_an_unreadable_spooled_file_fails_the_revision_at_once(
    wsettings: Settings, store: Store, reader: StudyReader
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study(StudySpec(seed=4), [ImageSpec(view="PA")]))
    [instance] = _instances(store)
    (wsettings.spool_dir / instance.path).write_bytes(b"not dicom at all")
    result = StudyPipeline(wsettings, store, reader).process(study_uid, number)
    assert result.result is Result.FAILED
    rev = revision_row(store, study_uid)
    assert rev.state is RevisionState.FAILED
    assert rev.attempts == 1
    assert rev.reason is not None
    assert "does not match its recorded SHA-256" in rev.reason
    events = audit_events(store)
    assert [(kind, outcome) for kind, outcome, _ in events] == [
        ("inference_started", "success"),
        ("inference_failed", "serious_failure"),
        ("study_failed", "serious_failure"),
    ]
    assert events[2][2]["reason"] == rev.reason


def test_a_retryable_error_is_retried_with_backoff_then_fails_after_max_attempts(
    wsettings: Settings, store: Store
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    failing = FailingReader(ModelError("CUDA out of memory"))
    pipeline = StudyPipeline(wsettings, store, failing, clock=clock)

    first = pipeline.process(study_uid, number)
    assert first.result is Result.RETRY
    assert first.retry_at == clock.now + timedelta(seconds=0.2)
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts, rev.next_attempt_at) == (RevisionState.QUEUED, 1, first.retry_at)
    assert pipeline.process(study_uid, number).result is Result.NOT_CLAIMED  # not due yet: no attempt spent
    assert failing.calls == 1

    clock.advance(0.2)
    second = pipeline.process(study_uid, number)
    assert second.result is Result.RETRY
    assert second.retry_at == clock.now + timedelta(seconds=0.4)
    clock.advance(0.4)
    third = pipeline.process(study_uid, number)
    assert third.result is Result.FAILED
    assert failing.calls == 3
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts) == (RevisionState.FAILED, 3)
    assert rev.reason == "gave up after 3 attempts: CUDA out of memory"
    failures = [(outcome, payload["attempt"]) for kind, outcome, payload in audit_events(store)
                if kind == "inference_failed"]  # fmt: skip
    assert failures == [("minor_failure", 1), ("minor_failure", 2), ("serious_failure", 3)]
    assert _types(store)[-1] == "study_failed"
    with store.session() as session:
        jobs = session.scalars(sa.select(Job.state).order_by(Job.attempt)).all()
    assert jobs == [JobState.RETRYING, JobState.RETRYING, JobState.FAILED]


def _set(store: Store, study_uid: str, **values: object) -> None:
    rev = revision_row(store, study_uid)
    with store.session() as session:
        session.execute(sa.update(Revision).where(Revision.id == rev.id).values(**values))


def _instances(store: Store) -> list[sa.Row[tuple[str, str]]]:
    from radtrace.store.models import Instance

    with store.session() as session:
        return list(session.execute(sa.select(Instance.path, Instance.sha256)).all())


def test_a_worker_lost_after_enqueueing_is_finished_without_a_second_reading(
    wsettings: Settings, store: Store, reader: StudyReader
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    pipeline = StudyPipeline(wsettings, store, reader, worker="w1", clock=clock)
    first = pipeline.process(study_uid, number)
    # as if w1 died between writing the outbox rows and setting the state
    _set(store, study_uid, state=RevisionState.PROCESSING, claimed_by="w1", claim_expires_at=clock.now)
    events = len(audit_events(store))

    again = StudyPipeline(wsettings, store, reader, worker="w2", clock=clock).process(study_uid, number)

    assert again.result is Result.REPORTED
    assert again.outbox_ids == first.outbox_ids
    assert [kind for kind, _, _ in audit_events(store)[events:]] == ["inference_started"]
    assert revision_row(store, study_uid).state is RevisionState.REPORTED


def test_a_later_revision_waits_for_the_earlier_and_names_its_sr_as_predecessor(
    wsettings: Settings, store: Store, reader: StudyReader
) -> None:
    pa, lateral = make_study(StudySpec(seed=21))
    study_uid, _ = spool_study(wsettings, store, [pa])
    spool_study(wsettings, store, [lateral], number=2)  # arrived after revision 1 was queued
    pipeline = StudyPipeline(wsettings, store, reader)

    waiting = pipeline.process(study_uid, 2)
    assert (waiting.result, waiting.reason) == (Result.NOT_CLAIMED, "waiting for revision 1")
    assert revision_row(store, study_uid, 2).attempts == 0

    first = pipeline.process(study_uid, 1)
    assert (first.result, first.next_revision) == (Result.REPORTED, 2)
    second = pipeline.process(study_uid, 2)
    assert second.result is Result.REPORTED
    first_sr = revision_row(store, study_uid, 1).sr_sop_instance_uid
    [sr_row] = [
        row
        for row in outbox_rows(store)
        if row.id in second.outbox_ids
        and row.destination.endswith(".dcm")
        and not row.destination.endswith(".companion.dcm")
    ]
    sr = pydicom.dcmread(payload_dir(wsettings) / sr_row.payload_path)
    assert sr.SOPInstanceUID != first_sr
    referenced = [
        item.ReferencedSOPInstanceUID
        for study in sr.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    assert referenced == [first_sr]


def test_stage_latencies_and_queue_depths_are_exposed_for_prometheus(
    wsettings: Settings, store: Store, reader: StudyReader
) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from radtrace.worker.metrics import STAGES, QueueDepthCollector, WorkerMetrics

    metrics = WorkerMetrics()
    metrics.registry.register(QueueDepthCollector(wsettings, store))
    study_uid, number = spool_study(wsettings, store, make_study())
    pipeline = StudyPipeline(wsettings, store, reader, worker="w1", observer=metrics)

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = generate_latest(metrics.registry).decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    before = scrape()
    assert before[("radtrace_revisions", (("state", "queued"),))] == 1
    assert before[("radtrace_store_up", ())] == 1
    assert before[("radtrace_oldest_waiting_seconds", ())] >= 0

    result = pipeline.process(study_uid, number)
    for outbox_id in result.outbox_ids:
        pipeline.dispatch(outbox_id)

    after = scrape()
    counts = {stage: after[("radtrace_stage_seconds_count", (("stage", stage),))] for stage in STAGES}
    assert counts == dict.fromkeys(STAGES, 1.0)
    sums = {stage: after[("radtrace_stage_seconds_sum", (("stage", stage),))] for stage in STAGES}
    assert sums["read"] > 0
    assert sums["total"] >= sums["deliver"]
    assert after[("radtrace_revisions", (("state", "dispatched"),))] == 1
    assert after[("radtrace_revisions", (("state", "queued"),))] == 0
    assert after[("radtrace_outbox_messages", (("state", "delivered"),))] == 4  # SR, companion, HL7, FHIR
    assert after[("radtrace_revisions_finished_total", (("state", "dispatched"),))] == 1


def test_a_batch_claims_the_named_revision_then_stat_then_oldest_and_records_each(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    url = str(store.engine.url.render_as_string(hide_password=False))
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, model={"batch_size": 3, "batch_wait_ms": 0})
    uids = queue_studies(wsettings, store, 5)
    _set(store, uids[4], priority=Priority.STAT)
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    pipeline = StudyPipeline(wsettings, store, reader, worker="gpu0")

    results = pipeline.process_batch(uids[2], 1)

    # the named one first, then the STAT one, then the oldest; one batched read of three
    assert [key for key, _ in results] == [(uids[2], 1), (uids[4], 1), (uids[0], 1)]
    assert all(result.result is Result.REPORTED for _, result in results)
    assert reader.batches == [3]
    for uid in (uids[2], uids[4], uids[0]):
        rev = revision_row(store, uid)
        assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.REPORTED, 1, None)
    for uid in (uids[1], uids[3]):  # not in this batch: still queued, unclaimed
        assert revision_row(store, uid).state is RevisionState.QUEUED
    completed = [payload for kind, _, payload in audit_events(store) if kind == "inference_completed"]
    assert len(completed) == 3
    assert {payload["reading"]["timings"]["batch_size"] for payload in completed} == {3}
    assert {payload["identity"]["dtype"] for payload in completed} == {"float32"}
    assert {len(result.outbox_ids) for _, result in results} == {4}  # SR, companion, HL7, FHIR each
    assert verify_chain(store).ok

    # the next doorbell takes the rest; a batch with nothing more due reads just the named one
    rest = pipeline.process_batch(uids[1], 1)
    assert [key for key, _ in rest] == [(uids[1], 1), (uids[3], 1)]
    assert reader.batches == [3, 2]
    assert pipeline.process_batch(uids[1], 1)[0][1].result is Result.NOT_CLAIMED


def test_a_study_that_fails_in_a_batch_fails_alone(tmp_path: Path, store: Store, tiny_model_dir: Path) -> None:
    url = str(store.engine.url.render_as_string(hide_password=False))
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, model={"batch_size": 4, "batch_wait_ms": 0})
    uids = queue_studies(wsettings, store, 3, seed=60)
    with store.session() as session:  # the middle study's file changed on disk after it was accepted
        path = session.scalar(
            sa.select(Instance.path).join(Study, Instance.study_id == Study.id).where(Study.study_uid == uids[1])
        )
    (wsettings.spool_dir / str(path)).write_bytes(b"not dicom at all")
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))

    results = dict(StudyPipeline(wsettings, store, reader).process_batch(uids[0], 1))

    assert results[(uids[0], 1)].result is Result.REPORTED
    assert results[(uids[2], 1)].result is Result.REPORTED
    assert results[(uids[1], 1)].result is Result.FAILED
    assert "does not match its recorded SHA-256" in str(revision_row(store, uids[1]).reason)
    assert reader.batches == [2]  # the two readable studies were still read together


def test_a_batch_the_model_cannot_read_whole_is_read_one_study_at_a_time(
    tmp_path: Path, store: Store, tiny_model_dir: Path
) -> None:
    url = str(store.engine.url.render_as_string(hide_password=False))
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, model={"batch_size": 4, "batch_wait_ms": 0})
    uids = queue_studies(wsettings, store, 3, seed=70)
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir), fail_above=1)

    results = StudyPipeline(wsettings, store, reader).process_batch(uids[0], 1)

    assert [result.result for _, result in results] == [Result.REPORTED] * 3
    assert reader.batches == [3, 1, 1, 1]  # out of memory at 3, then each alone
    events = audit_events(store)
    assert [kind for kind, _, _ in events].count("inference_failed") == 0


def test_a_doorbell_for_a_revision_already_done_does_not_wait_for_a_batch(
    tmp_path: Path, store: Store, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a worker drained the queue, the doorbells of the revisions it read are no-ops: no batch to fill, so
    no ``batch_wait_ms`` wait each."""
    url = str(store.engine.url.render_as_string(hide_password=False))
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, model={"batch_size": 8, "batch_wait_ms": 1000})
    [done] = queue_studies(wsettings, store, 1, seed=90)
    pipeline = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    assert pipeline.process(done, 1).result is Result.REPORTED
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)

    [(key, result)] = pipeline.process_batch(done, 1)

    assert (key, result.result) == ((done, 1), Result.NOT_CLAIMED)
    assert waits == []


def test_a_shallow_queue_waits_once_for_a_batch_then_reads_what_it_has(
    tmp_path: Path, store: Store, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(store.engine.url.render_as_string(hide_password=False))
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, model={"batch_size": 8, "batch_wait_ms": 300})
    [first] = queue_studies(wsettings, store, 1, seed=80)
    late: list[str] = []
    waits: list[float] = []
    sleep = time.sleep

    def arriving_during_the_wait(seconds: float) -> None:
        # the batch's wait (0.3 s): a study queued meanwhile, whatever the machine's load (a timer was late under it)
        if seconds == 0.3 and threading.current_thread() is threading.main_thread():
            waits.append(seconds)
            late.extend(queue_studies(wsettings, store, 1, seed=81))
        else:
            sleep(seconds)

    monkeypatch.setattr(time, "sleep", arriving_during_the_wait)
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    results = StudyPipeline(wsettings, store, reader).process_batch(first, 1)
    assert [key for key, _ in results] == [(first, 1), (late[0], 1)]  # the study that came during the wait
    assert reader.batches == [2]
    assert waits == [0.3]  # waited once, then read what it had


def test_drafts_that_cannot_be_built_fail_the_study_as_report_failed_not_inference_failed(
    wsettings: Settings, store: Store, reader: StudyReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    import radtrace.reporting.drafts as drafts

    def broken(*args: object, **kwargs: object) -> None:
        raise AttributeError("'FileDataset' object has no attribute 'ImagerPixelSpacing'")

    monkeypatch.setattr(drafts, "build_drafts", broken)
    study_uid, number = spool_study(wsettings, store, make_study(StudySpec(seed=90), [ImageSpec(view="PA")]))
    result = StudyPipeline(wsettings, store, reader).process(study_uid, number)
    assert result.result is Result.FAILED  # permanent: building again from the same reading fails again
    rev = revision_row(store, study_uid)
    assert rev.state is RevisionState.FAILED
    assert "the drafts could not be built: AttributeError" in str(rev.reason)
    kinds = _types(store)
    assert kinds == ["inference_started", "inference_completed", "report_failed", "study_failed"]
