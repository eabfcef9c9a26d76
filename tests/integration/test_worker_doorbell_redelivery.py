"""A doorbell redelivered by Redis during a long hold is harmless: no second read, no attempt, no warning.

A GPU worker holding its batch for a model server that is down (radtrace.worker.breaker) does not acknowledge the
doorbell that started the batch until the batch ends (acks_late), and a hold may last model.server_hold_max_s (2 h)
while Redis hands an unacknowledged message to a consumer again after broker.visibility_timeout_s (1 h): any idle
consumer on the same Redis (another GPU worker, a dispatcher) puts it back on its queue, and a free GPU worker takes
it. This test does that with the real Redis transport (visibility timeout shortened to 1 s on the consuming apps)
and the real task: the second worker finds the revision claimed and does nothing with it; once the server is back
the holding worker reads it once, and no message is left behind. Passed before any change: the claim is what makes
it harmless (DESIGN.md principle 2), not the broker."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection, Message

import radtrace.worker.breaker
from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.services import RedisNamespace, free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.app import PROCESS_TASK, create_app
from radtrace.worker.doorbell import ring_process
from radtrace.worker.pipeline import StudyPipeline
from radtrace.worker.tasks import WorkerRuntime
from worker_support import (
    audit_events,
    fake_vllm_server,
    migrated_store,
    revision_row,
    spool_study,
    vllm_worker_settings,
)

pytestmark = pytest.mark.integration

VISIBILITY_S = 1.0


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(radtrace.worker.breaker, "PROBE_FIRST_S", 0.2)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(tmp_path: Path, port: int, redis_namespace: RedisNamespace) -> Settings:
    broker = {"url": redis_namespace.url, "key_prefix": redis_namespace.prefix, "max_attempts": 2}
    return vllm_worker_settings(tmp_path, port, batch_size=2, broker=broker)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with migrated_store(settings) as opened:
        yield opened


def consuming_app(settings: Settings) -> tuple[Celery, WorkerRuntime]:
    """A worker's Celery app, with Redis's visibility timeout shortened; its runtime's pipeline is set by the test
    (each task call takes the pipeline set when it starts: one app serves both workers, as Celery refuses a second
    app registering the same task names in one process)."""
    app = create_app(settings)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "visibility_timeout": VISIBILITY_S}
    return app, app.conf.radtrace_runtime


def take_one(app: Celery, settings: Settings, *, restore_first: bool = False) -> tuple[Connection, Message]:
    """One message from the GPU queue, unacknowledged (acks_late), with its connection (closing it would put the
    message back at once, as a worker's shutdown does); ``restore_first``: as an idle consumer does on each empty
    poll, put back the messages unacknowledged for longer than the visibility timeout."""
    connection = app.connection_for_read()
    channel = connection.default_channel
    if restore_first:
        channel.qos.restore_visible(interval=1)
    taken: list[Message] = []
    queues = [app.amqp.queues[settings.broker.gpu_queue]]
    with connection.Consumer(queues, accept=["json"], prefetch_count=1,
                             callbacks=[lambda _body, message: taken.append(message)]):  # fmt: skip
        deadline = time.monotonic() + 5
        while not taken and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.5)
    assert taken, "no message"
    return connection, taken[0]


def left_in_redis(namespace: RedisNamespace, settings: Settings) -> dict[str, int]:
    client = redis.Redis.from_url(namespace.url)
    try:
        return {"queued": client.llen(namespace.key(settings.broker.gpu_queue)),
                "unacked": client.hlen(namespace.key("unacked"))}  # fmt: skip
    finally:
        client.close()


def test_a_doorbell_redelivered_during_a_hold_reads_nothing_twice_and_says_nothing(
    settings: Settings, store: Store, port: int, redis_namespace: RedisNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    uid, _ = spool_study(settings, store, make_study(StudySpec(seed=900), [ImageSpec()]))
    assert ring_process(settings, uid, 1)

    app, runtime = consuming_app(settings)
    holder = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="gpu0")
    runtime._pipeline = holder
    first_connection, first = take_one(app, settings)
    assert first.headers["task"] == PROCESS_TASK
    held = threading.Thread(target=lambda: app.tasks[PROCESS_TASK](*first.decode()[0]), daemon=True)
    held.start()  # the real task: reads, finds the server down, holds the revision under its claim
    deadline = time.monotonic() + 10
    while not holder.reading.breaker.is_open:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(VISIBILITY_S + 0.5)  # the doorbell is unacknowledged for longer than the visibility timeout

    other = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="gpu1")
    runtime._pipeline = other  # the next task call is another GPU worker's
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="radtrace")
    second_connection, again = take_one(app, settings, restore_first=True)
    assert again.headers["id"] == first.headers["id"]  # the same doorbell, handed out a second time
    assert app.tasks[PROCESS_TASK](*again.decode()[0]) == "not-claimed"
    again.ack()
    second_connection.close()
    second_said = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert not [line for level, line in second_said if level >= logging.WARNING], second_said  # nothing noisy
    assert not other.reading.breaker.is_open  # it read nothing, so found nothing down
    rev = revision_row(store, uid)
    assert (rev.state, rev.claimed_by, rev.attempts) == (RevisionState.PROCESSING, "gpu0", 1)

    with fake_vllm_server(port) as server:
        held.join(timeout=30)
        assert not held.is_alive()
        first.ack()  # what Celery does after the task: its delivery tag was restored already, a no-op
        first_connection.close()
        reads = server.requests
    rev = revision_row(store, uid)
    assert (rev.state, rev.attempts) == (RevisionState.REPORTED, 1)
    assert reads == 1  # read once, by the holder
    kinds = [kind for kind, _, _ in audit_events(store)]
    assert kinds.count("inference_completed") == 1
    assert "inference_failed" not in kinds
    assert left_in_redis(redis_namespace, settings) == {"queued": 0, "unacked": 0}
