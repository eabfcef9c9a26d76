"""``radtrace db upgrade`` on the real PostgreSQL beside clients that are not radtrace (radtrace.store.census).

Before, any connection to the database with no application name held the migration up until ``--force``: a hospital
DBA's Prometheus postgres_exporter (lib/pq names none), a pgbouncer, a script on psycopg's defaults. What a connection
of radtrace's looks like in pg_stat_activity (measured here: psycopg's default '' , psql 'psql', every engine of
radtrace.store.engine 'radtrace'): only those count now, and an unnamed one whose role may write radtrace's tables
while the database has no floor yet (radtrace before the floor named none). The others are named, not waited for."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url

from radtrace.store.engine import Store
from radtrace.store.migrate import OthersAtWorkError, _config, head_revision, refuse_while_others_work, upgrade
from radtrace.testing.services import temporary_postgres_database
from tests_support import radtrace

pytestmark = pytest.mark.integration


def _libpq(url: str, user: str | None = None) -> str:
    """``url`` as a libpq URL (psql, psycopg), as ``user`` when given."""
    parsed = make_url(url).set(drivername="postgresql")
    if user is not None:
        parsed = parsed.set(username=user, password=None)
    return parsed.render_as_string(hide_password=False)


def _at(url: str, revision: str) -> None:
    store = Store.from_url(url)
    try:
        with store.engine.connect() as connection:
            command.upgrade(_config(connection), revision)
            connection.commit()
    finally:
        store.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database("radtrace_upgrade_clients") as url:
        yield url


@contextlib.contextmanager
def _psql(url: str) -> Iterator[None]:
    """The real psql, connected and waiting (application name 'psql')."""
    process = subprocess.Popen(["psql", "-X", "-q", _libpq(url)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert process.stdin is not None
    try:
        process.stdin.write("SELECT 1;\n")  # an answered query: connected
        process.stdin.flush()
        with psycopg.connect(_libpq(url), application_name="probe", autocommit=True) as probe:  # a fresh view each time
            for _ in range(200):
                found = probe.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql' "
                                      "AND datname = current_database()").fetchone()  # fmt: skip
                if found and found[0]:
                    break
                probe.execute("SELECT pg_sleep(0.05)")
            else:
                pytest.fail("psql did not connect")
        yield
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def test_a_monitoring_exporter_psql_and_an_unnamed_script_do_not_hold_up_a_migration(postgres_url: str) -> None:
    store = Store.from_url(postgres_url)
    try:
        upgrade(store)
        with (
            psycopg.connect(_libpq(postgres_url)),  # psycopg's and lib/pq's default: no application name
            psycopg.connect(_libpq(postgres_url), application_name="postgres_exporter"),
            _psql(postgres_url),
        ):
            clients = refuse_while_others_work(store, "0024", head_revision())
    finally:
        store.dispose()
    said = "; ".join(clients)
    assert "1 unnamed connection from 127.0.0.1 as " in said, said
    assert "1 'postgres_exporter' connection from 127.0.0.1 as " in said, said
    assert "1 'psql' connection " in said, said
    assert len(clients) == 3, clients


@contextlib.contextmanager
def _radtrace_command(url: str) -> Iterator[int]:
    """Another process with a connection of radtrace's own engine open (a radtrace command: no ``nodes`` row)."""
    code = ("import sys; import sqlalchemy as sa; from radtrace.store.engine import Store; "
            "c = Store.from_url(sys.argv[1]).engine.connect(); c.execute(sa.text('SELECT 1')); "
            "print('connected', flush=True); sys.stdin.read()")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", code, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "connected"
        yield process.pid
    finally:
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()


def test_another_radtrace_process_connected_holds_up_a_migration_this_one_does_not(postgres_url: str) -> None:
    """radtrace names each connection ``radtrace <pid>@<host>`` (pg_stat_activity): another process's counts, the
    migrating process's own pooled ones do not, nor an unnamed client."""
    store, pooled = Store.from_url(postgres_url), Store.from_url(postgres_url)
    try:
        upgrade(store)
        with pooled.engine.connect() as connection, psycopg.connect(_libpq(postgres_url)):
            connection.execute(sa.text("SELECT 1"))  # this process's: not another at work
            assert refuse_while_others_work(store, "0024", head_revision())[0].startswith("1 unnamed connection")
            with _radtrace_command(postgres_url) as pid, pytest.raises(OthersAtWorkError) as refused:
                refuse_while_others_work(store, "0024", head_revision())
            with (
                psycopg.connect(_libpq(postgres_url), application_name="radtrace"),  # the floor's first code's name
                pytest.raises(OthersAtWorkError, match=r"1 'radtrace' connection from 127\.0\.0\.1"),
            ):
                refuse_while_others_work(store, "0024", head_revision())
    finally:
        pooled.dispose()
        store.dispose()
    reason = refused.value.reason
    name = f"radtrace {pid}@{socket.gethostname()[:40]}"
    assert f"other radtrace processes work on it: 1 '{name}' connection from 127.0.0.1 as " in reason, reason
    assert "(Not radtrace, not waited for: 1 unnamed connection from 127.0.0.1 as " in reason, reason
    assert f"radtrace {os.getpid()}@" not in reason


def test_before_the_floor_an_unnamed_connection_counts_only_as_a_role_that_may_write(postgres_url: str) -> None:
    """A database before migration 0024: radtrace then named no connection, so an unnamed one whose role may write
    the outbox may be an older radtrace, idle; a monitoring role (pg_monitor) may not write, and is only named."""
    _at(postgres_url, "0023")
    monitor = f"radtrace_test_monitor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{monitor}" LOGIN IN ROLE pg_monitor')
    store = Store.from_url(postgres_url)
    try:
        with psycopg.connect(_libpq(postgres_url, monitor)):
            clients = refuse_while_others_work(store, "0023", head_revision())
            assert [line.split(" from ")[0] for line in clients] == ["1 unnamed connection"], clients
            assert f" as {monitor}" in clients[0]
            with psycopg.connect(_libpq(postgres_url)), pytest.raises(OthersAtWorkError) as refused:
                refuse_while_others_work(store, "0023", head_revision())
    finally:
        store.dispose()
        with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{monitor}"')
    reason = refused.value.reason
    assert "that may write radtrace's tables (an older radtrace? " in reason, reason
    assert f"(Not radtrace, not waited for: 1 unnamed connection from 127.0.0.1 as {monitor}" in reason, reason


def test_db_upgrade_migrates_beside_an_unnamed_client_and_names_it(postgres_url: str, tmp_path: Path) -> None:
    _at(postgres_url, "0024")
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": postgres_url}
    with psycopg.connect(_libpq(postgres_url)):  # a DBA's exporter on lib/pq's defaults
        done = radtrace("db", "upgrade", env=env)
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown
    assert f"database at revision {head_revision()} (upgraded from 0024)" in shown
    said = " ".join(done.stderr.split())
    assert "also connected, not radtrace (not waited for): 1 unnamed connection from 127.0.0.1 as " in said, shown


def test_a_migrating_role_without_pg_read_all_stats_still_tells_radtrace_from_others(postgres_url: str) -> None:
    """Such a role sees another role's sessions without address, start or backend type (NULL): radtrace's are still
    counted by their names, an unnamed client is still only named."""
    role = f"radtrace_test_owner_{uuid.uuid4().hex[:8]}"
    store = Store.from_url(postgres_url)
    try:
        upgrade(store)
    finally:
        store.dispose()
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    limited = Store.from_url(_libpq(postgres_url, role).replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with psycopg.connect(_libpq(postgres_url)):  # an unnamed client of another role
            assert refuse_while_others_work(limited, "0024", head_revision()) == [
                "1 unnamed connection with no address shown as postgres"
            ]
            with _radtrace_command(postgres_url) as pid, pytest.raises(OthersAtWorkError) as refused:
                refuse_while_others_work(limited, "0024", head_revision())
    finally:
        limited.dispose()
        with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    name = f"radtrace {pid}@{socket.gethostname()[:40]}"
    assert f"work on it: 1 '{name}' connection with no address shown as postgres." in refused.value.reason


def test_below_the_floor_a_pooler_s_reset_connection_is_recognised_only_by_a_role_shown_its_statement(
    postgres_url: str,
) -> None:
    """An unnamed connection whose last statement was a pooler's reset (``DISCARD ALL``, what pgbouncer pooling
    sessions runs when a client leaves), idle, is the pooler's. A role without pg_read_all_stats is not shown another
    role's statement: it still counts it, and the words say how to let it tell (pg_read_all_stats) or close the
    pooler's connections; granted pg_read_all_stats, the same role names it and does not wait for it."""
    _at(postgres_url, "0023")
    role = f"radtrace_test_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    limited = Store.from_url(_libpq(postgres_url, role).replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with psycopg.connect(_libpq(postgres_url), autocommit=True) as pooled:  # as pgbouncer leaves it
            pooled.execute("DISCARD ALL")
            with pytest.raises(OthersAtWorkError) as refused:
                refuse_while_others_work(limited, "0023", head_revision())
            with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
                admin.execute(f'GRANT pg_read_all_stats TO "{role}"')
            limited.dispose()  # a fresh session: the grant is read at its start
            clients = refuse_while_others_work(limited, "0023", head_revision())
    finally:
        limited.dispose()
        with psycopg.connect(_libpq(postgres_url), autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    reason = " ".join(refused.value.reason.split())
    assert "work on it: 1 unnamed connection with no address shown as postgres that may write radtrace's tables " \
           "(an older radtrace? if its address is a connection pooler (pgbouncer)" in reason, reason  # fmt: skip
    assert "its state and last statement are not shown to this role: with pg_read_all_stats granted to it, a " \
           "pooler's idle server connection is recognised)" in reason, reason  # fmt: skip
    assert len(clients) == 1, clients
    assert clients[0].startswith("1 unnamed connection from 127.0.0.1 as postgres, since "), clients
    assert clients[0].endswith(", idle after a connection pooler's reset (its last statement was its "
                               "server_reset_query, DISCARD ALL: pgbouncer in session pooling keeps such a "
                               "connection after its client left)"), clients  # fmt: skip
