"""``radtrace db upgrade`` while a real radtrace of the version before the floor (commit 977afda, schema 0016, run from
its own source) still works on the database: refused, naming it, unless ``--force``.

The last rolling upgrade migrated the database under an older dispatcher, which then failed on the outbox state
``cancelled`` and marked draft withdrawals ``failed``. That version writes no ``nodes`` row; what shows it is its
PostgreSQL connection (no application name, as a role that may write radtrace's tables: this version names its own
``radtrace <pid>@<host>``) and, on SQLite, its DICOM
listener's lock in the data directory (radtrace.store.census.others_at_work)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command

from migration_support import schema_revision
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, head_revision
from radtrace.testing.services import free_port, temporary_postgres_database
from tests_support import radtrace, running_api

pytestmark = pytest.mark.integration

BEFORE_THE_FLOOR = "977afda"  # the last commit of main without radtrace.store.compat: schema 0016
BEFORE = "0016"
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def old_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """radtrace's ``src`` as it was at :data:`BEFORE_THE_FLOOR` (git archive), for PYTHONPATH."""
    target = tmp_path_factory.mktemp("before-the-floor")
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", BEFORE_THE_FLOOR, "src"], capture_output=True,
                             check=False)  # fmt: skip
    if archive.returncode != 0:
        pytest.skip(f"no git history with {BEFORE_THE_FLOOR} here: {archive.stderr.decode(errors='replace')[:200]}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def _old(env: dict[str, str], old_source: Path) -> dict[str, str]:
    return env | {"PYTHONPATH": str(old_source)}


def _at_before(url: str) -> None:
    """The database as the version before the floor migrated it (the same migrations, up to :data:`BEFORE`)."""
    store = Store.from_url(url)
    try:
        with store.engine.connect() as connection:
            command.upgrade(_config(connection), BEFORE)
            connection.commit()
    finally:
        store.dispose()
    assert schema_revision(url) == BEFORE


def _refused_then_forced(env: dict[str, str], url: str, seen: str) -> None:
    refused = radtrace("db", "upgrade", env=env)
    shown = refused.stdout + refused.stderr
    assert refused.returncode == 1, shown
    assert "Traceback" not in shown
    said = " ".join(shown.split())
    assert f"not migrating the database from schema {BEFORE} to {head_revision()}: other radtrace processes" in said
    assert seen in said, shown
    assert "Stop every radtrace process on every node first" in said
    assert schema_revision(url) == BEFORE  # untouched
    forced = radtrace("db", "upgrade", "--force", env=env)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert schema_revision(url) == head_revision()


def test_postgresql_an_old_api_still_connected_refuses_the_migration(old_source: Path, tmp_path: Path) -> None:
    with temporary_postgres_database() as url:
        env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url}
        _at_before(url)
        with running_api(_old(env, old_source), tmp_path / "old-api.log"):  # answered /healthz: connected
            _refused_then_forced(env, url, "that may write radtrace's tables (an older radtrace? ")


@contextlib.contextmanager
def _old_listener(env: dict[str, str], old_source: Path, port: int, log_file: Path) -> Iterator[None]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | _old(env, old_source)
    with log_file.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "radtrace", "listen"], env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while echoscu(port, timeout=10).returncode != 0:
            assert process.poll() is None, log_file.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the old listener did not answer C-ECHO within 60 s"
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_sqlite_an_old_listener_still_running_refuses_the_migration(old_source: Path, tmp_path: Path) -> None:
    data_dir, port = tmp_path / "var", free_port()
    url = f"sqlite:///{data_dir / 'radtrace.db'}"
    env = {
        "RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(port), "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_LISTENER__ALLOWED_CALLERS": json.dumps([{"ae_title": "PACS"}]),
    }  # fmt: skip
    _at_before(url)
    with _old_listener(env, old_source, port, tmp_path / "old-listener.log"):
        _refused_then_forced(env, url, f"a DICOM listener holding {data_dir.resolve() / 'listener.lock'}")
