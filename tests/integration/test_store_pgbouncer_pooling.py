"""radtrace's store through a real pgbouncer (Debian's, 1.18) pooling transactions.

psycopg prepares a statement server-side once a connection has run it 5 times (its prepare_threshold). pgbouncer
1.18 pooling transactions gives each transaction whichever server connection is free: a statement prepared on one
was missing on the next, and the call failed permanently ('prepared statement "_pg3_N" does not exist', or 'already
exists' where the name was taken by another client's). Reproduced with the node heartbeat (nodes.renew_node, 4
threads on one store, 20 beats each: 10 of 80 failed). radtrace now prepares nothing (engine.PREPARE_THRESHOLD).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.nodes import register_node, renew_node
from radtrace.testing.services import free_port, temporary_postgres_database

pytestmark = pytest.mark.integration

PGBOUNCER = "/usr/sbin/pgbouncer"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database("radtrace_store_pgbouncer") as url:
        store = Store.from_url(url)
        try:
            upgrade(store)
        finally:
            store.dispose()
        yield url


@contextlib.contextmanager
def _pgbouncer(url: str, pool_mode: str) -> Iterator[str]:
    """A real pgbouncer in front of the database of ``url`` (trust, as the test server); yields its URL (as
    tests/integration/test_upgrade_pgbouncer.py starts one)."""
    if shutil.which(PGBOUNCER) is None:
        raise RuntimeError(f"{PGBOUNCER} not found: apt-get install pgbouncer")
    parsed = make_url(url)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="radtrace-pgbouncer-") as folder:
        directory = Path(folder)
        directory.chmod(0o755)  # run as root, pgbouncer drops to the postgres user (-u) and reads its files as it
        users = directory / "users.txt"
        users.write_text(f'"{parsed.username}" ""\n', encoding="utf-8")
        config = directory / "pgbouncer.ini"
        config.write_text(
            f"[databases]\n{parsed.database} = host={parsed.host} port={parsed.port or 5432} "
            f"dbname={parsed.database}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = {pool_mode}\n"
            "ignore_startup_parameters = extra_float_digits,options\n",
            encoding="utf-8",
        )
        for path in (users, config):
            path.chmod(0o644)
        log = directory / "pgbouncer.log"
        command_line = [PGBOUNCER, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(config)]
        with log.open("wb") as written:
            process = subprocess.Popen(command_line, stdout=written, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:  # listening: a connection is accepted
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"pgbouncer did not start: {log.read_text(errors='replace')}")
                time.sleep(0.05)
            yield parsed.set(port=port).render_as_string(hide_password=False)
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_the_heartbeat_repeated_survives_a_server_connection_taken_by_another_client(postgres_url: str) -> None:
    """One radtrace connection beats 8 times on pgbouncer's one server connection (its statements run more than
    psycopg's 5 times); another client then holds that server connection in a transaction, so the next beat runs on a
    fresh one. Before: that beat failed ('prepared statement "_pg3_N" does not exist'). Now it is recorded."""
    with _pgbouncer(postgres_url, "transaction") as bouncer:
        store = Store.from_url(bouncer, pool_size=1)
        try:
            register_node(store, "store-pgbouncer", "worker")
            for _ in range(8):
                renew_node(store, "store-pgbouncer", "worker")
            libpq = make_url(bouncer).set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(libpq) as other:
                other.execute("SELECT 1")  # in a transaction: pgbouncer's idle server connection is its now
                renew_node(store, "store-pgbouncer", "worker")
                other.rollback()
            with store.session() as session:
                seen = session.execute(sa.text("SELECT count(*) FROM nodes WHERE id = 'store-pgbouncer'")).scalar()
            assert seen == 1
        finally:
            store.dispose()


def test_a_store_prepares_no_statement_on_postgresql(postgres_url: str) -> None:
    """Straight to PostgreSQL too: a call repeated 10 times leaves no prepared statement on its connection (none to
    miss behind a pooler, no generic plan)."""
    store = Store.from_url(postgres_url, pool_size=1)
    try:
        register_node(store, "store-direct", "worker")
        for _ in range(10):
            renew_node(store, "store-direct", "worker")
        with store.session() as session:
            prepared = session.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar()
        assert prepared == 0
    finally:
        store.dispose()
