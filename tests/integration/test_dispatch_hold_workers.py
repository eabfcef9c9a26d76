"""A destination on hold with real dispatchers: two ``radtrace worker --queues dispatch`` processes on one PostgreSQL
and one Redis, a night's doorbells rung, a PACS (a real pynetdicom SCP) that refuses our calling AE title (1/1/3).

The first refusal puts the PACS on hold for both workers: at most one association per worker (each may have claimed
a delivery before the other's refusal was committed), one hold event; the file drop keeps receiving. One worker is
killed with SIGKILL while the PACS is held, drafts are enqueued meanwhile, and it is started again: the hold is still
there (the same since), the reconciler's rings look the held deliveries over again and again without opening an
association, and the new drafts wait held too. ``radtrace dispatch retry`` after the PACS admits us: every held
delivery is stored once, every revision ends dispatched.

Before (every refusal failed its own delivery): one association, one warning and one ``dispatch_failed`` event per
draft, every revision failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from dispatch_hold_support import CountingPacs, counting_pacs, holds, reported_revisions, rows_to
from radtrace.audit.events import EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings, load_settings
from radtrace.reporting.dispatch.outbox import Outbox
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import OutboxState, Revision, RevisionState
from radtrace.testing.services import RedisNamespace
from radtrace.worker.doorbell import ring_dispatch
from radtrace.worker.pipeline import payload_dir
from tests_support import radtrace
from worker_support import audit_events

pytestmark = pytest.mark.integration

NIGHT = 8


@pytest.fixture
def pacs() -> Iterator[CountingPacs]:
    with counting_pacs("PACS", admits=["NIGHTSHIFT"]) as refusing:
        yield refusing


@pytest.fixture
def settings(tmp_path: Path, postgres_url: str, redis_namespace: RedisNamespace, pacs: CountingPacs) -> Settings:
    (tmp_path / "drop").mkdir()
    return load_settings(
        data_dir=tmp_path / "data",
        store={"url": postgres_url},
        model={"backend": "demo", "demo": True},
        broker={"url": redis_namespace.url, "key_prefix": redis_namespace.prefix, "reconcile_interval_s": 0.5,
                "overdue_after_s": 0.5},
        dispatch={"pacs": [pacs.destination], "calling_ae_title": "RADTRACE", "backoff_max_s": 1,
                  "file_drop_dir": tmp_path / "drop"},
    )  # fmt: skip


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    opened = Store.from_url(settings.store_url)
    upgrade(opened)
    yield opened
    opened.dispose()


def _env(settings: Settings) -> dict[str, str]:
    broker, dispatch = settings.broker, settings.dispatch
    return {
        "RADTRACE_DATA_DIR": str(settings.data_dir), "RADTRACE_STORE__URL": settings.store_url,
        "RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true", "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_BROKER__URL": str(broker.url), "RADTRACE_BROKER__KEY_PREFIX": broker.key_prefix,
        "RADTRACE_BROKER__RECONCILE_INTERVAL_S": str(broker.reconcile_interval_s),
        "RADTRACE_BROKER__OVERDUE_AFTER_S": str(broker.overdue_after_s),
        "RADTRACE_DISPATCH__PACS": json.dumps([p.model_dump(mode="json") for p in dispatch.pacs]),
        "RADTRACE_DISPATCH__CALLING_AE_TITLE": dispatch.calling_ae_title,
        "RADTRACE_DISPATCH__BACKOFF_MAX_S": str(dispatch.backoff_max_s),
        "RADTRACE_DISPATCH__FILE_DROP_DIR": str(dispatch.file_drop_dir),
    }  # fmt: skip


class Dispatchers:
    """Dispatch-only ``radtrace worker`` processes, one thread each, started and killed by name."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | _env(settings)
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(exist_ok=True)

    def start(self, name: str) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", "radtrace", "worker", "--queues", "dispatch", "--concurrency", "1"],
                stdout=log, stderr=subprocess.STDOUT, env=self.environment, start_new_session=True,
            )  # fmt: skip

    def kill(self, name: str) -> None:
        """kill -9: the worker and anything it started."""
        os.killpg(self.running[name].pid, signal.SIGKILL)
        self.running[name].wait(10)

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@contextmanager
def dispatchers(settings: Settings, logs: Path) -> Iterator[Dispatchers]:
    workers = Dispatchers(settings, logs)
    try:
        yield workers
    finally:
        workers.stop()


def _until(condition: Callable[[], bool], logs: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = {p.name: p.read_text(errors="replace")[-3000:] for p in sorted(logs.glob("*.log"))}
            raise AssertionError(f"not within {timeout} s; worker logs: {tails}")
        time.sleep(0.1)


def _states(store: Store, destination: str) -> list[OutboxState]:
    return [row.state for row in rows_to(store, destination)]


def _dropped(settings: Settings) -> int:
    assert settings.dispatch.file_drop_dir is not None
    return len(list(settings.dispatch.file_drop_dir.iterdir()))


def _hold_events(store: Store, destination: str) -> list[str]:
    """The events that placed or lifted the destination's hold."""
    kinds = (EventType.DISPATCH_HELD.value, EventType.DISPATCH_HOLD_RELEASED.value)
    return [kind for kind, _, payload in audit_events(store)
            if payload.get("destination") == destination and kind in kinds]  # fmt: skip


def _revision_states(store: Store) -> set[RevisionState]:
    with store.session() as session:
        return set(session.scalars(sa.select(Revision.state)))


def test_two_dispatchers_hold_a_refusing_pacs_once_through_a_kill_and_deliver_after_dispatch_retry(
    tmp_path: Path, settings: Settings, store: Store, pacs: CountingPacs
) -> None:
    outbox = Outbox(store, AuditRecorder(store), settings.dispatch, payload_dir(settings))
    study_uid, ids = reported_revisions(store, outbox, settings.dispatch, NIGHT)
    for outbox_id in ids:
        assert ring_dispatch(settings, outbox_id)
    logs = tmp_path / "logs"
    with dispatchers(settings, logs) as workers:
        workers.start("a")
        workers.start("b")

        def settled() -> bool:  # held, the drop done, and every attempt made recorded (a refusal's reason kept)
            rows = rows_to(store, pacs.name)
            return (
                bool(holds(store)) and _dropped(settings) == 3 * NIGHT and all(r.last_error for r in rows if r.attempts)
            )

        _until(settled, logs)
        time.sleep(1)  # a claim made before the hold was committed has had its refusal recorded
        assert settled()
        [hold] = holds(store)
        opened = pacs.connections
        assert 1 <= opened <= 2, opened  # one per worker at most: a claim made before the other's refusal committed
        assert _hold_events(store, pacs.name) == ["dispatch_held"]
        assert set(_states(store, pacs.name)) == {OutboxState.PENDING}

        killed_at = time.monotonic()
        workers.kill("a")
        _, later = reported_revisions(store, outbox, settings.dispatch, 2, first=NIGHT + 1, study_uid=study_uid)
        for outbox_id in later:
            assert ring_dispatch(settings, outbox_id)
        workers.start("a")
        _until(lambda: _dropped(settings) == 3 * (NIGHT + 2), logs)
        looked_again = time.time()
        # every held delivery is looked at again after the restart (their time comes each second), and no association
        _until(lambda: min(row.next_attempt_at.timestamp() for row in rows_to(store, pacs.name)) > looked_again, logs)
        assert time.monotonic() - killed_at < 120
        assert pacs.connections == opened
        [still] = holds(store)
        assert (still.held_since, still.outbox_id) == (hold.held_since, hold.outbox_id)
        assert _hold_events(store, pacs.name) == ["dispatch_held"]
        assert _states(store, pacs.name) == [OutboxState.PENDING] * (NIGHT + 2)
        assert _revision_states(store) == {RevisionState.REPORTED}

        pacs.admit("NIGHTSHIFT", "RADTRACE")
        lifted = radtrace("dispatch", "retry", pacs.name, env=_env(settings))
        assert lifted.returncode == 0, lifted.stderr
        assert f"{NIGHT + 2} held deliveries to {pacs.name} are due now" in lifted.stdout
        _until(lambda: _states(store, pacs.name) == [OutboxState.DELIVERED] * (NIGHT + 2), logs)
        _until(lambda: _revision_states(store) == {RevisionState.DISPATCHED}, logs)
    assert len(pacs.stored) == len(set(pacs.stored)) == NIGHT + 2
    assert pacs.connections == opened + NIGHT + 2
    assert _hold_events(store, pacs.name) == [EventType.DISPATCH_HELD.value, EventType.DISPATCH_HOLD_RELEASED.value]
    assert holds(store) == []
