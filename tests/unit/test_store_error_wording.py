"""A retryable store error reads as whose it was: "database unavailable while …" only for the database's outage, what
of ours failed otherwise ("statement timed out while …"), by the rule that decides whether an attempt counts
(:func:`radtrace.worker.database_outage.is_database_outage`).

Before, every one of them read "database unavailable while …": a statement timeout of ours, which counts the attempt
since 0903a66, still told the job row, the audit log and the operator that the database had been away.
The errors are the drivers' own: psycopg's by SQLSTATE class, SQLite's raised by a real SQLite.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from radtrace.errors import StoreUnavailableError
from radtrace.store.engine import Store, translate_db_error
from radtrace.worker.database_outage import is_database_outage


def _reason(driver_error: BaseException, doing: str = "finishing a revision") -> StoreUnavailableError:
    wrapped = sa.exc.OperationalError("UPDATE revisions ...", None, driver_error)
    error = translate_db_error(wrapped, doing)
    assert isinstance(error, StoreUnavailableError)
    error.__cause__ = wrapped
    return error


@pytest.mark.parametrize(
    ("sqlstate", "begins"),
    [
        ("57014", "statement timed out while finishing a revision: "),
        ("55P03", "lock wait timed out while finishing a revision: "),
        ("40P01", "deadlock while finishing a revision: "),
        ("40001", "serialization failure while finishing a revision: "),
        ("25P03", "transaction left idle past its timeout while finishing a revision: "),
        ("42P01", "database error while finishing a revision: "),  # undefined_table: our SQL, whatever it is
        ("57P01", "database unavailable while finishing a revision: "),  # admin_shutdown
        ("57P03", "database unavailable while finishing a revision: "),  # cannot_connect_now
        ("08006", "database unavailable while finishing a revision: "),  # connection_failure
        ("53300", "database unavailable while finishing a revision: "),  # too_many_connections
        ("58030", "database unavailable while finishing a revision: "),  # io_error
    ],
)
def test_postgresql_errors_are_worded_by_whose_they_are(sqlstate: str, begins: str) -> None:
    error = _reason(psycopg.errors.lookup(sqlstate)("as the server said it"))
    assert error.reason == f"{begins}as the server said it"
    # the word and the count agree: "database unavailable" exactly when the attempt is not counted
    assert error.reason.startswith("database unavailable") is is_database_outage(error)


def test_a_server_that_does_not_answer_is_unavailable() -> None:
    refused = _reason(psycopg.OperationalError("connection failed: Connection refused"), "claiming a revision")
    assert refused.reason == "database unavailable while claiming a revision: connection failed: Connection refused"
    closed = _reason(psycopg.InterfaceError("the connection is closed"), "claiming a revision")
    assert closed.reason.startswith("database unavailable while claiming a revision")


def test_this_process_out_of_pooled_connections_is_not_called_an_outage() -> None:
    error = translate_db_error(sa.exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"), "renewing a claim")
    assert isinstance(error, StoreUnavailableError)
    assert error.reason.startswith("no pooled database connection free while renewing a claim: QueuePool limit")


def test_sqlite_busy_past_its_timeout_is_a_lock_of_ours_and_a_missing_file_an_outage(tmp_path: Path) -> None:
    database = tmp_path / "work.db"
    store = Store.from_url(f"sqlite:///{database}")
    try:
        with store.session() as session:
            session.execute(sa.text("CREATE TABLE revisions (id INTEGER)"))
    finally:
        store.dispose()
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        blocked = sqlite3.connect(database, timeout=0)
        try:
            blocked.execute("INSERT INTO revisions VALUES (1)")
        except sqlite3.OperationalError as exc:
            busy = exc
        finally:
            blocked.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    locked = "database locked past the busy timeout while finishing a revision: database is locked"
    assert _reason(busy).reason == locked

    try:
        sqlite3.connect(tmp_path / "no-such-directory" / "work.db")
    except sqlite3.OperationalError as exc:
        cannot_open = exc
    assert _reason(cannot_open).reason.startswith("database unavailable while finishing a revision: ")

    missing = sqlite3.connect(database)
    try:
        missing.execute("SELECT * FROM no_such_table")
    except sqlite3.OperationalError as exc:
        our_sql = exc
    finally:
        missing.close()
    assert _reason(our_sql).reason == "database error while finishing a revision: no such table: no_such_table"
