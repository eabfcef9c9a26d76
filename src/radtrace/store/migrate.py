"""Schema migrations (Alembic) for the work and audit tables; the same migrations on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from radtrace.errors import PermanentError
from radtrace.store.engine import SQLITE_BUSY_TIMEOUT_MS, Store, is_sqlite, translate_db_error

__all__ = [
    "OthersAtWorkError",
    "StartMigration",
    "StartMigrationError",
    "backup_sqlite",
    "current_revision",
    "head_revision",
    "migrate_at_start",
    "newer_schema_problem",
    "one_at_a_time",
    "refuse_while_others_work",
    "same_schema_backups",
    "upgrade",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
#: SQLite: the migration waits for another writer's lock in waits this long (ms), a signal taken between them.
SQLITE_LOCK_STEP_MS = 100


def _config(connection: sa.Connection | None = None, app_role: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["app_role"] = app_role
    return config


def head_revision() -> str:
    """The newest migration this version of radtrace ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations found")
    return head


def current_revision(store: Store) -> str | None:
    """The migration the database is at; ``None`` for an empty database."""
    try:
        with store.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the schema revision") from exc


def upgrade(store: Store, *, app_role: str | None = None) -> str:
    """Migrate the database to the newest schema (idempotent). Returns the revision it is at.

    ``app_role`` (PostgreSQL) also creates a login role with INSERT/SELECT only on the audit table.

    Every migration runs in one transaction, which on SQLite takes the write lock at BEGIN. Alembic reads (the
    schema's revision, a migration's rows) and then writes, and on SQLite it committed each migration on its own;
    SQLite refuses a transaction that has read the write lock at once ("database is locked", no busy wait) once
    another connection has committed since, so a listener, API or console still writing made the migration fail,
    part done. Other writers now wait for it (the busy timeout), as they did once it had written.
    """
    try:
        with store.engine.connect() as connection:
            transaction = _sqlite_write_lock(connection) if is_sqlite(store.engine) else connection.begin()
            with transaction:  # alembic then runs every migration in it (an external transaction)
                command.upgrade(_config(connection, app_role), "head")
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "migrating the database") from exc
    revision = current_revision(store)
    if revision is None:  # pragma: no cover - upgrade always stamps
        raise RuntimeError("migration left no revision")
    return revision


def _sqlite_write_lock(connection: sa.Connection) -> sa.RootTransaction:
    """SQLite: the migration's transaction, begun with the write lock (BEGIN IMMEDIATE), waiting for another writer
    as long as the store's busy timeout (:data:`radtrace.store.engine.SQLITE_BUSY_TIMEOUT_MS`) in waits of
    :data:`SQLITE_LOCK_STEP_MS`: between them Python runs its signal handlers, so that SIGTERM or Ctrl-C stops a
    migration held up by a writer at once. Waiting inside SQLite's own busy handler (one call of up to 30 s, which
    sqlite3's interrupt() does not cut short either), they took effect only once it returned. Past the timeout, the
    last 'database is locked' is raised, as before."""
    driver = connection.connection.driver_connection
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    driver.execute(f"PRAGMA busy_timeout={SQLITE_LOCK_STEP_MS}")  # type: ignore[union-attr]
    try:
        while True:
            connection.info["radtrace_begin"] = "IMMEDIATE"  # read by the engine's BEGIN (store.engine)
            try:
                return connection.begin()
            except sa.exc.OperationalError as exc:
                code = getattr(exc.orig, "sqlite_errorcode", None)
                if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or time.monotonic() >= deadline:
                    raise
                connection.rollback()
    finally:
        driver.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")  # type: ignore[union-attr]


class StartMigrationError(PermanentError):
    """The database cannot be migrated at start: a newer radtrace migrated it, or its backup cannot be kept."""


class OthersAtWorkError(StartMigrationError):
    """Other radtrace processes work on the database: migrating it under them is refused (no rolling upgrade)."""


def refuse_while_others_work(store: Store, before: str, head: str, *, stale_after_s: float | None = None) -> list[str]:
    """Raise :class:`OthersAtWorkError` naming each radtrace process seen working on the database
    (:func:`radtrace.store.census.others_at_work`): a migration from ``before`` to ``head`` under a running process
    of the older code is what failed the last rolling upgrade (an older dispatcher on the outbox state
    ``cancelled``). ``stale_after_s``: a ``nodes`` row that says no limit of its own, not renewed for this long, is a
    process that ended (this host's ``store.node_stale_after_s``; :func:`radtrace.store.nodes.live_nodes`). Returns
    the other clients connected (PostgreSQL: psql, a monitoring exporter), in words: not radtrace, not waited for,
    for the caller to name."""
    from radtrace.store.census import survey
    from radtrace.store.nodes import NODE_STALE_S

    stale = NODE_STALE_S if stale_after_s is None else stale_after_s
    others, clients = survey(store, stale_after_s=stale)
    if not others:
        return clients
    shown = "; ".join(others[:10]) + (f"; and {len(others) - 10} more" if len(others) > 10 else "")
    also = f" (Not radtrace, not waited for: {'; '.join(clients[:10])}.)" if clients else ""
    raise OthersAtWorkError(
        f"not migrating the database from schema {before} to {head}: other radtrace processes work on it: {shown}. "
        "Stop every radtrace process on every node first (docs/operations.md, Upgrades and migrations), then migrate; "
        "a process stopped without saying so (kill -9, a machine gone) is seen until its row is older than the limit "
        f"it says ('stale after': its store.node_stale_after_s; {stale:.0f} s for a row that says none), a read or "
        "send it had in hand until its claim expires. 'radtrace db upgrade --force' migrates anyway" + also
    )


def newer_schema_problem(revision: str | None) -> str | None:
    """Why this version must not use a database at ``revision``: a newer radtrace migrated it (this one was rolled
    back after an upgrade), so this version cannot read it correctly and cannot migrate it (alembic's "Can't locate
    revision"); None when this version knows the revision (or the database is empty)."""
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    if revision is None or revision in known:
        return None
    return (
        f"the database was migrated by a newer radtrace (revision {revision}; this version knows up to "
        f"{head_revision()}): run the radtrace version that migrated it, or restore the backup taken before the "
        "upgrade (docs/operations.md, Upgrades and migrations); this version does not downgrade a database"
    )


def backup_sqlite(store: Store, revision: str) -> Path:
    """A consistent copy of the SQLite database at ``revision`` beside it, ``<file>.backup-<revision>-<UTC time>``,
    taken with SQLite's online
    backup API (a copy of the live file could catch a write half done, or miss what is still in the WAL); written to
    a temporary name, synced, then renamed. Raises :class:`StartMigrationError` naming the file when it cannot be made
    (no space, no permission): nothing is migrated then.

    An older copy of the same revision (:func:`same_schema_backups`: a run that was cut short, or refused, before its
    migration committed) is removed once this one is in place: the database was at that revision all along, so this
    copy holds it as it is now, and each re-run after a cut no longer left one more file of its size."""
    database = store.engine.url.database
    if not database or database == ":memory:":  # pragma: no cover - radtrace's SQLite databases are files
        raise PermanentError("an in-memory SQLite database has no file to back up")
    source_path = Path(database)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = source_path.with_name(f"{source_path.name}.backup-{revision}-{stamp}")
    partial = source_path.with_name(f"{source_path.name}.backup.partial")  # one name: a copy cut short is replaced
    older = same_schema_backups(source_path, revision)
    try:
        with contextlib.closing(sqlite3.connect(source_path, timeout=30)) as source:
            partial.unlink(missing_ok=True)
            with contextlib.closing(sqlite3.connect(partial)) as copy:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        partial.replace(target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise StartMigrationError(
            f"cannot keep a backup of {source_path} before migrating it ({exc}): free space beside it or make its "
            "folder writable; nothing was migrated"
        ) from exc
    for previous in older:
        if previous != target:
            with contextlib.suppress(OSError):
                previous.unlink()
                log.info("removed %s, an older copy of the same schema %s, now kept in %s", previous, revision, target)
    return target


def same_schema_backups(database: Path, revision: str) -> list[Path]:
    """The copies :func:`backup_sqlite` kept of ``database`` at ``revision`` (``<file>.backup-<revision>-<UTC
    time>``), oldest first."""
    pattern = re.compile(re.escape(f"{database.name}.backup-{revision}-") + r"\d{8}T\d{6}Z")
    return sorted(path for path in database.parent.glob(f"{glob.escape(database.name)}.backup-*")
                  if pattern.fullmatch(path.name) and path.is_file())  # fmt: skip


@dataclass(frozen=True)
class StartMigration:
    """What :func:`migrate_at_start` did: the revision before (None: a new database) and after, and the backup kept
    (SQLite, when a database with a schema was migrated)."""

    before: str | None
    after: str
    backup: Path | None = None

    def describe(self) -> str:
        """One line for the start-up table and the log."""
        if self.before is None:
            return f"created at schema {self.after}"
        if self.before == self.after:
            return f"at schema {self.after}"
        kept = f"; the database as it was is kept in {self.backup}" if self.backup is not None else ""
        return f"migrated from schema {self.before} to {self.after}{kept}"


def migrate_at_start(store: Store, *, stale_after_s: float | None = None) -> StartMigration:
    """Migrate the embedded (SQLite) database at a service's start, saying so first when it has a schema already:
    a database a newer radtrace migrated is refused (:func:`newer_schema_problem`, raised as
    :class:`StartMigrationError`), an older one is copied beside itself first (:func:`backup_sqlite`) and migrated
    with a log line naming both revisions and the copy; a new, empty one is created without either.

    Processes starting together on one SQLite database (systemd units for listen and worker) take turns
    (:func:`one_at_a_time`): the first copies and migrates, the next finds the newest schema. Before, both copied
    it, both said they migrated it, and two copies written under one temporary name failed both starts.

    A database with a schema is not migrated while other radtrace processes work on it
    (:func:`refuse_while_others_work`, raised as :class:`OthersAtWorkError`; ``stale_after_s``: its
    ``store.node_stale_after_s``)."""
    with one_at_a_time(store):
        before, head = current_revision(store), head_revision()
        if (problem := newer_schema_problem(before)) is not None:
            raise StartMigrationError(problem)
        if before == head:
            return StartMigration(before, head)
        backup = None
        if before is not None:
            refuse_while_others_work(store, before, head, stale_after_s=stale_after_s)
            log.info("the database %s is at schema %s; migrating it to %s", store.engine.url.database, before, head)
            if is_sqlite(store.engine):
                backup = backup_sqlite(store, before)
                log.info("kept a copy of the database as it was (schema %s) in %s", before, backup)
        after = upgrade(store)
    migrated = StartMigration(before, after, backup)
    if before is not None:
        log.info("database %s", migrated.describe())
    return migrated


@contextlib.contextmanager
def one_at_a_time(store: Store) -> Iterator[None]:
    """Hold ``<database>.migrate.lock`` (flock: released when the process ends, even by kill -9) for a SQLite
    database file, so that the services' start and ``radtrace db upgrade`` migrate it one at a time; nothing for
    another store (PostgreSQL is migrated by ``radtrace db upgrade`` alone)."""
    database = store.engine.url.database
    if not is_sqlite(store.engine) or not database or database == ":memory:":
        yield
        return
    lock = Path(database).with_name(f"{Path(database).name}.migrate.lock")
    try:
        handle = lock.open("a")
    except OSError as exc:
        raise StartMigrationError(f"cannot lock {lock} to migrate the database: {exc.strerror or exc}") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another process migrating: wait for it
        yield
