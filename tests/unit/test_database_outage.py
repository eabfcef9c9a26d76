"""Which store errors are the database's outage (an attempt they end is not counted) and which are ours (counted).

The errors are the drivers' own: SQLite's raised by a real SQLite, psycopg's by SQLSTATE class as psycopg raises
them; each translated by the store's own :func:`radtrace.store.engine.translate_db_error`, as the worker gets it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from radtrace.errors import StoreUnavailableError
from radtrace.store.engine import translate_db_error
from radtrace.worker.database_outage import is_database_outage


def _translated(driver_error: BaseException) -> StoreUnavailableError:
    wrapped = sa.exc.OperationalError("UPDATE revisions ...", None, driver_error)
    error = translate_db_error(wrapped, "finishing a revision")
    assert isinstance(error, StoreUnavailableError)  # every one of these is retryable: the question is whose
    error.__cause__ = wrapped
    return error


def _sqlite_error(run: str, path: Path) -> sqlite3.Error:
    connection = sqlite3.connect(path, timeout=0)
    try:
        connection.execute(run)
    except sqlite3.Error as exc:
        return exc
    finally:
        connection.close()
    raise AssertionError(f"{run!r} did not fail")


@pytest.mark.parametrize(
    ("sqlstate", "outage"),
    [
        ("57014", False),  # query_canceled: statement_timeout
        ("55P03", False),  # lock_not_available: lock_timeout
        ("40P01", False),  # deadlock_detected
        ("40001", False),  # serialization_failure
        ("25P03", False),  # idle_in_transaction_session_timeout: a transaction of ours left open
        ("57P01", True),  # admin_shutdown: the server stops, or pg_terminate_backend
        ("57P02", True),  # crash_shutdown
        ("57P03", True),  # cannot_connect_now: starting up
        ("08006", True),  # connection_failure
        ("53100", True),  # disk_full
        ("53300", True),  # too_many_connections
        ("58030", True),  # io_error
    ],
)
def test_postgresql_errors_by_sqlstate(sqlstate: str, outage: bool) -> None:
    raised = psycopg.errors.lookup(sqlstate)("as the server said it")
    assert raised.sqlstate == sqlstate
    assert is_database_outage(_translated(raised)) is outage


def test_a_connection_refused_or_broken_without_an_answer_is_an_outage() -> None:
    assert psycopg.OperationalError("connection failed: Connection refused").sqlstate is None
    assert is_database_outage(_translated(psycopg.OperationalError("connection failed: Connection refused")))
    assert is_database_outage(_translated(psycopg.InterfaceError("the connection is closed")))


def test_this_process_out_of_pooled_connections_is_ours() -> None:
    wrapped = sa.exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached")
    error = translate_db_error(wrapped, "claiming a revision")
    assert isinstance(error, StoreUnavailableError)
    error.__cause__ = wrapped
    assert not is_database_outage(error)


def test_sqlite_errors_by_result_code(tmp_path: Path) -> None:
    database = tmp_path / "work.db"
    sqlite3.connect(database).execute("CREATE TABLE revisions (id INTEGER)").connection.commit()
    missing = _sqlite_error("SELECT * FROM no_such_table", database)
    assert not is_database_outage(_translated(missing))  # our SQL: SQLITE_ERROR

    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        busy = _sqlite_error("INSERT INTO revisions VALUES (1)", database)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert getattr(busy, "sqlite_errorname", None) == "SQLITE_BUSY"
    assert not is_database_outage(_translated(busy))  # a lock held past the busy timeout, as lock_timeout

    try:
        sqlite3.connect(tmp_path / "no-such-directory" / "work.db")
    except sqlite3.OperationalError as exc:
        cannot_open = exc
    assert getattr(cannot_open, "sqlite_errorname", None) == "SQLITE_CANTOPEN"
    assert is_database_outage(_translated(cannot_open))
