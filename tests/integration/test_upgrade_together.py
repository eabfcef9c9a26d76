"""Several ``radtrace db upgrade`` started together on one PostgreSQL database (systemd's radtrace-db-upgrade.service
on each host of a site, a Kubernetes Job beside a compose ``migrate``): they take turns (an advisory lock,
radtrace.store.census.UPGRADE_LOCK), the first migrates and the others find it done.

Before, each counted the others' connections as radtrace processes at work: three started together all refused
('not migrating the database from schema 0016 to …: other radtrace processes work on it: 1 'radtrace 22088@vm'
connection …'), and the database stayed at 0016. Here the turn is held by the test until both wait for it (no
timing), then given up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from migration_support import run_sql, schema_revision, store_at_migration
from radtrace.store.migrate import head_revision
from radtrace.testing.services import temporary_postgres_database

pytestmark = pytest.mark.integration

BEFORE = "0016"
UPGRADE_LOCK = (0x72616474, 0x75706772)  # radtrace.store.census.UPGRADE_LOCK, written out: a lock of the protocol


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def url() -> Iterator[str]:
    with temporary_postgres_database("radtrace_upgrade_together") as found:
        with store_at_migration(found, BEFORE):
            pass
        run_sql(found, "INSERT INTO studies (study_uid, study_key, created_at) VALUES ('1.2.3', 'k1', now())")
        yield found


def _upgrade(url: str, tmp_path: Path) -> subprocess.Popen[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RADTRACE_")}
    environment |= {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "radtrace", "db", "upgrade"], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_two_upgrades_started_together_take_turns_and_the_database_is_migrated_once(url: str, tmp_path: Path) -> None:
    with psycopg.connect(_libpq(url), application_name="test", autocommit=True) as turn:  # the turn is taken
        turn.execute("SELECT pg_advisory_lock(%s, %s)", UPGRADE_LOCK)
        upgrades = [_upgrade(url, tmp_path), _upgrade(url, tmp_path)]
        deadline = time.monotonic() + 60
        while (turn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2",
                            UPGRADE_LOCK).fetchone() or (0,))[0] < 2:  # fmt: skip
            if any(upgrade.poll() is not None for upgrade in upgrades) or time.monotonic() > deadline:
                pytest.fail(f"both did not wait for their turn: {[upgrade.communicate() for upgrade in upgrades]}")
            time.sleep(0.05)
        turn.execute("SELECT pg_advisory_unlock(%s, %s)", UPGRADE_LOCK)
        said = [" ".join(upgrade.communicate(timeout=300)[0].split()) for upgrade in upgrades]
    assert [upgrade.returncode for upgrade in upgrades] == [0, 0], said
    assert all("another 'radtrace db upgrade' is migrating this database: waiting for it to end" in s for s in said)
    outcomes = sorted(s.rsplit("database at revision", 1)[1] for s in said)
    assert outcomes == [f" {head_revision()} (already; nothing to do)", f" {head_revision()} (upgraded from {BEFORE})"]
    assert schema_revision(url) == head_revision()
    assert run_sql(url, "SELECT study_uid FROM studies") == [("1.2.3",)]


#: Run by each upgrade of the barrier test: radtrace's modules imported, then ready, then ``db upgrade`` at the go.
_AT_THE_GO = """
import os, runpy, sys, time
from pathlib import Path
import radtrace.cli, radtrace.cli.db_commands, radtrace.store.migrate, radtrace.store.census, radtrace.audit.rebind
ready, go, after_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
Path(ready).touch()
while not os.path.exists(go):
    time.sleep(0.0002)
time.sleep(after_s)
sys.argv = ["radtrace", "db", "upgrade"]
runpy.run_module("radtrace", run_name="__main__", alter_sys=True)
"""
#: Rounds, upgrades in each, the step between their releases (seconds).
ROUNDS, TOGETHER, STEP_S = 3, 8, 0.004


def test_upgrades_released_at_once_never_count_each_other_as_radtrace_at_work(tmp_path: Path) -> None:
    """``TOGETHER`` ``db upgrade`` released by a barrier (each imports radtrace, says it is ready and waits for one
    file), the i-th i * ``STEP_S`` after it so that some connect while the first holds the turn and counts, round after
    round on a fresh database at 0016: each ends 0, the database is at head, migrated once. Before, the one holding
    the turn counted another that had connected but not yet asked for its turn (its first statements, milliseconds) as
    'radtrace at work' and refused, exit 1: in 4 of 8 runs of 3 rounds on a 2-CPU machine (the arrivals spread over
    ~0.5 s by the CPUs' load; the next test shows the same without chance)."""
    with temporary_postgres_database("radtrace_upgrade_barrier") as template:
        with store_at_migration(template, BEFORE):
            pass
        template_name = make_url(template).database
        admin = _libpq(make_url(template).set(database="postgres").render_as_string(hide_password=False))
        for round_ in range(ROUNDS):
            name = f"{template_name}_r{round_}"
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
            url = make_url(template).set(database=name).render_as_string(hide_password=False)
            try:
                here = tmp_path / f"round{round_}"
                here.mkdir()
                environment = {key: value for key, value in os.environ.items() if not key.startswith("RADTRACE_")}
                environment |= {"RADTRACE_DATA_DIR": str(here / "var"), "RADTRACE_STORE__URL": url, "COLUMNS": "200"}
                upgrades = [
                    subprocess.Popen([sys.executable, "-c", _AT_THE_GO, str(here / f"ready{i}"), str(here / "go"),
                                      str(i * STEP_S)],
                                     env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    for i in range(TOGETHER)
                ]  # fmt: skip
                deadline = time.monotonic() + 120
                while not all((here / f"ready{i}").exists() for i in range(TOGETHER)):
                    if any(upgrade.poll() is not None for upgrade in upgrades) or time.monotonic() > deadline:
                        pytest.fail(f"not all ready: {[upgrade.communicate() for upgrade in upgrades]}")
                    time.sleep(0.01)
                (here / "go").touch()
                said = [" ".join(upgrade.communicate(timeout=300)[0].split()) for upgrade in upgrades]
                assert [upgrade.returncode for upgrade in upgrades] == [0] * TOGETHER, [
                    f"round {round_}: {s}" for s, upgrade in zip(said, upgrades, strict=True) if upgrade.returncode
                ]
                outcomes = sorted(s.rsplit("database at revision", 1)[1] for s in said)
                assert outcomes == [f" {head_revision()} (already; nothing to do)"] * (TOGETHER - 1) + [
                    f" {head_revision()} (upgraded from {BEFORE})"
                ], said
                assert schema_revision(url) == head_revision()
            finally:
                with psycopg.connect(admin, autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_db_upgrade_just_connected_is_not_counted_by_the_one_migrating(url: str, tmp_path: Path) -> None:
    """A connection named as another ``db upgrade``'s (census.UPGRADE_APPLICATION), idle, as one is between its
    connection and its turn's request: the upgrade holding the turn migrates, not counting it. Before, it refused
    ('other radtrace processes work on it: 1 'radtrace db upgrade 4242@…' connection')."""
    name = "radtrace db upgrade 4242@another-host"
    with psycopg.connect(_libpq(url), application_name=name, autocommit=True) as other:
        other.execute("SELECT 1")
        upgrade = _upgrade(url, tmp_path)
        said = " ".join(upgrade.communicate(timeout=300)[0].split())
    assert upgrade.returncode == 0, said
    assert f"database at revision {head_revision()} (upgraded from {BEFORE})" in said, said
    assert schema_revision(url) == head_revision()
