"""A SQLite database migrated while another process writes to it: SQLite's lock upgrade must not refuse the migration.

Alembic reads the schema's revision and then writes (a table made, a row moved) in one transaction. On SQLite (WAL) a
transaction that has read cannot take the write lock once another connection has committed since its read began:
SQLite answers "database is locked" at once, without waiting its busy timeout. A listener, an API or a console still
running on the database (``radtrace db upgrade`` while the services run, or one service's start migrating while
another, already up, writes) made the migration fail: "database unavailable while migrating the database". Found by
tests/sqlite_upgrade_support.py (a DEFERRED transaction's first write after a read, in every migration run).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import event

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, head_revision, upgrade
from sqlite_upgrade_support import watching

pytestmark = pytest.mark.integration

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


@pytest.fixture
def one_migration_behind(tmp_path: Path) -> Iterator[Store]:
    """A SQLite database at the migration before the newest."""
    previous = ScriptDirectory.from_config(_config()).get_revision(head_revision()).down_revision
    assert isinstance(previous, str)
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    with store.engine.connect() as connection:
        command.upgrade(_config(connection), previous)
        connection.commit()
    yield store
    store.dispose()


def test_a_migration_completes_while_another_process_records_an_audit_event(one_migration_behind: Store) -> None:
    store = one_migration_behind
    other = Store.from_url(str(store.engine.url))  # another process's connection to the same file
    recorded = threading.Event()
    failures: list[BaseException] = []
    writers: list[threading.Thread] = []

    def another_process_writes() -> None:
        try:
            AuditRecorder(other).record(AuditEvent(EventType.CONSOLE_LOGIN, Actor(user="dr.other", host="10.0.0.8")))
            recorded.set()
        except BaseException as exc:
            failures.append(exc)

    def before_the_first_write(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split(None, 1)
        if writers or not words or words[0].upper() not in _WRITES:
            return
        writer = threading.Thread(target=another_process_writes)
        writer.start()
        writers.append(writer)
        # Before the fix the other write commits at once (the migration holds no lock yet) and the migration's own
        # write is refused; now the other one waits for the migration, and this wait runs out.
        recorded.wait(2)

    event.listen(store.engine, "before_cursor_execute", before_the_first_write)
    try:
        assert upgrade(store) == head_revision()
    finally:
        event.remove(store.engine, "before_cursor_execute", before_the_first_write)
        for writer in writers:
            writer.join(60)
        other.dispose()

    assert writers, "the migration wrote nothing"
    assert failures == []
    assert recorded.is_set()
    with store.session("reading the audit log") as session:
        users = session.scalars(sa.select(AuditEventRow.actor_user)).all()
    assert "dr.other" in users


def test_no_migration_of_a_new_database_reads_before_it_holds_the_write_lock(tmp_path: Path) -> None:
    """Every migration, not only the first: alembic committed each on its own on SQLite, and each later one that
    read before writing (0004, 0007, 0016 ...) could be refused the same way."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    try:
        with watching() as offenders:
            assert upgrade(store) == head_revision()
    finally:
        store.dispose()
    assert [f"{o.write_at}: {o.statement[:60]}" for o in offenders] == []
