"""Engines and sessions for the work database: SQLite (WAL) by default, PostgreSQL in production.

Every database error that leaves this module is a radtrace error: an unreachable or busy database
is :class:`~radtrace.errors.StoreUnavailableError` (retryable), anything else a
:class:`~radtrace.errors.PermanentError` naming the operation. Nothing else in radtrace catches
SQLAlchemy exceptions.

A retryable error is worded by whose it is (:func:`is_outage`, the rule an attempt's count follows in
:mod:`radtrace.worker.database_outage`): the database's outage reads "database unavailable while …"; an error of
ours that the database answered reads as what it was ("statement timed out while …", "lock wait timed out while …",
"deadlock while …", "database locked past the busy timeout while …", "no pooled database connection free while …"),
so that a job row or an audit error does not call a statement of ours that ran too long an outage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session

from radtrace.errors import ConfigError, PermanentError, StoreUnavailableError

__all__ = [
    "APPLICATION_NAME",
    "Store",
    "application_name",
    "create_store_engine",
    "is_outage",
    "is_postgresql",
    "is_sqlite",
    "translate_db_error",
]

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: PostgreSQL: every connection radtrace opens is named ``radtrace <pid>@<host>`` (application_name, in
#: pg_stat_activity: :func:`application_name`); radtrace before the schema floor left it empty, the first floor's code
#: named it ``radtrace``.
APPLICATION_NAME = "radtrace"

#: psycopg's prepare_threshold on every PostgreSQL connection: None, no server-side prepared statement. psycopg's
#: default (5) prepares a statement that a connection has run 5 times; behind a pgbouncer pooling transactions (1.18;
#: from 1.21 only with max_prepared_statements) the next transaction may run on another server connection, and a
#: repeated call failed permanently with 'prepared statement "_pg3_N" does not exist' (or 'already exists'): the node
#: heartbeat (nodes.renew_node) among them. Prepared, PostgreSQL may also plan a statement once for any values (a
#: generic plan), seconds slower for a batched IN look-up (the QA dashboard's); unprepared, each is planned for its own.
PREPARE_THRESHOLD: Final = None
#: PostgreSQL SQLSTATE classes of an outage (Appendix A, "PostgreSQL Error Codes"): 08 connection exception,
#: 53 insufficient resources (disk full, out of memory, too many connections), 58 system error (I/O).
_OUTAGE_CLASSES: Final = frozenset({"08", "53", "58"})
#: Class 57 (operator intervention) is an outage except 57014 query_canceled, which a statement timeout (or a DBA
#: cancelling one statement) raises: 57P01 admin_shutdown (also pg_terminate_backend), 57P02 crash_shutdown,
#: 57P03 cannot_connect_now (starting up, or in recovery), 57P04 database_dropped, 57P05 idle_session_timeout.
_OUTAGE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})
#: SQLite primary result codes of an outage: the file cannot be written, read or opened, or memory ran out. BUSY and
#: LOCKED (a lock held past the busy timeout) are a transaction of ours held too long, as lock_timeout is.
_SQLITE_OUTAGE: Final = frozenset(
    {sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN}
)
_SQLITE_LOCKED: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
#: What a retryable PostgreSQL error of ours was, by SQLSTATE (its driver's line follows in the reason).
_OURS_BY_SQLSTATE: Final = {
    "57014": "statement timed out",  # query_canceled: statement_timeout (the line says when a DBA cancelled it)
    "55P03": "lock wait timed out",  # lock_not_available: lock_timeout
    "40P01": "deadlock",  # deadlock_detected
    "40001": "serialization failure",  # serialization_failure
    "25P03": "transaction left idle past its timeout",  # idle_in_transaction_session_timeout
}


def is_sqlite(target: Engine | sa.Connection | URL | str) -> bool:
    """Whether an engine, connection or URL points at SQLite."""
    return _backend(target) == "sqlite"


def is_postgresql(target: Engine | sa.Connection | URL | str) -> bool:
    """Whether an engine, connection or URL points at PostgreSQL."""
    return _backend(target) == "postgresql"


def _backend(target: Engine | sa.Connection | URL | str) -> str:
    if isinstance(target, Engine | sa.Connection):
        return str(target.dialect.name)
    return (make_url(target) if isinstance(target, str) else target).get_backend_name()


def application_name() -> str:
    """This process's PostgreSQL application name, ``radtrace <pid>@<host>``: a DBA sees which process holds a
    connection, and a migration tells this process's own connections from other radtrace processes'
    (:func:`radtrace.store.census.others_at_work`). Within PostgreSQL's 63 bytes, ASCII (PostgreSQL shows any other
    character as ``?``)."""
    host = socket.gethostname().encode("ascii", "replace").decode("ascii")[:40]
    return f"{APPLICATION_NAME} {os.getpid()}@{host}"


def _name_connection(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
    # At each connect, not at the engine's creation: a process forked after it (a Celery pool child) names its own.
    params["application_name"] = application_name()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Python's sqlite3 opens transactions lazily; radtrace issues BEGIN itself (see _sqlite_begin) so
    # that audit appends can take the write lock up front with BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed row survives power loss, which the listener promises before answering success.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    mode = conn.info.pop("radtrace_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")
    conn.info["radtrace_write_locked"] = mode == "IMMEDIATE"


def create_store_engine(url: str, *, pool_size: int = 5, connect_timeout_s: float = 10.0, echo: bool = False) -> Engine:
    """Create the engine for ``url`` with radtrace's per-dialect settings.

    SQLite: WAL, ``synchronous=FULL``, foreign keys on, a busy timeout, explicit BEGIN. The
    directory of the file is created. PostgreSQL: psycopg 3, pre-ping, a bounded connect timeout, the application
    name ``radtrace <pid>@<host>`` (:func:`application_name`), no server-side prepared statements
    (:data:`PREPARE_THRESHOLD`).
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"store.url is not a valid SQLAlchemy URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            directory = Path(parsed.database).parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"store: cannot create the database directory {directory}: {exc.strerror}") from exc
        engine = sa.create_engine(
            parsed, echo=echo, hide_parameters=True, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(
            parsed,
            echo=echo,
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, int(connect_timeout_s)), "prepare_threshold": PREPARE_THRESHOLD},
        )
        # Named: a migration tells radtrace's connections from others' (radtrace.store.census.others_at_work)
        event.listen(engine, "do_connect", _name_connection)
        return engine
    raise ConfigError(f"store.url: unsupported database '{backend}' (use sqlite or postgresql)")


def is_outage(cause: BaseException | None) -> bool:
    """Whether the error behind a retryable store error (the SQLAlchemy error, or the driver's) is the database's
    outage rather than ours.

    An outage: the connection could not be made or was lost without the server's answer (no SQLSTATE: refused,
    reset, closed), or the server said it cannot serve anyone now (SQLSTATE classes 08, 53, 58; 57P01-57P05:
    shutting down, terminated, starting up); on SQLite, the file cannot be opened, read or written, or is full.
    Ours: the server answered our statement with an error (57014 a statement timeout, 55P03 a lock timeout, 40P01
    a deadlock, 40001 a serialization failure, anything else with a SQLSTATE), SQLite's busy timeout ran out or its
    SQL failed, or this process's connection pool had no connection to give in time. Decided on the driver's own
    error (the SQLSTATE, SQLite's result code), never on the message text; no cause at all counts as an outage.
    """
    if isinstance(cause, sa.exc.TimeoutError):  # the pool's: every connection of this process was in use
        return False
    driver = cause.orig if isinstance(cause, sa.exc.DBAPIError) else cause
    if isinstance(driver, sqlite3.Error):
        code = getattr(driver, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_OUTAGE
    sqlstate = getattr(driver, "sqlstate", None)
    if not isinstance(sqlstate, str) or not sqlstate:
        return True  # no answer from the server at all: it could not be reached, or the connection broke
    return sqlstate[:2] in _OUTAGE_CLASSES or sqlstate in _OUTAGE_STATES


def _what_failed(exc: sa.exc.SQLAlchemyError) -> str:
    """How a retryable store error's reason begins: "database unavailable" for an outage (:func:`is_outage`), else
    what of ours failed."""
    if is_outage(exc):
        return "database unavailable"
    if isinstance(exc, sa.exc.TimeoutError):
        return "no pooled database connection free"
    driver = exc.orig if isinstance(exc, sa.exc.DBAPIError) else None
    if isinstance(driver, sqlite3.Error):
        code = getattr(driver, "sqlite_errorcode", None)
        locked = code is not None and code & 0xFF in _SQLITE_LOCKED
        return "database locked past the busy timeout" if locked else "database error"
    return _OURS_BY_SQLSTATE.get(str(getattr(driver, "sqlstate", "")), "database error")


def translate_db_error(exc: sa.exc.SQLAlchemyError, doing: str) -> Exception:
    """Map a SQLAlchemy error to radtrace's tree: unreachable/busy → retryable, the rest permanent. A retryable one
    reads "database unavailable while …" only when the database was away (:func:`is_outage`); one of ours says what
    it was ("statement timed out while …")."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError):
        original = getattr(exc, "orig", None)
        detail = str(original or exc).strip().splitlines()[0] if str(original or exc).strip() else type(exc).__name__
        return StoreUnavailableError(f"{_what_failed(exc)} while {doing}: {detail}")
    # The driver's first line names the constraint or trigger; later lines (DETAIL) may quote row values.
    first_line = str(getattr(exc, "orig", None) or "").strip().splitlines()[:1]
    detail = f": {first_line[0]}" if first_line else ""
    return PermanentError(f"database error while {doing} ({type(exc).__name__}){detail}")


class Store:
    """The engine plus a session factory: the one way code opens transactions on the work database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str, **engine_options: Any) -> Store:
        """A store on ``url`` (see :func:`create_store_engine` for the options)."""
        return cls(create_store_engine(url, **engine_options))

    @contextlib.contextmanager
    def session(self, doing: str = "using the database", *, immediate: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on error, errors translated.

        ``immediate`` takes SQLite's write lock at BEGIN (``BEGIN IMMEDIATE``) so a read-then-write
        sequence (the audit chain's head) cannot interleave with another process; PostgreSQL code
        takes an advisory lock for the same purpose and ignores the flag.
        """
        try:
            with self.engine.connect() as connection:
                if immediate and is_sqlite(self.engine):
                    connection.info["radtrace_begin"] = "IMMEDIATE"
                with connection.begin():
                    session = Session(bind=connection, expire_on_commit=False, autoflush=True)
                    try:
                        yield session
                        session.flush()
                    finally:
                        session.close()
        except sa.exc.SQLAlchemyError as exc:
            raise translate_db_error(exc, doing) from exc

    def dispose(self) -> None:
        """Close every pooled connection (tests, forks, shutdown)."""
        self.engine.dispose()
