"""Where a model server's open outage, or stop for unparseable output, is kept: ``model_outages``
(:mod:`radtrace.worker.outage_table`), kept in the transaction that appends the outage's audit entry.

Before migration 0016 the state was found by scanning the audit log's ``application_*`` entries before each batch
(1.4 s a look at 1,000,000 events with another server's 5,000 outage entries, ``bench/model_stop_state.py``). Here:

* the upgrade keeps what the audit log had open open (a stop, an outage), and closed what it had closed;
* kill -9 of ``radtrace model resume`` inside its transaction (its audit entry written, the row not yet deleted)
  leaves the stop open, the audit log without the entry, and a second resume lifts it;
* kill -9 of a process telling a stop inside its transaction leaves neither the entry nor the row; told again, one
  entry and one row; the chain verifies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from migration_support import store_at_migration
from radtrace.audit.chain import verify_chain
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, upgrade
from radtrace.worker.breaker import Hold, ModelServerBreaker
from radtrace.worker.outage import COMPONENT, OpenOutage, OutageNotice, lift_stop, open_outages
from radtrace.worker.outage_table import ModelOutageRow
from radtrace.worker.output_guard import STOPPED_MARK
from tests_support import radtrace

pytestmark = pytest.mark.integration

STOP = f"{STOPPED_MARK} 4 consecutive studies (model m r1 via vllm): check the weights and the chat template"
SERVER = "http://gpu-1.example:8000"


def _outages(store: Store) -> list[OpenOutage]:
    with store.session() as session:
        return open_outages(session)


def _entries(store: Store) -> list[tuple[int, str, str]]:
    """(seq, event type, server) of every model-reading outage entry."""
    with store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.seq, AuditEventRow.event_type, AuditEventRow.payload).order_by(AuditEventRow.seq)
        ).all()
    return [(seq, kind, json.loads(text)["server"]) for seq, kind, text in rows
            if json.loads(text).get("component") == COMPONENT]  # fmt: skip


@pytest.fixture
def before_0016(database_url: str) -> Iterator[Store]:
    """A database at the migration before 0016."""
    previous = ScriptDirectory.from_config(_config()).get_revision("0016").down_revision
    assert isinstance(previous, str)
    with store_at_migration(database_url, previous) as store:
        yield store


def _tell(store: Store, kind: EventType, server: str, reason: str | None = None) -> None:
    """An outage entry as the workers wrote it before 0016."""
    payload = {"component": COMPONENT, "server": server, "worker": "gpu0@node1:41"}
    if reason is not None:
        payload |= {"reason": f"model server unavailable since 2026-12-05T01:00:00+00:00 ({reason})",
                    "since": "2026-12-05T01:00:00+00:00"}  # fmt: skip
    outcome = Outcome.SERIOUS_FAILURE if kind is EventType.APPLICATION_STOPPED else Outcome.SUCCESS
    AuditRecorder(store).record(AuditEvent(kind, Actor(process="radtrace-worker@node1"), outcome, payload=payload))


def test_the_upgrade_keeps_open_what_the_audit_log_had_open(before_0016: Store) -> None:
    store = before_0016
    down = "HTTPConnectionPool: connection refused"
    _tell(store, EventType.APPLICATION_STOPPED, SERVER, STOP)  # a stop, open
    _tell(store, EventType.APPLICATION_STOPPED, "http://gpu-2.example:8000", down)  # an outage, ended
    _tell(store, EventType.APPLICATION_STARTED, "http://gpu-2.example:8000")
    _tell(store, EventType.APPLICATION_STOPPED, "http://gpu-3.example:8000", down)  # an outage, open
    AuditRecorder(store).record(AuditEvent(EventType.APPLICATION_STARTED, Actor(process="radtrace-listen"),
                                           payload={"component": "listener"}))  # fmt: skip

    upgrade(store)

    opened = _outages(store)
    assert [(o.server, o.stop, o.worker) for o in opened] == [
        (SERVER, True, "gpu0@node1:41"),
        ("http://gpu-3.example:8000", False, "gpu0@node1:41"),
    ]
    assert opened[0].reason == STOP
    assert opened[1].reason.endswith(f"({down})")
    with store.session() as session:
        told = dict(session.execute(sa.select(AuditEventRow.seq, AuditEventRow.recorded_at)).all())
        rows = {row.server: row for row in session.scalars(sa.select(ModelOutageRow))}
    assert (rows[SERVER].opened_seq, rows[SERVER].recorded_at) == (1, told[1])
    assert rows[SERVER].down_since == "2026-12-05T01:00:00+00:00"
    lifted = lift_stop(store, Actor(user="it-night"), lambda: told[1])
    assert (lifted.server, lifted.reason) == (SERVER, STOP)
    assert [o.server for o in _outages(store)] == ["http://gpu-3.example:8000"]


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _wait_for_a_lock_wait(url: str, timeout_s: float = 60) -> int:
    """The pid of the backend of this database that waits for a lock (the process under test, held by ours)."""
    deadline = time.monotonic() + timeout_s
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(_libpq(url), autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", (database,)
            ).fetchone()
            if row is not None:
                return int(row[0])
            time.sleep(0.05)
    raise AssertionError("the process never reached the locked table")


def _wait_gone(url: str, backend: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(_libpq(url), autocommit=True) as watcher:
        while watcher.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone():
            assert time.monotonic() < deadline, "the killed process's transaction never ended"
            time.sleep(0.05)


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[tuple[str, Store]]:
    """PostgreSQL: a lock held from another connection stops the process under test inside its transaction."""
    store = Store.from_url(postgres_url)
    upgrade(store)
    yield postgres_url, store
    store.dispose()


def _appended_to_the_audit_log(url: str, backend: int) -> bool:
    """Whether ``backend``'s open transaction has inserted into audit_events (it holds the table's insert lock)."""
    with psycopg.connect(_libpq(url), autocommit=True) as watcher:
        row = watcher.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid "
            "WHERE l.pid = %s AND c.relname = 'audit_events' AND l.mode = 'RowExclusiveLock' AND l.granted",
            (backend,),
        ).fetchone()
    return row is not None and row[0] == 1


_TELL_STOP = textwrap.dedent(
    """
    import sys
    from radtrace.audit.events import Actor
    from radtrace.audit.recorder import AuditRecorder
    from radtrace.store.base import utc_now
    from radtrace.store.engine import Store
    from radtrace.worker.breaker import ModelServerBreaker
    from radtrace.worker.outage import OutageNotice

    store = Store.from_url(sys.argv[1])
    actor = Actor(process="radtrace-worker@w1")
    notice = OutageNotice(store, AuditRecorder(store, actor), actor, "w1", object(), utc_now, server=sys.argv[2])
    ModelServerBreaker(lambda: sys.argv[3], on_open=notice.opened).server_down()
    """
)


def _tell_stop(url: str) -> subprocess.Popen[bytes]:
    """A worker telling its stop (the breaker opening on the guard's reason), in a process of its own."""
    return subprocess.Popen([sys.executable, "-c", _TELL_STOP, url, SERVER, STOP], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def test_kill_9_while_a_worker_tells_a_stop_leaves_neither_the_entry_nor_the_row(
    pg_store: tuple[str, Store], tmp_path: Path
) -> None:
    url, store = pg_store
    with psycopg.connect(_libpq(url)) as holder:
        holder.execute("LOCK TABLE model_outages IN SHARE MODE")  # reads pass; the row's INSERT waits
        teller = _tell_stop(url)
        backend = _wait_for_a_lock_wait(url)
        assert _appended_to_the_audit_log(url, backend)  # its entry is written, in its transaction
        os.killpg(teller.pid, signal.SIGKILL)
        teller.wait(timeout=10)
        holder.rollback()
    _wait_gone(url, backend)

    assert _entries(store) == []
    assert _outages(store) == []
    teller = _tell_stop(url)  # told again by the next worker that finds it
    assert teller.wait(timeout=60) == 0
    assert _entries(store) == [(1, "application_stopped", SERVER)]
    [stop] = _outages(store)
    assert (stop.server, stop.reason, stop.stop) == (SERVER, STOP, True)
    assert verify_chain(store).ok


def test_kill_9_of_resume_inside_its_transaction_leaves_the_stop_open_and_a_second_resume_lifts_it(
    pg_store: tuple[str, Store], tmp_path: Path
) -> None:
    url, store = pg_store
    assert _tell_stop(url).wait(timeout=60) == 0
    env = {"RADTRACE_STORE__URL": url, "RADTRACE_DATA_DIR": str(tmp_path), "COLUMNS": "400"}
    with psycopg.connect(_libpq(url)) as holder:
        holder.execute("SELECT * FROM model_outages FOR UPDATE")  # the resume's DELETE of the row waits
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
        resume = subprocess.Popen(
            [sys.executable, "-m", "radtrace", "model", "resume"], env=environment, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        backend = _wait_for_a_lock_wait(url)
        assert _appended_to_the_audit_log(url, backend)  # its application_started is written, in its transaction
        os.killpg(resume.pid, signal.SIGKILL)
        resume.wait(timeout=10)
        holder.rollback()
    _wait_gone(url, backend)

    assert _entries(store) == [(1, "application_stopped", SERVER)]
    [stop] = _outages(store)
    assert (stop.server, stop.stop) == (SERVER, True)
    done = radtrace("model", "resume", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"stop lifted on {SERVER} "), done.stdout
    assert _entries(store) == [(1, "application_stopped", SERVER), (2, "application_started", SERVER)]
    assert _outages(store) == []
    assert verify_chain(store).ok


def test_a_worker_held_for_an_outage_another_worker_saw_end_probes_at_once(store: Store) -> None:
    """Two workers held for the same server that does not answer; A's probe finds it back and closes the outage
    (its row goes). B, whose next probe was 30 s away, probes at once (its hold asks every second whether the row it
    saw is gone) and reads. Before, B waited for its backoff (up to model.server_probe_max_s, 60 s). By the order of
    events, not wall time: the server answers B only once B's recheck said the outage ended elsewhere, so B's hold
    ends by that path or not at all (its limit, 60 s, then gives up)."""
    answering, seen_ended = [False], [False]

    def notice(name: str) -> OutageNotice:
        actor = Actor(process=f"radtrace-worker@{name}")
        return OutageNotice(store, AuditRecorder(store, actor), actor, name, object(), utc_now, server=SERVER)

    a, b = notice("a"), notice("b")

    def recheck_b() -> bool:
        seen_ended[0] = seen_ended[0] or b.ended_elsewhere()
        return seen_ended[0]

    probe_a = lambda: None if answering[0] else "connection refused"  # noqa: E731
    probe_b = lambda: None if answering[0] and seen_ended[0] else "connection refused"  # noqa: E731
    breaker_a = ModelServerBreaker(probe_a, on_open=a.opened, on_close=a.closed, recheck=a.ended_elsewhere)
    breaker_b = ModelServerBreaker(probe_b, on_open=b.opened, on_close=b.closed, recheck=recheck_b,
                                   give_up_after_s=60.0)  # fmt: skip
    assert breaker_a.server_down()
    assert breaker_b.server_down()
    breaker_b.first_wait_s = 30.0
    assert [(o.server, o.stop) for o in _outages(store)] == [(SERVER, False)]

    def back() -> None:
        answering[0] = True
        assert not breaker_a.server_down()  # A's probe: the server answers, the outage closes

    threading.Timer(1.5, back).start()
    assert breaker_b.hold() is Hold.BACK  # B's probe after its recheck saw A's news: the only way it answers B
    assert seen_ended == [True]
    assert _outages(store) == []
    assert [kind for _, kind, _ in _entries(store)] == ["application_stopped", "application_started"]
