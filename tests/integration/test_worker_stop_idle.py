"""A worker asked to stop stops taking doorbells at once, and an idle ``radtrace worker`` stops in seconds.

Celery's loop asks the broker for events with a 2 s timeout and looks whether SIGTERM asked it to stop only between
two such calls; kombu's embedded (SQLAlchemy) transport polls throughout that wait. An idle worker therefore went on
polling for up to 2 s after the signal, and a doorbell that came meanwhile was taken and its study read (the solo
pool reads inside the wait) before the worker stopped. The embedded transport's wait now ends as soon as a warm or
cold shutdown has been asked for (:func:`radtrace.worker.app._drain_events_until_stopping`), leaving the message in
the queue for the next worker. The stop of a worker with a study in hand (it finishes it, or leaves it claimed) is
asserted by tests/e2e/test_serve_end_to_end.py, test_logging_canaries and test_firsthour_serve_killed.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.worker import state
from kombu import Message

from radtrace.config import Settings, load_settings
from radtrace.worker.app import create_app
from radtrace.worker.doorbell import ring_process
from worker_support import migrated_store, running_worker, worker_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def warm_stop_asked() -> Iterator[None]:
    """Celery's flag as its SIGTERM handler sets it (``should_stop = 0``, EX_OK), put back afterwards."""
    before = state.should_stop
    state.should_stop = 0
    try:
        yield
    finally:
        state.should_stop = before


def _taken_within(settings: Settings, timeout_s: float) -> tuple[list[Message], float]:
    """What one ``drain_events(timeout_s)`` on the GPU queue took (acknowledged), and how long it waited."""
    app = create_app(settings, with_tasks=False)
    taken: list[Message] = []
    with app.connection_for_read() as connection:
        queues = [app.amqp.queues[settings.broker.gpu_queue]]
        with connection.Consumer(queues, accept=["json"], callbacks=[lambda _body, message: taken.append(message)]):
            started = time.monotonic()
            with contextlib.suppress(socket.timeout):
                connection.drain_events(timeout=timeout_s)
            waited = time.monotonic() - started
        for message in taken:
            message.ack()
    return taken, waited


def test_a_worker_asked_to_stop_takes_no_more_doorbells_and_waits_no_longer(
    tmp_path: Path, warm_stop_asked: None
) -> None:
    settings = load_settings(data_dir=tmp_path / "radtrace")
    assert ring_process(settings, "1.2.3", 1)
    taken, waited = _taken_within(settings, 2.0)
    assert taken == []  # before: the doorbell was taken (and on the solo pool its study read) after the signal
    assert waited < 0.5  # before: the whole 2 s
    state.should_stop = None
    taken, _ = _taken_within(settings, 2.0)  # still there for the next worker
    assert [message.decode()[0] for message in taken] == [["1.2.3", 1]]


def test_an_idle_worker_still_takes_a_doorbell_and_waits_out_its_timeout(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "radtrace")
    taken, waited = _taken_within(settings, 0.3)
    assert taken == []
    assert 0.3 <= waited < 1.5
    assert ring_process(settings, "1.2.3", 1)
    taken, _ = _taken_within(settings, 2.0)
    assert [message.decode()[0] for message in taken] == [["1.2.3", 1]]


def test_an_idle_worker_stops_well_within_a_service_managers_timeout(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A regression guard, not a timing target (bench/stop.py measures it: 4.8 s before, under 1 s after): systemd's
    default stop timeout is 90 s and Kubernetes' grace period 30 s; a stop must not come near them."""
    wsettings = worker_settings(tmp_path, f"sqlite:///{tmp_path / 'radtrace.db'}", tiny_model_dir)
    with migrated_store(wsettings):
        pass
    log_file = tmp_path / "worker.log"
    with running_worker(wsettings, log_file=log_file) as worker:
        deadline = time.monotonic() + 120
        while "(solo pool of 1" not in log_file.read_text(errors="replace"):
            assert worker.poll() is None, log_file.read_text(errors="replace")
            assert time.monotonic() < deadline, log_file.read_text(errors="replace")
            time.sleep(0.1)
        time.sleep(1.0)  # idle: consuming, the reconciler's start-up pass done
        worker.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert worker.wait(timeout=60) == 0, log_file.read_text(errors="replace")
        assert time.monotonic() - stopping < 10, log_file.read_text(errors="replace")
    assert "Traceback" not in log_file.read_text(errors="replace")
