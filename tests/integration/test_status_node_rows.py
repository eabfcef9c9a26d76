"""``radtrace status`` lists the radtrace processes that work on the database (the ``nodes`` rows): host, role, pid,
last seen, version and the schema each obeys, a row not renewed within its limit marked STALE.

Before, status showed none of them: which host runs which process, and whether one is gone or runs older code, took
SQL at the database (seen from outside, reading the runbook at night)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from radtrace.cli import app
from radtrace.store.engine import Store
from radtrace.store.nodes import Node, database_now
from tests_support import radtrace

pytestmark = pytest.mark.integration


def _row(store: Store, node_id: str, host: str, role: str, pid: int, *, seen_ago: timedelta, schema: str) -> None:
    with store.session() as session:
        now = database_now(session.connection())
        session.execute(sa.insert(Node).values(
            id=node_id, host=host, pid=pid, role=role, version="0.2.0", schema=schema, started_at=now - seen_ago,
            seen_at=now - seen_ago, watch_interval_s=10.0, stale_after_s=30.0,
        ))  # fmt: skip


def test_status_lists_each_hosts_processes_and_marks_the_stale_one(
    pg_store: Store, postgres_url: str, tmp_path: Path
) -> None:
    _row(pg_store, "a", "gpu-node-7.hospital.example", "worker", 41234, seen_ago=timedelta(seconds=2),
         schema="0026")  # fmt: skip
    _row(pg_store, "b", "pacs-gw-1.hospital.example", "listener", 987, seen_ago=timedelta(hours=3, minutes=5),
         schema="0025")  # fmt: skip
    env = {"RADTRACE_STORE__URL": postgres_url, "RADTRACE_DATA_DIR": str(tmp_path / "var")}

    shown = radtrace("status", "--no-broker", env=env)

    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert any("radtrace processes (nodes table)" in line for line in lines), shown.stdout
    worker = next(line for line in lines if "gpu-node-7.hospital.example" in line)
    listener = next(line for line in lines if "pacs-gw-1.hospital.example" in line)
    for line, role, pid, schema in ((worker, "worker", "41234", "0026"),
                                    (listener, "listener", "987", "0025")):  # fmt: skip
        assert {role, pid, "0.2.0", schema} <= set(line.replace("│", " ").split()), line
    assert "running" in worker, worker
    assert "STALE" not in worker, worker
    assert "STALE" in listener, listener
    assert "3 h 5 min ago" in listener, listener
    assert "ended without removing its row" in shown.stdout  # what STALE means, said once

    as_json = CliRunner().invoke(app, ["status", "--no-broker", "--json"], env=env)  # in this process: faster
    assert as_json.exit_code == 0, as_json.output
    nodes = json.loads(as_json.stdout)["nodes"]
    assert [(n["host"], n["role"], n["pid"], n["schema"], n["state"]) for n in nodes] == [
        ("gpu-node-7.hospital.example", "worker", 41234, "0026", "running"),
        ("pacs-gw-1.hospital.example", "listener", 987, "0025", "STALE"),
    ]
    assert set(nodes[0]) == {"host", "role", "pid", "version", "schema", "seen_at", "seen_s_ago", "stale_after_s",
                             "state"}  # fmt: skip
