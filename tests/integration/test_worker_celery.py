"""Real Celery workers in subprocesses: the doorbell brings a queued study to a delivered SR through Redis and
through the embedded SQLite broker, and the reconciler recovers studies whose messages Redis lost."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
import redis

from radtrace.config import Settings, load_settings
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import RevisionState
from radtrace.testing.services import RedisNamespace, free_port
from radtrace.testing.studies import StudySpec, make_study
from radtrace.worker.doorbell import ring_dispatch, ring_process
from radtrace.worker.reconciler import Reconciler
from radtrace.worker.status import queue_depths
from serve_support import killed_at_end
from tests_support import radtrace
from worker_support import running_worker, spool_study, wait_for_state, worker_env, worker_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DONE = {RevisionState.DISPATCHED, RevisionState.FAILED, RevisionState.SKIPPED}


def _assert_delivered(settings: Settings, store: Store, study_uid: str, log_file: Path) -> None:
    rev = wait_for_state(store, study_uid, DONE, timeout=90, log_file=log_file)
    assert rev.state is RevisionState.DISPATCHED, rev.reason
    assert rev.attempts == 1
    sr = pydicom.dcmread(Path(str(settings.dispatch.file_drop_dir)) / f"{rev.sr_sop_instance_uid}.dcm")
    assert sr.StudyInstanceUID == study_uid


def test_the_embedded_broker_carries_a_study_to_its_sr_without_redis(
    tmp_path: Path, sqlite_store: Store, tiny_model_dir: Path
) -> None:
    settings = worker_settings(tmp_path, str(sqlite_store.engine.url), tiny_model_dir)
    assert settings.broker_url.startswith("sqla+sqlite:///")
    study_uid, number = spool_study(settings, sqlite_store, make_study())
    assert ring_process(settings, study_uid, number)
    assert ring_dispatch(settings, 999)  # no such row: the worker must shrug it off
    assert queue_depths(settings) == {
        settings.broker.stat_queue: 0, settings.broker.gpu_queue: 1, settings.broker.dispatch_queue: 1
    }  # fmt: skip

    log_file = tmp_path / "worker.log"
    with running_worker(settings, "--no-reconcile", log_file=log_file):
        _assert_delivered(settings, sqlite_store, study_uid, log_file)

    # kombu's SQL transport keeps delivered messages; the reconciler deletes them
    reconciler = Reconciler(settings, sqlite_store)
    assert reconciler.purge_embedded_broker(older_than=timedelta(0)) == 6  # 1 process, 1 bogus + 4 dispatches (SR,
    # companion document, HL7, FHIR to the file drop)
    assert reconciler.purge_embedded_broker(older_than=timedelta(0)) == 0

    shown = radtrace("status", "--json", env=worker_env(settings))
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["studies"]["dispatched"] == status["revisions"]["dispatched"] == 1
    assert status["outbox"] == {"pending": 0, "delivered": 4, "failed": 0, "cancelled": 0}
    assert status["queues"] == {settings.broker.stat_queue: 0, settings.broker.gpu_queue: 0,
                                settings.broker.dispatch_queue: 0}  # fmt: skip
    assert status["oldest_waiting"] is None


def test_redis_carries_a_study_to_its_sr_with_postgresql(
    tmp_path: Path, postgres_url: str, redis_namespace: RedisNamespace, tiny_model_dir: Path
) -> None:
    store = Store.from_url(postgres_url)
    upgrade(store)
    settings = worker_settings(
        tmp_path,
        postgres_url,
        tiny_model_dir,
        broker={"url": redis_namespace.url, "key_prefix": redis_namespace.prefix},
    )
    study_uid, number = spool_study(settings, store, make_study())
    assert ring_process(settings, study_uid, number)
    client = redis.Redis.from_url(redis_namespace.url)
    assert client.llen(redis_namespace.key(settings.broker.gpu_queue)) == 1  # our message, under our prefix only
    log_file = tmp_path / "worker.log"
    try:
        with killed_at_end(running_worker(settings, "--no-reconcile", log_file=log_file)):  # nothing on stopping
            _assert_delivered(settings, store, study_uid, log_file)
    finally:
        client.close()
        store.dispose()
    logged = log_file.read_text(encoding="utf-8")
    assert "[queues]" not in logged  # no Celery banner (about 40 lines) ...
    assert "-------------- " not in logged  # ... but one line of ours:
    assert f"(solo pool of 1; broker {redis_namespace.url})" in logged  # (a password in it is masked)


def test_after_redis_lost_every_message_the_reconciler_rings_again(
    tmp_path: Path, sqlite_store: Store, redis_namespace: RedisNamespace, tiny_model_dir: Path
) -> None:
    settings = worker_settings(
        tmp_path,
        str(sqlite_store.engine.url),
        tiny_model_dir,
        broker={
            "url": redis_namespace.url,
            "key_prefix": redis_namespace.prefix,
            "reconcile_interval_s": 0.5,
            "overdue_after_s": 1.0,
        },
    )
    lost_before_start = spool_study(settings, sqlite_store, make_study(StudySpec(seed=11)))[0]
    assert ring_process(settings, lost_before_start, 1)
    client = redis.Redis.from_url(redis_namespace.url)
    try:
        client.delete(*client.scan_iter(match=f"{redis_namespace.prefix}*"))  # Redis flushed: the message is gone
        log_file = tmp_path / "worker.log"
        with killed_at_end(running_worker(settings, log_file=log_file)):  # nothing on stopping
            _assert_delivered(settings, sqlite_store, lost_before_start, log_file)  # the start-up pass
            # queued while the worker runs, its doorbell never rung (the listener died, Redis flushed …)
            never_rung = spool_study(settings, sqlite_store, make_study(StudySpec(seed=12)))[0]
            _assert_delivered(settings, sqlite_store, never_rung, log_file)  # a periodic pass
    finally:
        client.close()


def test_a_doorbell_with_the_broker_down_returns_false_at_once_instead_of_failing_the_caller(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, broker={"url": f"redis://127.0.0.1:{free_port()}/0"})
    started = time.monotonic()
    assert ring_process(settings, "1.2.3", 1) is False
    assert ring_dispatch(settings, 1) is False
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_a_stat_study_rung_after_a_routine_one_is_read_first(
    tmp_path: Path, sqlite_store: Store, redis_namespace: RedisNamespace, tiny_model_dir: Path, broker: str
) -> None:
    import sqlalchemy as sa

    from radtrace.store.models import Priority, Revision
    from worker_support import revision_row

    options = {"url": redis_namespace.url, "key_prefix": redis_namespace.prefix} if broker == "redis" else {}
    settings = worker_settings(tmp_path, str(sqlite_store.engine.url), tiny_model_dir, broker=options)
    routine = spool_study(settings, sqlite_store, make_study(StudySpec(seed=21)))[0]
    stat = spool_study(settings, sqlite_store, make_study(StudySpec(seed=22)))[0]
    with sqlite_store.session() as session:
        session.execute(sa.update(Revision).where(Revision.id == revision_row(sqlite_store, stat).id)
                        .values(priority=Priority.STAT))  # fmt: skip
    assert ring_process(settings, routine, 1)
    assert ring_process(settings, stat, 1, priority=Priority.STAT)
    depths = queue_depths(settings)
    assert (depths[settings.broker.stat_queue], depths[settings.broker.gpu_queue]) == (1, 1)

    log_file = tmp_path / "worker.log"
    with killed_at_end(running_worker(settings, "--no-reconcile", log_file=log_file)):  # nothing on stopping
        _assert_delivered(settings, sqlite_store, stat, log_file)
        _assert_delivered(settings, sqlite_store, routine, log_file)
    stat_started = revision_row(sqlite_store, stat).started_at
    routine_started = revision_row(sqlite_store, routine).started_at
    assert stat_started is not None
    assert routine_started is not None
    assert stat_started < routine_started
