"""``radtrace serve`` meets a database from another version: one a newer radtrace migrated is refused, saying so; an
older SQLite one is migrated after saying so and keeping a consistent copy beside it; a new one is made quietly.

Found by the first-hour exploration: a database a newer radtrace had migrated (the site rolled back after an upgrade)
ended serve's start-up checks in alembic's "Can't locate revision identified by ..." traceback (PostgreSQL: "run
'radtrace db upgrade'", which cannot help); an older SQLite database was migrated without a word and without a copy.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from migration_support import schema_revision
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, head_revision, upgrade
from radtrace.testing.services import free_port, temporary_postgres_database
from tests_support import radtrace, startup_table

pytestmark = pytest.mark.unit

FUTURE = "0999_from_a_newer_radtrace"
OLD = "0012"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def _env(data_dir: Path, **more: str) -> dict[str, str]:
    return {
        "RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_LISTENER__PORT": str(free_port()),
        "RADTRACE_API__PORT": str(free_port()), "RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true",
    } | more  # fmt: skip


def _stamp(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def newer_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """A data directory and a database at head, then stamped with a revision this version does not know."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    with temporary_postgres_database("radtrace_firsthour") if request.param == "postgresql" else _no_database() as pg:
        url = pg or f"sqlite:///{data_dir / 'radtrace.db'}"
        store = Store.from_url(url)
        try:
            upgrade(store)
        finally:
            store.dispose()
        _stamp(url, FUTURE)
        env = _env(data_dir) | ({"RADTRACE_STORE__URL": pg} if pg else {})
        yield env, url


class _no_database:  # noqa: N801 - stands in for temporary_postgres_database
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def test_serve_refuses_a_database_a_newer_radtrace_migrated(newer_database: tuple[dict[str, str], str]) -> None:
    env, url = newer_database
    result = radtrace("serve", env=env)
    shown = result.stdout + result.stderr
    assert result.returncode == 2, shown  # a change on this host (its radtrace), not a restart, fixes it
    assert "Traceback" not in shown
    assert "Can't locate revision" not in shown
    detail = startup_table(result.stdout)["database"][1]
    assert detail.startswith(f"the database was migrated by a newer radtrace (revision {FUTURE}; this version knows "
                             f"up to {head_revision()}): run the radtrace version that migrated it, or restore the "
                             "backup")  # fmt: skip
    assert "radtrace db upgrade" not in detail  # it cannot help
    assert result.stderr.strip() == "radtrace: start-up checks failed (database); see the table above", shown
    assert "started" not in result.stderr  # no child
    assert schema_revision(url) == FUTURE  # untouched


def _old_sqlite_database(data_dir: Path) -> str:
    """A SQLite database as radtrace at revision OLD left it, with one study in it."""
    data_dir.mkdir(parents=True)
    url = f"sqlite:///{data_dir / 'radtrace.db'}"
    store = Store.from_url(url)
    try:
        with store.engine.connect() as connection:
            command.upgrade(_config(connection), OLD)
            connection.commit()
        with store.engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO studies (study_uid, study_key, created_at) VALUES (:uid, 'k', '2026-12-01')"),
                {"uid": STUDY_UID},
            )
    finally:
        store.dispose()
    return url


def _serve_until_ready(env: dict[str, str]) -> tuple[str, str]:
    """Run ``radtrace serve`` until it prints what next, then stop it as systemctl stop would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {"COLUMNS": "200"} | env
    process = subprocess.Popen(
        [sys.executable, "-m", "radtrace", "serve"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Follow it:"):
                break
        process.send_signal(signal.SIGTERM)
        rest, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return "".join(lines) + rest, stderr


def test_serve_migrates_an_older_sqlite_database_after_saying_so_and_keeping_a_copy(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    url = _old_sqlite_database(data_dir)
    stdout, stderr = _serve_until_ready(_env(data_dir))
    assert "Traceback" not in stdout + stderr
    head = head_revision()
    backups = sorted(data_dir.glob("radtrace.db.backup-*"))
    assert len(backups) == 1, stdout + stderr
    backup = backups[0]
    assert backup.name.startswith(f"radtrace.db.backup-{OLD}-")
    assert startup_table(stdout)["database"][1] == (
        f"SQLite migrated from schema {OLD} to {head}; the database as it was is kept in {backup} "
        f"({data_dir / 'radtrace.db'})"
    )
    said = stderr.index(f"the database {data_dir / 'radtrace.db'} is at schema {OLD}; migrating it to {head}")
    assert said < stderr.index(f"kept a copy of the database as it was (schema {OLD}) in {backup}")
    assert said < stderr.index("started listener")
    # The copy is the old database, whole and consistent, in one file; the database itself is at head.
    with sqlite3.connect(backup) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT version_num FROM alembic_version").fetchone() == (OLD,)
        assert copy.execute("SELECT study_uid FROM studies").fetchall() == [(STUDY_UID,)]
    assert not backup.with_name(backup.name + "-wal").exists()
    assert not list(data_dir.glob("*.partial"))
    assert schema_revision(url) == head
    with sqlite3.connect(data_dir / "radtrace.db") as migrated:
        assert migrated.execute("SELECT study_uid FROM studies").fetchall() == [(STUDY_UID,)]


def test_a_new_database_is_made_without_talk_of_migrating(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with socket.socket() as held:  # the QA API's port taken: serve stops right after its checks (exit 2)
        held.bind(("127.0.0.1", 0))
        held.listen()
        result = radtrace("serve", env=_env(data_dir, RADTRACE_API__PORT=str(held.getsockname()[1])))
    assert result.returncode == 2, result.stdout + result.stderr
    detail = startup_table(result.stdout)["database"][1]
    assert detail == f"SQLite created at schema {head_revision()} ({data_dir / 'radtrace.db'})"
    assert "migrat" not in (result.stdout + result.stderr).lower()
    assert not list(data_dir.glob("radtrace.db.backup-*"))


def test_a_copy_cut_short_by_an_earlier_start_is_replaced(tmp_path: Path) -> None:
    """Ctrl-C (or a power cut) during the copy left its temporary file; the next start copies again and leaves none."""
    data_dir = tmp_path / "var"
    _old_sqlite_database(data_dir)
    (data_dir / "radtrace.db.backup.partial").write_bytes(b"SQLite format 3\x00 cut short")
    with socket.socket() as held:  # the QA API's port taken: serve stops right after its checks (exit 2)
        held.bind(("127.0.0.1", 0))
        held.listen()
        result = radtrace("serve", env=_env(data_dir, RADTRACE_API__PORT=str(held.getsockname()[1])))
    assert result.returncode == 2, result.stdout + result.stderr
    assert not list(data_dir.glob("*.partial"))
    (backup,) = data_dir.glob(f"radtrace.db.backup-{OLD}-*")
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT study_uid FROM studies").fetchall() == [(STUDY_UID,)]


def test_two_services_starting_together_migrate_once_and_keep_one_copy(tmp_path: Path) -> None:
    """systemd units for listen and worker on one SQLite database start at the same moment. Before, both copied it
    and both said they migrated it, or (two copies under one temporary name) both start-up checks failed."""
    data_dir = tmp_path / "var"
    _old_sqlite_database(data_dir)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {"COLUMNS": "200"}
    with socket.socket() as held:  # the QA API's port taken: each serve stops right after its checks (exit 2)
        held.bind(("127.0.0.1", 0))
        held.listen()
        env = environment | _env(data_dir, RADTRACE_API__PORT=str(held.getsockname()[1]))
        starts = [
            subprocess.Popen([sys.executable, "-m", "radtrace", "serve"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]  # fmt: skip
        outputs = [start.communicate(timeout=120) for start in starts]
    databases = sorted(startup_table(stdout)["database"][1] for stdout, _ in outputs)
    (backup,) = data_dir.glob(f"radtrace.db.backup-{OLD}-*")
    head = head_revision()
    assert databases == sorted([
        f"SQLite at schema {head} ({data_dir / 'radtrace.db'})",
        f"SQLite migrated from schema {OLD} to {head}; the database as it was is kept in {backup} "
        f"({data_dir / 'radtrace.db'})",
    ]), outputs  # fmt: skip
