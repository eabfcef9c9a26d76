"""No radtrace transaction on SQLite reads and then writes without the write lock, along a short representative flow.

On SQLite (WAL) a ``BEGIN DEFERRED`` transaction that has read cannot take the write lock once another connection has
committed since: SQLite answers "database is locked" at once (no busy wait), so under load each such transaction is a
random 503, retry or failure. tests/sqlite_upgrade_support.py records every one; this guard runs the database's
migration, a study read by the worker's pipeline (demo backend) and a radiologist signing in and opening it, and
fails naming the radtrace line of each such write (take the lock up front with ``store.session(..., immediate=True)``
or split the reads from a conditional write). The whole suite can be watched too: ``SQLITE_UPGRADE_REPORT=<file>``.

Every test's process is watched as well (tests/conftest.py, ``_no_sqlite_write_after_read``): the last tests here check
that the guard tells radtrace's transactions from a test's own, and that what it flags does fail under a concurrent
commit.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import PASSWORD, add_user, console_client, console_settings, csrf_of, reported_study, study_path
from radtrace.errors import StoreUnavailableError
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from sqlite_upgrade_support import expected, in_production, watching

pytestmark = pytest.mark.integration


def test_migrating_reading_a_study_and_opening_it_never_reads_before_taking_the_write_lock(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    try:
        with watching() as offenders:
            upgrade(store)
            settings = console_settings(tmp_path, store)
            study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=7)
            add_user(store, "dr.guard", "radiologist")
            client = console_client(store, settings)
            form = client.get("/console/login")
            signed_in = client.post(
                "/console/login",
                data={"username": "dr.guard", "password": PASSWORD, "csrf_token": csrf_of(form.text)},
                follow_redirects=False,
            )
            assert signed_in.status_code == 303, signed_in.text[-500:]
            page = client.get(study_path(store, study_uid))
            assert page.status_code == 200, page.text[-500:]
            assert client.get(study_path(store, study_uid)).status_code == 200  # the session resumed
    finally:
        store.dispose()

    ours = [f"{o.write_at} ({o.doing}): {o.statement[:60]}" for o in offenders if o.write_at.startswith("radtrace/")]
    assert ours == []


# A transaction as radtrace code would write it (read, then write, BEGIN DEFERRED), loaded from a file under a
# radtrace/ folder so that the guard takes it for production code; ``meanwhile`` runs between the read and the write.
_READ_THEN_WRITE = """
import sqlalchemy as sa

def read_then_write(store, meanwhile, immediate=False):
    with store.session("reading then writing", immediate=immediate) as session:
        session.execute(sa.text("SELECT count(*) FROM sqlite_master")).scalar()
        meanwhile()
        session.execute(sa.text("INSERT INTO probe (x) VALUES (1)"))
"""


def _radtrace_function(tmp_path: Path) -> Any:
    source = tmp_path / "src" / "radtrace" / "console" / "probe.py"
    source.parent.mkdir(parents=True)
    source.write_text(_READ_THEN_WRITE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("sqlite_guard_probe", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_then_write


def _probe_store(tmp_path: Path) -> Store:
    store = Store.from_url(f"sqlite:///{tmp_path / 'probe.db'}")
    with store.session("making the probe table", immediate=True) as session:
        session.execute(sa.text("CREATE TABLE probe (x INTEGER)"))
    return store


def _another_connection_commits(store: Store) -> None:
    # another thread and connection, as another process would: the read's snapshot is then stale
    def commit() -> None:
        with store.session("writing from elsewhere", immediate=True) as session:
            session.execute(sa.text("INSERT INTO probe (x) VALUES (2)"))

    thread = threading.Thread(target=commit)
    thread.start()
    thread.join()


def test_the_guard_flags_radtrace_code_that_reads_then_writes_and_such_code_fails_under_a_concurrent_commit(
    tmp_path: Path,
) -> None:
    store = _probe_store(tmp_path)
    read_then_write = _radtrace_function(tmp_path)
    try:
        with expected() as offenders:
            read_then_write(store, lambda: None)
        assert [o.doing for o in offenders] == ["reading then writing"]
        assert str(offenders[0].begun_at).startswith("radtrace/console/probe.py:")
        assert len(in_production(offenders)) == 1

        with expected(), pytest.raises(StoreUnavailableError, match="database is locked"):
            read_then_write(store, lambda: _another_connection_commits(store))

        with expected() as offenders:  # the fix: the write lock from BEGIN; the other writer waits its turn
            read_then_write(store, lambda: None, immediate=True)
        assert offenders == []
    finally:
        store.dispose()


def test_a_tests_own_transaction_is_recorded_but_not_counted_against_radtrace(tmp_path: Path) -> None:
    store = _probe_store(tmp_path)
    try:
        with expected() as offenders, store.session("a test seeding rows") as session:
            session.execute(sa.text("SELECT count(*) FROM probe")).scalar()
            session.execute(sa.text("INSERT INTO probe (x) VALUES (3)"))
        assert [o.doing for o in offenders] == ["a test seeding rows"]
        assert str(offenders[0].begun_at).startswith("tests/integration/test_sqlite_upgrades_guard.py:")
        assert in_production(offenders) == []
    finally:
        store.dispose()
