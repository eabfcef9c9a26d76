"""The database's floor (the oldest radtrace that may run against it) and the radtrace processes working on it, on
SQLite and PostgreSQL (radtrace.store.floor, radtrace.store.node_watch).

The last rolling upgrade left an older dispatcher running while a newer radtrace migrated the database: it failed on
the outbox state ``cancelled`` and marked draft withdrawals ``failed``. Now a process whose code is below the floor is
refused at start and a running one stops taking work, saying both versions; and a migration is refused while another
radtrace process is seen working on the database, unless forced."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.config import load_settings
from radtrace.preflight.database import database_check
from radtrace.store import node_watch
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.floor import CodeTooOldError, refuse_too_old, running_problem
from radtrace.store.migrate import OthersAtWorkError, head_revision, refuse_while_others_work
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.store.node_watch import NodeWatch
from radtrace.store.nodes import live_nodes
from tests_support import radtrace

pytestmark = pytest.mark.integration

FUTURE = "0999_from_a_newer_radtrace"


def _raise_floor(url: str, min_schema: str = FUTURE, min_version: str = "9.9.0") -> None:
    """What a future migration that older code cannot work with writes (radtrace.store.floor.raise_floor)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE schema_floor SET min_schema = :s, min_version = :v, reason = :r WHERE id = 1"),
                {"s": min_schema, "v": min_version, "r": "older code misreads the new tables"},
            )
    finally:
        engine.dispose()


@pytest.fixture
def migrated(database_url: str) -> Iterator[tuple[str, Store]]:
    store = Store.from_url(database_url)
    try:
        from radtrace.store.migrate import upgrade

        upgrade(store)
        yield database_url, store
    finally:
        store.dispose()


def _expected_refusal(detail: str) -> None:
    assert detail.startswith("this node runs radtrace ")
    assert (
        f"(schema {head_revision()}); the database needs radtrace >= 9.9.0 (schema {FUTURE} or newer; older code "
        "misreads the new tables): upgrade this node to radtrace 9.9.0 or newer, then start it again"
    ) in detail


def test_the_migration_records_a_floor_this_version_is_above(migrated: tuple[str, Store]) -> None:
    _url, store = migrated
    with store.engine.connect() as connection:
        row = connection.execute(sa.text("SELECT min_schema, reason FROM schema_floor")).one()
    assert row[0] == "0022"  # the outbox state 'cancelled': code before it must not run here
    assert "cancelled" in row[1]
    assert running_problem(store) is None


def test_a_process_below_the_floor_is_refused_at_start_naming_both_versions(
    migrated: tuple[str, Store], tmp_path: Path
) -> None:
    url, store = migrated
    _raise_floor(url)
    check = database_check(load_settings(data_dir=tmp_path / "var", store={"url": url}))
    assert check.status == "failed"
    _expected_refusal(check.detail)
    with pytest.raises(CodeTooOldError) as refused:  # what a command asks before it reads or writes
        refuse_too_old(store)
    _expected_refusal(refused.value.reason)


def test_a_command_below_the_floor_is_refused(migrated: tuple[str, Store], tmp_path: Path) -> None:
    url, _store = migrated
    _raise_floor(url)
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url}
    result = radtrace("api", env=env, timeout=120)
    shown = result.stdout + result.stderr
    assert result.returncode == 2, shown  # upgrade this host: no systemd restart loop
    assert "Traceback" not in shown
    assert "this node runs radtrace" in shown, shown
    assert "the database needs radtrace >= 9.9.0" in shown
    assert "upgrade this node" in shown


def test_a_running_process_stops_taking_work_once_the_floor_is_above_it(
    migrated: tuple[str, Store], caplog: pytest.LogCaptureFixture
) -> None:
    url, store = migrated
    told: list[str] = []
    stopped = threading.Event()

    def stop(problem: str) -> None:
        told.append(problem)
        stopped.set()

    watch = NodeWatch(url, "dispatcher", interval_s=0.2, on_incompatible=stop).start()
    try:
        assert [node.role for node in live_nodes(store)] == ["dispatcher"]
        with caplog.at_level(logging.ERROR, logger="radtrace.store.node_watch"):
            _raise_floor(url)
            assert stopped.wait(30), "the watch did not see the floor rise"
            watch.check()  # a later beat does not say it again
    finally:
        watch.stop()
    assert len(told) == 1
    _expected_refusal(told[0])
    lines = [record.getMessage() for record in caplog.records if record.name == "radtrace.store.node_watch"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(told[0])
    assert "This dispatcher (pid " in lines[0]
    assert "stops taking work now" in lines[0]
    assert live_nodes(store) == []  # its row is gone: a migration is no longer refused for it


def test_a_migration_is_refused_while_another_process_is_seen(migrated: tuple[str, Store]) -> None:
    url, store = migrated
    refuse_while_others_work(store, "0022", head_revision())  # nobody: nothing said
    watch = NodeWatch(url, "listener").start()
    try:
        with pytest.raises(OthersAtWorkError) as refused:
            refuse_while_others_work(store, "0022", head_revision())
    finally:
        watch.stop()
    reason = refused.value.reason
    assert reason.startswith(f"not migrating the database from schema 0022 to {head_revision()}: other radtrace "
                             "processes work on it: listener on ")  # fmt: skip
    assert "Stop every radtrace process on every node first" in reason
    assert "'radtrace db upgrade --force' migrates anyway" in reason
    refuse_while_others_work(store, "0022", head_revision())  # stopped: its row went with it


def test_a_row_not_renewed_is_a_process_that_ended(migrated: tuple[str, Store]) -> None:
    url, store = migrated
    long_ago = utc_now() - timedelta(minutes=5)
    with store.session() as session:
        session.execute(
            sa.text(
                "INSERT INTO nodes (id, host, pid, role, version, schema, started_at, seen_at) "
                "VALUES ('a', 'gpu-node-9', 4242, 'worker', '0.1.0', '0024', :t, :t)"
            ),
            {"t": long_ago.replace(tzinfo=None) if url.startswith("sqlite") else long_ago},
        )
    assert live_nodes(store) == []
    refuse_while_others_work(store, "0022", head_revision())


def test_a_read_in_hand_by_a_worker_of_any_version_refuses_a_migration(migrated: tuple[str, Store]) -> None:
    _url, store = migrated
    with store.session() as session:
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.7", study_key="k")
        session.add(study)
        session.flush()
        session.add(Revision(study_id=study.id, number=1, state=RevisionState.PROCESSING,
                             claimed_by="radtrace@gpu-node-7:4242 pidns=? boot=? start=?",
                             claim_expires_at=utc_now() + timedelta(minutes=5)))  # fmt: skip
    with pytest.raises(OthersAtWorkError, match=r"a worker reading revision \d+ \(radtrace@gpu-node-7:4242\)"):
        refuse_while_others_work(store, "0022", head_revision())
    with store.session() as session:
        session.execute(sa.update(Revision).values(claim_expires_at=utc_now() - timedelta(seconds=1)))
    refuse_while_others_work(store, "0022", head_revision())  # its lease is over: another node may take it


def test_two_threads_finding_the_floor_risen_together_act_once(
    migrated: tuple[str, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _store = migrated
    told: list[str] = []
    watch = NodeWatch(url, "serve", interval_s=3600, on_incompatible=told.append).start()
    inside = threading.Barrier(2, timeout=5)

    def found_together(store: Store) -> str:
        with contextlib.suppress(threading.BrokenBarrierError):  # one at a time: the second waits for the first
            inside.wait()
        return "too old"

    monkeypatch.setattr(node_watch, "running_problem", found_together)
    try:
        askers = [threading.Thread(target=watch.check) for _ in range(2)]  # serve's loop and the watch's own thread
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(30)
    finally:
        watch.stop()
    assert told == ["too old"]
