"""Deliveries waiting for a destination at its send cap cost nothing while they wait: the send that ends rings one.

A dead RIS (each send waits out its timeout, 1 s here, and fails) with a backlog of 40 ORUs, run through the real
``dispatch`` task (radtrace.worker.tasks) on four threads, its doorbells (``ring_dispatch``) kept in an in-memory
queue: the rows over the cap (2) are deferred. Measured: dispatch tasks run per second once the backlog's first rings
are all taken, and the attempts made meanwhile (the RIS kept at its cap: each send that ends wakes the next).

Before: every deferred row was rung again 2 s later, whatever freed or not: 38 waiting rows made about 19 tasks a
second (a backlog of 100: 50 a second), each a database transaction, to a RIS that answered nothing."""

from __future__ import annotations

import heapq
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings, load_settings
from radtrace.errors import PeerUnavailableError
from radtrace.reporting.dispatch.outbox import KIND_HL7, Outbox
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.worker import tasks
from radtrace.worker.app import DISPATCH_TASK
from radtrace.worker.settlement import Deliveries
from reporting_support import oru_backlog
from worker_support import Unobserved

pytestmark = pytest.mark.integration

BACKLOG = 40
RIS_TIMEOUT_S = 1.0
THREADS = 4
SETTLED_AFTER_S = 2.5  # and the backlog's first rings all taken: measured from then on
MEASURED_S = 6.0


class Doorbells:
    """The dispatch queue: ``ring_dispatch(settings, outbox_id, at=...)`` as the tasks call it, due in order."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, int]] = []
        self._ready = threading.Condition()
        self._count = 0
        self.stopped = False

    def ring(self, _settings: Settings, outbox_id: int, *, at: Any = None) -> bool:
        delay = max(0.0, (at - utc_now()).total_seconds()) if at is not None else 0.0
        with self._ready:
            self._count += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._count, outbox_id))
            self._ready.notify()
        return True

    def take(self) -> int | None:
        with self._ready:
            while not self.stopped:
                wait = self._due[0][0] - time.monotonic() if self._due else 0.2
                if self._due and wait <= 0:
                    return heapq.heappop(self._due)[2]
                self._ready.wait(min(max(wait, 0.001), 0.2))
            return None

    def stop(self) -> None:
        with self._ready:
            self.stopped = True
            self._ready.notify_all()


class _Runtime:
    """What the ``dispatch`` task uses of a worker's runtime: its pipeline's ``dispatch``."""

    def __init__(self, deliveries: Deliveries) -> None:
        self.pipeline = deliveries
        self.stopping = threading.Event()


def test_a_dead_ris_with_a_backlog_costs_a_ring_per_send_that_ends(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    settings = load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": url},
        dispatch={"ris": {"host": "127.0.0.1", "port": 2575, "timeout_s": RIS_TIMEOUT_S},
                  "backoff_initial_s": 600.0, "max_sends_per_destination": 2},
    )  # fmt: skip
    sends = 0
    count = threading.Lock()

    def dead_ris(destination: str, payload: bytes) -> str | None:
        nonlocal sends
        with count:
            sends += 1
        time.sleep(RIS_TIMEOUT_S)
        raise PeerUnavailableError(f"no ACK from the RIS {destination} within {RIS_TIMEOUT_S:.0f} s")

    recorder = AuditRecorder(store)
    outbox = Outbox(store, recorder, settings.dispatch, tmp_path / "payloads", senders={KIND_HL7: dead_ris})
    orus = oru_backlog(store, outbox, settings.dispatch, BACKLOG, "deadrisbacklog01", "RTACC-DEADRIS")
    doorbells = Doorbells()
    monkeypatch.setattr(tasks, "ring_dispatch", doorbells.ring)
    app = Celery("dispatch-wake-test", set_as_current=False)
    runtime = _Runtime(Deliveries(store, outbox, recorder, Unobserved(), utc_now))
    tasks.register_tasks(app, settings, runtime)  # type: ignore[arg-type]
    dispatch = app.tasks[DISPATCH_TASK]
    ran: list[float] = []
    failures: list[BaseException] = []

    def worker() -> None:
        while (outbox_id := doorbells.take()) is not None:
            ran.append(time.monotonic())
            try:
                dispatch(outbox_id)
            except BaseException as exc:  # reported by the test below
                failures.append(exc)

    for outbox_id in orus:  # the night's doorbells
        doorbells.ring(settings, outbox_id)
    began = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in workers:
        thread.start()
    deadline = began + 60
    while len(ran) < BACKLOG or time.monotonic() < began + SETTLED_AFTER_S:  # every row's first ring taken first
        assert time.monotonic() < deadline, (len(ran), failures)
        time.sleep(0.05)
    time.sleep(0.5)  # the last of them run
    start, sends_before = time.monotonic(), sends
    time.sleep(MEASURED_S)
    measured = [at for at in ran if start <= at < start + MEASURED_S]
    sends_measured = sends - sends_before
    doorbells.stop()
    for thread in workers:
        thread.join(10)
    assert failures == []
    per_second = len(measured) / MEASURED_S
    print(f"dead RIS, backlog {BACKLOG}: {per_second:.1f} dispatch tasks/s and {sends_measured} sends "
          f"in {MEASURED_S:.0f} s (cap 2, each send {RIS_TIMEOUT_S:.0f} s)")  # fmt: skip
    # a wake per send that ends (2 a second at most here), not a ring per waiting row every 2 s (19 a second)
    assert per_second <= 3.0, per_second
    # and the RIS is kept at its cap meanwhile: the send that ends wakes the next (about 12 in 6 s)
    assert sends_measured >= 8, sends_measured
