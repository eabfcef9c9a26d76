"""Every long-running command started on a PostgreSQL database whose floor is above its code exits 2, in one line
naming both versions, and the systemd unit that runs it does not restart it after exit 2 (RestartPreventExitStatus=2).

Before, ``radtrace listen``, ``worker`` (inference and dispatch-only) and ``api`` exited 1 there (the database check's
failure was not one only this host can fix), so their units (Restart=on-failure) restarted them every 5 to 10 s on
every host left on the old version until it was upgraded; ``radtrace audit forward`` alone exited 2 (4be9173).
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from migration_support import run_sql
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.integration

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
RAISE_FLOOR = (
    "UPDATE schema_floor SET min_schema = '0999_newer', min_version = '9.9.0', "
    "reason = 'older code misreads the new tables' WHERE id = 1"
)
#: Each long-running command as its systemd unit starts it (deploy/systemd), by the unit's file name.
COMMANDS = {
    "radtrace-listener.service": ("listen",),
    "radtrace-worker@.service": ("worker", "--queues=gpu", "--no-reconcile"),
    "radtrace-dispatcher.service": ("worker", "--queues=dispatch", "--concurrency=1"),
    "radtrace-api.service": ("api",),
    "radtrace-audit-forward.service": ("audit", "forward"),
}


def _environment(url: str, data_dir: Path) -> dict[str, str]:
    return {
        "RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_STORE__URL": url,
        "RADTRACE_LISTENER__PORT": str(free_port()), "RADTRACE_API__PORT": str(free_port()),
        "RADTRACE_ATNA__HOST": "127.0.0.1", "RADTRACE_ATNA__PORT": str(free_port()), "RADTRACE_ATNA__TRANSPORT": "tcp",
    }  # fmt: skip


def test_every_long_running_command_below_the_floor_exits_2_in_one_line(postgres_url: str, tmp_path: Path) -> None:
    store = Store.from_url(postgres_url)
    try:
        upgrade(store)
    finally:
        store.dispose()
    run_sql(postgres_url, RAISE_FLOOR)

    def start(unit: str) -> subprocess.CompletedProcess[str]:
        return radtrace(*COMMANDS[unit], env=_environment(postgres_url, tmp_path / unit), timeout=180)

    with ThreadPoolExecutor(max_workers=len(COMMANDS)) as pool:
        results = dict(zip(COMMANDS, pool.map(start, COMMANDS), strict=True))

    for unit, result in results.items():
        shown = f"{unit}: {result.stdout}{result.stderr}"
        assert result.returncode == 2, shown
        assert "Traceback" not in shown
        said = [line for line in shown.splitlines() if "the database needs radtrace >= 9.9.0" in line]
        assert len(said) == 1, shown  # once, in one line with this host's version and what to do
        assert "this node runs radtrace " in said[0], shown
        assert "upgrade this node to radtrace 9.9.0 or newer" in said[0], shown
        lines = (SYSTEMD / unit).read_text().splitlines()
        assert "Restart=on-failure" in lines, unit
        assert "RestartPreventExitStatus=2" in lines, unit  # exit 2 is not restarted
    assert run_sql(postgres_url, "SELECT count(*) FROM nodes") == [(0,)]  # none of them registered as running
