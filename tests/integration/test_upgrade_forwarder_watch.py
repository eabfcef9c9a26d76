"""``radtrace audit forward`` run on its own (the ATNA forwarder as its own service, not a child of ``radtrace
serve``) is a node like the other services: a row of ``nodes`` while it runs, and the watch on the database's floor.

Before, it wrote no row and watched nothing: ``radtrace db upgrade`` did not see it (on PostgreSQL its idle
connection, backing off from an unreachable repository, was taken for a connection pooler's leftover once idle
longer than ``store.node_stale_after_s``), and once a newer radtrace raised the floor it kept reading an audit log its
code may misread, for ever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from migration_support import run_sql
from radtrace.store.census import others_at_work
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

RAISE_FLOOR = (
    "UPDATE schema_floor SET min_schema = '0999_newer', min_version = '9.9.0', "
    "reason = 'older code misreads the new tables' WHERE id = 1"
)
ROLE = "atna forwarder"


@pytest.fixture
def migrated_url(database_url: str) -> str:
    store = Store.from_url(database_url)
    try:
        upgrade(store)
    finally:
        store.dispose()
    return database_url


@contextmanager
def forwarder(url: str, tmp_path: Path, *, served: bool = False) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The real ``radtrace audit forward`` (a repository that refuses: it backs off, as during an ARR outage), its
    output in a file; ``served``: as ``radtrace serve`` starts it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {
        "RADTRACE_DATA_DIR": str(tmp_path / "var"),
        "RADTRACE_STORE__URL": url,
        "RADTRACE_ATNA__HOST": "127.0.0.1",
        "RADTRACE_ATNA__PORT": str(free_port()),  # nothing listens: connection refused, backoff
        "RADTRACE_ATNA__TRANSPORT": "tcp",
        "RADTRACE_ATNA__BACKOFF_MAX_S": "1",
        "RADTRACE_STORE__NODE_WATCH_INTERVAL_S": "1",
        "RADTRACE_STORE__NODE_STALE_AFTER_S": "5",
    }
    if served:
        from radtrace.supervisor import SERVED_CHILD_ENV

        environment[SERVED_CHILD_ENV] = "1"
    log_file = tmp_path / "forward.log"
    with log_file.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "radtrace", "audit", "forward"], env=environment,
                                   stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield process, log_file
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _roles(url: str) -> list[str]:
    return [str(row[0]) for row in run_sql(url, "SELECT role FROM nodes")]


def _wait_for(condition: Callable[[], bool], what: str, log_file: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: {log_file.read_text(errors='replace')[-3000:]}"
        time.sleep(0.1)


def test_a_standalone_forwarder_is_a_node_and_stops_with_exit_2_once_the_floor_is_above_it(
    migrated_url: str, tmp_path: Path
) -> None:
    with forwarder(migrated_url, tmp_path) as (process, log_file):
        _wait_for(lambda: _roles(migrated_url) == [ROLE], "the forwarder's row in nodes", log_file)
        # What 'radtrace db upgrade' refuses to migrate under: the forwarder, by name, with its pid.
        store = Store.from_url(migrated_url)
        try:
            seen = others_at_work(store, stale_after_s=5)
        finally:
            store.dispose()
        assert any(line.startswith(f"{ROLE} on ") and f"(pid {process.pid}," in line for line in seen), seen
        run_sql(migrated_url, RAISE_FLOOR)
        _wait_for(lambda: process.poll() is not None, "the forwarder stopping on the raised floor", log_file)
    log = log_file.read_text(errors="replace")
    assert process.returncode == 2, log[-3000:]
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "the database needs radtrace >= 9.9.0" in line]
    assert len(lines) == 1, log[-3000:]
    assert "this node runs radtrace " in lines[0]
    assert "upgrade this node" in lines[0]
    assert f"This {ROLE} (pid {process.pid}) stops taking work now" in lines[0]
    assert "audit forwarder stopped" in log.splitlines()[-1], log[-3000:]
    assert _roles(migrated_url) == []


def test_a_forwarder_under_serve_leaves_the_row_and_the_watch_to_serve(migrated_url: str, tmp_path: Path) -> None:
    with forwarder(migrated_url, tmp_path, served=True) as (process, log_file):
        _wait_for(lambda: "ATNA forwarding paused" in log_file.read_text(errors="replace"), "the first try", log_file)
        assert _roles(migrated_url) == []  # serve's own row ("serve") stands for its children
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, log_file.read_text(errors="replace")[-3000:]
