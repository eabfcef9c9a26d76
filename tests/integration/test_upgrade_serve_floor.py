"""A running ``radtrace serve`` whose database a newer radtrace has since put out of its reach (raised the floor, as a
migration older code cannot work with does) stops every component as on SIGTERM and exits 2, with one line naming
both versions and what to do; while it ran it was a row of the ``nodes`` table, which a migration is refused under.

Before, nothing watched: an older dispatcher left running while a newer radtrace migrated the database failed on the
outbox state ``cancelled`` and marked draft withdrawals ``failed``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_support import run_sql
from radtrace.testing.services import free_port
from serve_support import alive, running_serve, wait_until

pytestmark = pytest.mark.integration


def test_serve_stops_every_component_once_the_floor_is_above_it(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "var", free_port()
    url = f"sqlite:///{data_dir / 'radtrace.db'}"
    env = {
        "RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(port), "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_LISTENER__ALLOWED_CALLERS": json.dumps([{"ae_title": "PACS"}]),
        "RADTRACE_API__PORT": str(free_port()), "RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true",
    }  # fmt: skip
    log_file = tmp_path / "serve.log"
    with running_serve(env, log_file, listener_port=port, ready_timeout=120, graceful_stop=False) as serve:
        assert [row[0] for row in run_sql(url, "SELECT role FROM nodes")] == ["serve"]
        children = serve.note_children()
        assert children
        run_sql(url, "UPDATE schema_floor SET min_schema = '0999_newer', min_version = '9.9.0', "
                    "reason = 'older code misreads the new tables' WHERE id = 1")  # fmt: skip
        wait_until(lambda: serve.process.poll() is not None, 120, "serve stopping on the raised floor", log_file)
        assert serve.process.returncode == 2
        log = log_file.read_text(errors="replace")
        assert "Traceback" not in log
        lines = [line for line in log.splitlines() if "the database needs radtrace >= 9.9.0" in line]
        assert lines, log[-4000:]
        assert "this node runs radtrace " in lines[0]
        assert "(schema 0999_newer or newer; older code misreads the new tables): upgrade this node" in lines[0]
        assert "This serve (pid " in lines[0]
        assert "stops taking work now" in lines[0]
        assert "stopping every component" not in log  # not a signal: the watch stopped them
        assert not [pid for pid in children if alive(pid)]
        assert run_sql(url, "SELECT role FROM nodes") == []
