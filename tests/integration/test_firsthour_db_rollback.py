"""radtrace db upgrade / db current on a database that a newer radtrace migrated (the venv rolled back after an
upgrade), and what db upgrade says it did (found by the first-hour exploration).

Before: db current said "run 'radtrace db upgrade'", and db upgrade then ended in alembic's traceback
("CommandError: Can't locate revision identified by '0013'"); an upgrade from an older schema printed only
"database at revision 0012", the same as when there was nothing to do.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

from radtrace.store.engine import Store
from radtrace.store.migrate import MIGRATIONS, head_revision
from tests_support import radtrace

pytestmark = pytest.mark.integration


def migrated(tmp_path: Path) -> dict[str, str]:
    env = {"RADTRACE_DATA_DIR": str(tmp_path)}
    assert radtrace("db", "upgrade", env=env).returncode == 0
    return env


def set_revision(tmp_path: Path, revision: str) -> None:
    with sqlite3.connect(tmp_path / "radtrace.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_a_database_migrated_by_a_newer_radtrace_is_named_so_not_sent_to_db_upgrade(tmp_path: Path) -> None:
    env = migrated(tmp_path)
    newer = f"{int(head_revision()) + 1:04d}"
    set_revision(tmp_path, newer)
    for args in (["db", "current"], ["db", "upgrade"]):
        result = radtrace(*args, env=env)
        message = " ".join(result.stderr.split())
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert f"migrated by a newer radtrace (revision {newer}; this version knows up to {head_revision()})" in message
        assert "restore the backup taken before the upgrade" in message
        assert "run 'radtrace db upgrade'" not in message
    with sqlite3.connect(tmp_path / "radtrace.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(newer,)]


def test_db_upgrade_says_from_which_revision_or_that_there_was_nothing_to_do(tmp_path: Path) -> None:
    result = radtrace("db", "upgrade", env={"RADTRACE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f"database at revision {head_revision()} (created)" in result.stdout
    result = radtrace("db", "upgrade", env={"RADTRACE_DATA_DIR": str(tmp_path)})
    assert f"database at revision {head_revision()} (already; nothing to do)" in result.stdout


def test_db_upgrade_from_an_older_schema_names_the_revision_it_came_from(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    try:
        with store.engine.connect() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
            connection.commit()
    finally:
        store.dispose()
    result = radtrace("db", "upgrade", env={"RADTRACE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f"database at revision {head_revision()} (upgraded from 0004)" in result.stdout
    # SQLite: a consistent copy of the database as it was is kept beside it first, as serve does at start
    (kept,) = tmp_path.glob("radtrace.db.backup-0004-*")
    assert f"kept a copy of the database as it was (revision 0004) in {kept}" in result.stdout
    with sqlite3.connect(kept) as copy:
        assert copy.execute("SELECT version_num FROM alembic_version").fetchall() == [("0004",)]
    result = radtrace("db", "upgrade", env={"RADTRACE_DATA_DIR": str(tmp_path)})
    assert "kept a copy" not in result.stdout  # nothing to migrate, nothing to keep
    assert len(list(tmp_path.glob("radtrace.db.backup-*"))) == 1


def test_db_upgrade_waits_for_a_service_migrating_the_same_sqlite_database(tmp_path: Path) -> None:
    """A service starting on the database holds its migration lock (store.migrate.one_at_a_time): db upgrade waits
    for it instead of copying and migrating beside it."""
    import fcntl
    import os
    import subprocess
    import sys
    import time

    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    try:
        with store.engine.connect() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
            connection.commit()
    finally:
        store.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {"RADTRACE_DATA_DIR": str(tmp_path)}
    with (tmp_path / "radtrace.db.migrate.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a service migrating it at its start
        upgrading = subprocess.Popen([sys.executable, "-m", "radtrace", "db", "upgrade"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while upgrading.poll() is None and not _waits_for_a_lock(upgrading.pid):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert upgrading.poll() is None  # it waits for the lock, not migrating
            with sqlite3.connect(tmp_path / "radtrace.db") as connection:
                assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("0004",)]
            assert not list(tmp_path.glob("radtrace.db.backup*"))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            stdout, stderr = upgrading.communicate(timeout=120)
    assert upgrading.returncode == 0, stderr
    assert f"database at revision {head_revision()} (upgraded from 0004)" in stdout


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked waiting for a file lock (a '->' line of /proc/locks names the waiter)."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines() if len(line.split()) > 5)  # fmt: skip
