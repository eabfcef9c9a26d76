"""``radtrace audit forward`` started on a database whose floor is above its code exits 2, as when its watch stops it
while running: deploy/systemd/radtrace-audit-forward.service does not restart it after exit 2
(RestartPreventExitStatus=2). Before, it exited 1 at start, and systemd restarted it every 5 s until this host's
radtrace was upgraded (after a reboot, or a 'systemctl restart' once the watch had stopped it with exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_support import run_sql
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.integration

RAISE_FLOOR = (
    "UPDATE schema_floor SET min_schema = '0999_newer', min_version = '9.9.0', "
    "reason = 'older code misreads the new tables' WHERE id = 1"
)


def test_the_forwarder_started_below_the_floor_exits_2_naming_both_versions(postgres_url: str, tmp_path: Path) -> None:
    store = Store.from_url(postgres_url)
    try:
        upgrade(store)
    finally:
        store.dispose()
    run_sql(postgres_url, RAISE_FLOOR)
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": postgres_url,
           "RADTRACE_ATNA__HOST": "127.0.0.1", "RADTRACE_ATNA__PORT": str(free_port()),
           "RADTRACE_ATNA__TRANSPORT": "tcp"}  # fmt: skip

    result = radtrace("audit", "forward", env=env)

    shown = result.stdout + result.stderr
    assert result.returncode == 2, shown
    assert "Traceback" not in shown
    assert "this node runs radtrace" in shown, shown
    assert "the database needs radtrace >= 9.9.0" in shown, shown
    unit = (Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "radtrace-audit-forward.service").read_text()
    assert "RestartPreventExitStatus=2" in unit.splitlines()
