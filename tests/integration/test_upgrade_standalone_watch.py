"""A radtrace service started on its own (``radtrace api``, ``listen``, ``worker``; not under ``radtrace serve``)
and an ordinary command, once a newer radtrace raised the database's floor (radtrace.store.floor).

Before, only ``radtrace serve`` watched the floor while it ran: a standalone service, the way a multi-node site runs
them under systemd, had no row in ``nodes`` (a migration did not see it) and kept working on a database its code may
misread; and a command (``radtrace status``) read it without a word."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from migration_support import run_sql
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import radtrace, running_api

pytestmark = pytest.mark.integration


RAISE_FLOOR = (
    "UPDATE schema_floor SET min_schema = '0999_newer', min_version = '9.9.0', "
    "reason = 'older code misreads the new tables' WHERE id = 1"
)


@pytest.fixture
def migrated_url(database_url: str) -> str:
    store = Store.from_url(database_url)
    try:
        upgrade(store)
    finally:
        store.dispose()
    return database_url


def test_a_standalone_service_is_a_node_and_stops_once_the_floor_is_above_it(migrated_url: str, tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": migrated_url}
    log_file = tmp_path / "api.log"
    with running_api(env, log_file) as api:
        deadline = time.monotonic() + 30
        while run_sql(migrated_url, "SELECT role FROM nodes") != [("api",)]:
            assert time.monotonic() < deadline, run_sql(migrated_url, "SELECT role FROM nodes")
            time.sleep(0.2)
        run_sql(migrated_url, RAISE_FLOOR)
        api.process.wait(timeout=90)  # the watch looks every 10 s; then the SIGTERM path
        log = api.log()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "the database needs radtrace >= 9.9.0" in line]
    assert len(lines) == 1, log[-3000:]
    assert "this node runs radtrace " in lines[0]
    assert "upgrade this node" in lines[0]
    assert run_sql(migrated_url, "SELECT role FROM nodes") == []


def test_a_command_on_a_database_above_this_code_is_refused_with_both_versions(
    migrated_url: str, tmp_path: Path
) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": migrated_url}
    assert radtrace("status", env=env).returncode == 0
    run_sql(migrated_url, RAISE_FLOOR)
    result = radtrace("status", env=env)
    shown = result.stdout + result.stderr
    assert result.returncode == 1, shown
    assert "Traceback" not in shown
    assert "this node runs radtrace " in shown
    assert "the database needs radtrace >= 9.9.0" in shown
    assert "upgrade this node" in shown
