"""``radtrace db upgrade`` cut short as hospital IT meets it: a lock another client holds, PostgreSQL restarted in
the middle, SIGTERM (systemd, Ctrl-C), kill -9. Each ends in words saying where the database is, and the database is
at its old schema, untouched, or at the new one: every migration runs in one transaction.

Before: a DBA's psql idle in a transaction on a table a migration alters held ``db upgrade`` up without a word for as
long as it stayed; a restart said only "database unavailable while migrating the database"; SIGTERM and Ctrl-C said
nothing. Each migration waits here on a lock held by the test (deterministic: no timing), then is cut short."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from migration_support import run_sql, schema_revision, store_at_migration
from private_servers import PrivatePostgres, private_postgres
from radtrace.store.migrate import head_revision
from tests_support import radtrace

pytestmark = pytest.mark.integration

BEFORE = "0016"  # migrations 0022 and 0023 alter the outbox


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as private:
        yield private


@pytest.fixture
def url(server: PrivatePostgres) -> str:
    """A database at schema 0016 with a study in it."""
    found = server.create_database(f"cut_short_{uuid.uuid4().hex[:12]}")
    with store_at_migration(found, BEFORE):
        pass
    run_sql(found, "INSERT INTO studies (study_uid, study_key, created_at) VALUES ('1.2.3', 'k1', now())")
    return found


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    return {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url}


def _upgrade(url: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RADTRACE_")}
    environment |= {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "radtrace", "db", "upgrade", *args], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _waiting_for_a_lock(url: str, process: subprocess.Popen[str]) -> None:
    """Until the migration of ``process`` waits for a lock (60 s at most)."""
    name = f"radtrace db upgrade {process.pid}@{socket.gethostname()[:40]}"[:63]  # census.upgrade_application_name
    with psycopg.connect(_libpq(url), application_name="probe", autocommit=True) as probe:
        deadline = time.monotonic() + 60
        while not probe.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'", (name,)
        ).fetchall():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"db upgrade did not wait for the lock: {process.communicate()}")
            time.sleep(0.05)


def _said(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=120)
    return " ".join((out + err).split())


def _outbox_held(url: str, name: str = "nightly-report") -> psycopg.Connection:
    """A client (a DBA's report) idle in a transaction that read the outbox: it holds a lock the migration needs."""
    holder = psycopg.connect(_libpq(url), application_name=name)
    holder.execute("SELECT count(*) FROM outbox")
    return holder


def test_a_lock_held_by_another_client_stops_the_migration_naming_it_and_leaves_the_schema_untouched(
    url: str, tmp_path: Path
) -> None:
    with _outbox_held(url) as holder:
        pid = holder.info.backend_pid
        migrating = _upgrade(url, tmp_path, "--lock-wait", "1")
        said = _said(migrating)
        assert schema_revision(url) == BEFORE
    assert migrating.returncode == 1, said
    assert "Traceback" not in said
    assert f"the migration waits for a lock held by pid {pid} ('nightly-report' from 127.0.0.1 as postgres, idle in " \
           "transaction, its transaction since " in said, said  # fmt: skip
    assert (f"radtrace: the migration from schema {BEFORE} to schema {head_revision()} did not finish: it waited 1 s "
            f"for a lock held by pid {pid} ('nightly-report' from 127.0.0.1 as postgres, idle in transaction, its "
            "transaction since ") in said, said  # fmt: skip
    assert "and was stopped (--lock-wait; end that transaction, or SELECT pg_terminate_backend(<pid>) as a " in said
    assert f"the database is at schema {BEFORE}, untouched (the migration runs in one transaction)" in said, said
    done = radtrace("db", "upgrade", env=_env(url, tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert schema_revision(url) == head_revision()
    assert run_sql(url, "SELECT study_uid FROM studies") == [("1.2.3",)]


def test_postgresql_restarted_mid_migration_says_where_the_database_is(
    server: PrivatePostgres, url: str, tmp_path: Path
) -> None:
    holder = _outbox_held(url)
    migrating = _upgrade(url, tmp_path)  # --lock-wait's 30 s are far off: it waits on the lock when stopped
    try:
        _waiting_for_a_lock(url, migrating)
        server.stop("fast")  # ends every session: the holder's and the migration's
        server.start()
    finally:
        holder.close()
    said = _said(migrating)
    assert migrating.returncode == 1, said
    assert "Traceback" not in said
    assert f"radtrace: the migration from schema {BEFORE} to schema {head_revision()} did not finish: database " \
           "unavailable while migrating the database: " in said, said  # fmt: skip
    assert (f"so the database is at schema {BEFORE}, untouched, or at schema {head_revision()} if it had committed, "
            "never in between; run 'radtrace db upgrade' again once the cause is gone: it migrates, or says it is "
            "done") in said or f"the database is at schema {BEFORE}, untouched" in said, said  # fmt: skip
    assert schema_revision(url) == BEFORE
    done = radtrace("db", "upgrade", env=_env(url, tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert schema_revision(url) == head_revision()
    assert run_sql(url, "SELECT study_uid FROM studies") == [("1.2.3",)]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_stopped_mid_migration_says_so_and_leaves_the_schema_untouched(
    url: str, tmp_path: Path, stop: signal.Signals
) -> None:
    with _outbox_held(url):
        migrating = _upgrade(url, tmp_path)
        _waiting_for_a_lock(url, migrating)
        migrating.send_signal(stop)
        said = _said(migrating)
    assert migrating.returncode == 130, said
    assert "Traceback" not in said
    assert (f"radtrace: the migration from schema {BEFORE} to schema {head_revision()} did not finish: it was "
            f"interrupted (SIGTERM or Ctrl-C); the database is at schema {BEFORE}, untouched") in said  # fmt: skip
    assert schema_revision(url) == BEFORE


def test_killed_mid_migration_then_run_again_migrates(url: str, tmp_path: Path) -> None:
    """kill -9 says nothing: the database is at the old schema, and the next run migrates (the killed run's
    connection, of a process of this host that has ended, is not waited for)."""
    with _outbox_held(url):
        migrating = _upgrade(url, tmp_path)
        _waiting_for_a_lock(url, migrating)
        migrating.send_signal(signal.SIGKILL)
        migrating.communicate(timeout=60)
        assert schema_revision(url) == BEFORE
    done = radtrace("db", "upgrade", env=_env(url, tmp_path))
    shown = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, shown
    assert f"database at revision {head_revision()} (upgraded from {BEFORE})" in shown, shown
    assert run_sql(url, "SELECT study_uid FROM studies") == [("1.2.3",)]
