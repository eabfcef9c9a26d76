"""``radtrace db upgrade`` when radtrace reaches PostgreSQL through a real pgbouncer (Debian's, 1.18).

Measured here: pgbouncer gives each server connection its client's ``application_name`` (a ``SET``). With
transaction pooling it runs no reset when a client leaves, so the idle server connection keeps the name
``radtrace <pid>@<host>`` after that process has ended, until pgbouncer closes it (``server_idle_timeout``, 600 s by
default); with session pooling its ``DISCARD ALL`` leaves the connection unnamed. Before, that left-over name held
``db upgrade`` up as "another radtrace process at work" for as long as pgbouncer kept the connection. Now a radtrace
name on a connection idle for longer than ``store.node_stale_after_s``, whose process has no live ``nodes`` row, is
named (pgbouncer's, not waited for); a radtrace connection in a transaction, or used within that time, still holds
the migration up (radtrace.store.census)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url

from pgbouncer_support import pgbouncer
from radtrace.store.engine import Store
from radtrace.store.migrate import OthersAtWorkError, _config, head_revision, refuse_while_others_work
from radtrace.testing.services import temporary_postgres_database
from tests_support import radtrace

pytestmark = pytest.mark.integration


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database("radtrace_upgrade_pgbouncer") as url:
        store = Store.from_url(url)
        try:
            with store.engine.connect() as connection:
                command.upgrade(_config(connection), "0024")  # the floor and nodes, one migration to go at least
                connection.commit()
        finally:
            store.dispose()
        yield url


def _radtrace_process(url: str, *, host: str | None = None, hold_transaction: bool = False) -> subprocess.Popen[str]:
    """Another process with radtrace's engine (its connections named ``radtrace <pid>@<host>``; ``host``: as if on
    that machine) on ``url``: one query, then either its end or its transaction held open until stdin closes."""
    code = (
        "import socket, sys; import sqlalchemy as sa; "
        + (f"socket.gethostname = lambda: {host!r}; " if host is not None else "")
        + "from radtrace.store.engine import Store; "
        "s = Store.from_url(sys.argv[1]); c = s.engine.connect(); c.execute(sa.text('SELECT 1')); "
        + (
            "print('in a transaction', flush=True); sys.stdin.read(); c.rollback()"
            if hold_transaction
            else "c.commit()"
        )
        + "; c.close(); s.dispose()"
    )
    return subprocess.Popen([sys.executable, "-c", code, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip


def _stopped(url: str, host: str | None = None) -> str:
    """The name of a radtrace process (of ``host``, else this one) that connected to ``url``, queried, and ended."""
    stopped = _radtrace_process(url, host=host)
    stopped.communicate(timeout=60)
    assert stopped.returncode == 0
    return f"radtrace {stopped.pid}@{(host or socket.gethostname())[:40]}"


def _named(url: str, name: str) -> list[tuple[str, float]]:
    """The connections named ``name`` in pg_stat_activity: (state, seconds since its last change)."""
    with psycopg.connect(_libpq(url), application_name="probe", autocommit=True) as probe:
        rows = probe.execute(
            "SELECT state, EXTRACT(EPOCH FROM clock_timestamp() - state_change)::float FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (name,),
        ).fetchall()
    return [(str(state), float(idle)) for state, idle in rows]


def _idle_for(url: str, name: str, seconds: float, state: str) -> None:
    """Wait (30 s at most) until the connection named ``name`` has been in ``state`` for over ``seconds``."""
    deadline = time.monotonic() + 30
    while not any(found == state and idle > seconds for found, idle in _named(url, name)):
        if time.monotonic() > deadline:
            pytest.fail(f"no connection {name!r} {state} for {seconds} s: {_named(url, name)}")
        time.sleep(0.2)


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    return {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url,
            "RADTRACE_STORE__NODE_WATCH_INTERVAL_S": "1", "RADTRACE_STORE__NODE_STALE_AFTER_S": "2"}  # fmt: skip


def test_transaction_pooling_a_stopped_process_s_name_left_on_an_idle_server_connection_is_not_waited_for(
    postgres_url: str, tmp_path: Path
) -> None:
    """A radtrace of another machine (ris-gw-2) that used pgbouncer and stopped: its name stays on pgbouncer's idle
    server connection. Used within ``store.node_stale_after_s`` it counts (the words say why); idle longer, it is
    named and ``db upgrade`` migrates."""
    with pgbouncer(postgres_url, "transaction") as bounced:
        name = _stopped(bounced, "ris-gw-2")
        assert [state for state, _idle in _named(postgres_url, name)] == ["idle"]  # what pgbouncer left behind
        store = Store.from_url(postgres_url)
        try:  # used just now: it may still be a radtrace at work (the default 30 s)
            with pytest.raises(OthersAtWorkError) as refused:
                refuse_while_others_work(store, "0024", head_revision())
        finally:
            store.dispose()
        _idle_for(postgres_url, name, 2.5, "idle")
        done = radtrace("db", "upgrade", env=_env(postgres_url, tmp_path))
        assert _named(postgres_url, name), "pgbouncer closed its connection: nothing was shown"
    reason = " ".join(refused.value.reason.split())
    assert f"work on it: 1 '{name}' connection from 127.0.0.1 as postgres, since " in reason, reason
    assert re.search(
        r"idle \d+ s \(behind a connection pooler such as pgbouncer it may be a stopped client's name: "
        r"not waited for once idle for 30 s\)",
        reason,
    ), reason
    shown = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, shown
    assert f"database at revision {head_revision()} (upgraded from 0024)" in shown, shown
    assert f"also connected, not radtrace (not waited for): 1 '{name}' connection from 127.0.0.1 as postgres" in shown
    assert re.search(
        r"as postgres, since [^;]*, idle \d+ s, of no radtrace process seen \(a connection pooler such as "
        r"pgbouncer keeps",
        shown,
    ), shown


def test_transaction_pooling_a_stopped_process_of_this_host_is_not_waited_for_at_once(postgres_url: str) -> None:
    """A name of this host is judged by its process: ended, it is pgbouncer's left-over, however recent."""
    with pgbouncer(postgres_url, "transaction") as bounced:
        name = _stopped(bounced)
        assert [state for state, _idle in _named(postgres_url, name)] == ["idle"]
        store = Store.from_url(postgres_url)
        try:
            clients = refuse_while_others_work(store, "0024", head_revision())  # the default 30 s
        finally:
            store.dispose()
    pid = name.split()[1].split("@")[0]
    assert len(clients) == 1, clients
    assert clients[0].startswith(f"1 '{name}' connection from 127.0.0.1 as postgres, since "), clients
    assert clients[0].endswith(
        f", of process {pid} of this host, which has ended (a connection pooler such as "
        "pgbouncer keeps a stopped client's name on its idle server connection)"
    ), clients


def test_a_radtrace_process_in_a_transaction_through_pgbouncer_still_holds_up_the_migration(postgres_url: str) -> None:
    with pgbouncer(postgres_url, "transaction") as bounced:
        working = _radtrace_process(bounced, host="gpu-node-3", hold_transaction=True)
        assert working.stdout is not None
        assert working.stdin is not None
        try:
            assert working.stdout.readline().strip() == "in a transaction"
            name = f"radtrace {working.pid}@gpu-node-3"
            _idle_for(postgres_url, name, 2.5, "idle in transaction")  # past the staleness limit, yet in a transaction
            store = Store.from_url(postgres_url)
            try:
                with pytest.raises(OthersAtWorkError) as refused:
                    refuse_while_others_work(store, "0024", head_revision(), stale_after_s=2)
            finally:
                store.dispose()
        finally:
            working.stdin.close()
            working.wait(timeout=60)
            working.stdout.close()
    reason = " ".join(refused.value.reason.split())
    assert f"other radtrace processes work on it: 1 '{name}' connection from 127.0.0.1 as postgres, since " in reason
    assert "idle" not in reason.split(f"'{name}'")[1].split(". Stop every")[0], reason  # in a transaction


def test_session_pooling_leaves_a_stopped_process_s_server_connection_unnamed(postgres_url: str) -> None:
    """pgbouncer's ``DISCARD ALL`` (session pooling) resets the name: the idle server connection is an unnamed
    client, named and not waited for (from the floor's migration 0024 on)."""
    with pgbouncer(postgres_url, "session") as bounced:
        assert _named(postgres_url, _stopped(bounced, "ris-gw-2")) == []
        store = Store.from_url(postgres_url)
        try:
            clients = refuse_while_others_work(store, "0024", head_revision())
        finally:
            store.dispose()
    assert [client.split(", since")[0] for client in clients] == ["1 unnamed connection from 127.0.0.1 as postgres"]


@pytest.fixture
def at_0023_url() -> Iterator[str]:
    """A database at schema 0023, below the floor's migration: an older radtrace named no connection of its own."""
    with temporary_postgres_database("radtrace_upgrade_pgbouncer_0023") as url:
        store = Store.from_url(url)
        try:
            with store.engine.connect() as connection:
                command.upgrade(_config(connection), "0023")
                connection.commit()
        finally:
            store.dispose()
        yield url


def _unnamed(url: str) -> list[tuple[str, str]]:
    """The unnamed connections in pg_stat_activity: (state, last statement)."""
    with psycopg.connect(_libpq(url), application_name="probe", autocommit=True) as probe:
        rows = probe.execute(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = '' AND backend_type = 'client backend'"
        ).fetchall()
    return [(str(state), str(query)) for state, query in rows]


def test_session_pooling_below_the_floor_a_stopped_old_radtrace_s_reset_connection_is_not_waited_for(
    at_0023_url: str, tmp_path: Path
) -> None:
    """Below migration 0024 an unnamed connection whose role may write radtrace's tables is counted (an older
    radtrace named none). pgbouncer pooling sessions leaves an unnamed idle server connection too once its client has
    gone, whose last statement is its reset, ``DISCARD ALL``: before, it held ``db upgrade`` up as 'an older
    radtrace?' until pgbouncer closed it (``server_idle_timeout``, 600 s) or ``--force``. Now it is named as the
    pooler's and the database migrates."""
    with pgbouncer(at_0023_url, "session") as bounced:
        with psycopg.connect(_libpq(bounced), autocommit=True) as old:  # an older radtrace: psycopg's defaults
            old.execute("SELECT count(*) FROM outbox")
        deadline = time.monotonic() + 30
        while _unnamed(at_0023_url) != [("idle", "DISCARD ALL")]:  # what pgbouncer leaves behind, once it has reset
            if time.monotonic() > deadline:
                pytest.fail(f"pgbouncer did not reset its server connection: {_unnamed(at_0023_url)}")
            time.sleep(0.05)
        done = radtrace("db", "upgrade", env=_env(at_0023_url, tmp_path))
        assert _unnamed(at_0023_url), "pgbouncer closed its connection: nothing was shown"
    shown = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, shown
    assert f"database at revision {head_revision()} (upgraded from 0023)" in shown, shown
    assert re.search(
        r"also connected, not radtrace \(not waited for\): 1 unnamed connection from 127\.0\.0\.1 as postgres, since "
        r"[^;]*, idle after a connection pooler's reset \(its last statement was its server_reset_query, DISCARD ALL",
        shown,
    ), shown


def test_session_pooling_below_the_floor_an_old_radtrace_still_connected_holds_it_up_and_the_refusal_says_the_way(
    at_0023_url: str, tmp_path: Path
) -> None:
    """An older radtrace still connected through pgbouncer (session pooling: its server connection shows its own
    last statement, not the reset) holds the migration up; the refusal names pgbouncer's address and says how to
    close a pooler's idle server connections (RECONNECT, server_idle_timeout). Nothing is migrated."""
    with pgbouncer(at_0023_url, "session") as bounced, psycopg.connect(_libpq(bounced), autocommit=True) as old:
        old.execute("SELECT count(*) FROM outbox")
        refused = radtrace("db", "upgrade", env=_env(at_0023_url, tmp_path))
    shown = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode == 1, shown
    assert "not migrating the database from schema 0023 to" in shown, shown
    assert re.search(
        r"1 unnamed connection from 127\.0\.0\.1 as postgres, since [^;]* that may write radtrace's tables \(an older "
        r"radtrace\? if 127\.0\.0\.1 is a connection pooler \(pgbouncer\) with no radtrace left "
        r"behind it, close its idle server connections \(pgbouncer's admin console: RECONNECT <database>, or KILL "
        r"<database> then RESUME <database>\) or wait for its server_idle_timeout",
        shown,
    ), shown
    store = Store.from_url(at_0023_url)
    try:
        with store.engine.connect() as connection:
            assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0023"
    finally:
        store.dispose()
