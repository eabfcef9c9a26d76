"""Which radtrace may work on this database (the schema floor), and which radtrace processes work on it now (nodes).

*The floor*: ``schema_floor`` names the oldest code that may run against the database: code that knows migration
``min_schema`` (first shipped in radtrace ``min_version``). A migration older code cannot work with raises it
(:func:`raise_floor`, in the migration's own transaction). Every radtrace process refuses to start, and a running one
stops taking work, when its code does not know the floor's migration or the database's revision
(:func:`running_problem`): before, an older dispatcher left running while a newer radtrace migrated the database
failed on the outbox state ``cancelled`` and marked draft withdrawals ``failed``.

*Nodes*: each long-running process is a row of ``nodes`` while it runs (:class:`NodeWatch`): written when it starts,
``seen_at`` renewed every ``store.node_watch_interval_s`` (10 s) on the database's clock, removed when it stops; a row
not renewed for ``store.node_stale_after_s`` (30 s) is a process that ended without saying so (kill -9, a machine gone).
A migration is refused while another process is seen (:func:`others_at_work`): a fresh row, a study's read or a
delivery's send in hand (the claims every radtrace writes, older ones too), a DICOM listener holding the data
directory's lock (SQLite), and on PostgreSQL another radtrace process's connection (named ``radtrace <pid>@<host>``:
:func:`radtrace.store.engine.application_name`); radtrace before the floor named none, so until the floor's migration an
unnamed connection whose role may write radtrace's tables counts too (:func:`_connections`). Other clients (psql, a
monitoring exporter) are named, never counted.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from radtrace.errors import PermanentError, RadtraceError
from radtrace.logging.redaction import escape
from radtrace.store.base import Base, UtcDateTime, utc_now
from radtrace.store.engine import (
    APPLICATION_NAME,
    Store,
    application_name,
    is_postgresql,
    is_sqlite,
    translate_db_error,
)
from radtrace.store.models import OutboxMessage, Revision

__all__ = [
    "NODE_STALE_S",
    "WATCH_INTERVAL_S",
    "CodeTooOldError",
    "Floor",
    "Node",
    "NodeWatch",
    "SchemaFloor",
    "SeenNode",
    "code_version",
    "known_revisions",
    "live_nodes",
    "others_at_work",
    "raise_floor",
    "read_floor",
    "refuse_too_old",
    "running_problem",
    "survey",
    "too_old_problem",
]

log = logging.getLogger(__name__)

#: How often a running process renews its row and compares its code with the database's floor and revision: the
#: default of ``store.node_watch_interval_s``.
WATCH_INTERVAL_S: Final = 10.0
#: A row not renewed for this long is a process that ended (three beats missed): the default of
#: ``store.node_stale_after_s``.
NODE_STALE_S: Final = 3 * WATCH_INTERVAL_S
#: A delivery whose claim's beat (every 5 s, radtrace.reporting.dispatch.claims) is this recent is being sent now.
SENDING_WITHIN_S: Final = 60.0


class SchemaFloor(Base):
    """The oldest radtrace that may run against this database (one row, id 1): code that knows migration
    ``min_schema``, first shipped in radtrace ``min_version`` (see the module docstring)."""

    __tablename__ = "schema_floor"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    min_schema: Mapped[str] = mapped_column(sa.String(64), doc="the migration the code must know")
    min_version: Mapped[str] = mapped_column(sa.String(64), doc="the radtrace that raised the floor")
    reason: Mapped[str] = mapped_column(sa.Text, doc="what older code would get wrong")
    set_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Node(Base):
    """One radtrace process working on this database now (see the module docstring and :class:`NodeWatch`)."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    role: Mapped[str] = mapped_column(sa.String(32))
    version: Mapped[str] = mapped_column(sa.String(64), doc="radtrace's version")
    schema: Mapped[str] = mapped_column(sa.String(64), doc="the newest migration its code knows")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every migration this code ships."""
    from alembic.script import ScriptDirectory

    from radtrace.store.migrate import MIGRATIONS

    return frozenset(script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions())


def code_version() -> str:
    """This radtrace's version."""
    import radtrace

    return str(radtrace.__version__)


def _head() -> str:
    from radtrace.store.migrate import head_revision

    return head_revision()


@dataclass(frozen=True)
class Floor:
    """The oldest radtrace that may run against the database (see the module docstring)."""

    min_schema: str
    min_version: str
    reason: str


def raise_floor(connection: sa.Connection, min_schema: str, reason: str) -> None:
    """Record (in a migration, on its connection) that only code knowing migration ``min_schema`` may run against
    the database from now on, because older code ``reason`` (what it would get wrong, for the refusal's words). The
    version named is the radtrace running the migration."""
    values = {"min_schema": min_schema, "min_version": code_version(), "reason": reason, "set_at": utc_now()}
    if connection.execute(sa.select(SchemaFloor.id).where(SchemaFloor.id == 1)).first() is None:
        connection.execute(sa.insert(SchemaFloor).values(id=1, **values))
    else:
        connection.execute(sa.update(SchemaFloor).where(SchemaFloor.id == 1).values(**values))


def read_floor(connection: sa.Connection) -> Floor | None:
    """The database's floor; None before the floor's migration (no floor recorded)."""
    if not sa.inspect(connection).has_table("schema_floor"):
        return None
    row = connection.execute(
        sa.select(SchemaFloor.min_schema, SchemaFloor.min_version, SchemaFloor.reason).where(SchemaFloor.id == 1)
    ).first()
    return None if row is None else Floor(str(row[0]), str(row[1]), str(row[2]))


def too_old_problem(floor: Floor | None) -> str | None:
    """Why this code must not run against a database with ``floor``; None when it may.

    The floor is judged by migration (``min_schema``), never by version: the version (``pyproject.toml``, read by
    :func:`code_version`) is words for the operator. It is raised only by a release, so a build between two releases
    (or a release that did not raise it) says the same version as the code that raised the floor: then the words name
    the schema and the build, not an upgrade "to" the version this node already runs."""
    if floor is None or floor.min_schema in known_revisions():
        return None
    runs = f"this node runs radtrace {code_version()} (schema {_head()})"
    if code_version() == floor.min_version:
        return (
            f"{runs}; the database needs radtrace code that knows schema {floor.min_schema} ({floor.reason}), which "
            f"the radtrace that migrated it ships (it also says it is radtrace {floor.min_version}: the version was "
            "not raised with that migration, so it cannot tell the two apart): install the radtrace build that "
            "migrated the database on this node, then start it again (docs/operations.md, Upgrades and migrations)"
        )
    return (
        f"{runs}; the database needs radtrace >= {floor.min_version} (schema {floor.min_schema} or newer; "
        f"{floor.reason}): upgrade this node to radtrace {floor.min_version} or newer, then start it again "
        "(docs/operations.md, Upgrades and migrations)"
    )


def running_problem(store: Store) -> str | None:
    """Why this code must not work on the database now: its floor names a migration this code does not know
    (:func:`too_old_problem`), or a newer radtrace migrated it
    (:func:`radtrace.store.migrate.newer_schema_problem`); None when it may."""
    from alembic.runtime.migration import MigrationContext

    from radtrace.store.migrate import newer_schema_problem

    try:
        with store.engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
            floor = read_floor(connection)
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the schema revision and floor") from exc
    return too_old_problem(floor) or newer_schema_problem(revision)


class CodeTooOldError(PermanentError):
    """This radtrace may not work on the database (:func:`running_problem`)."""


def refuse_too_old(store: Store) -> None:
    """Raise :class:`CodeTooOldError` with :func:`running_problem`'s words when this code may not work on the
    database: for a command, before it reads or writes (``radtrace.cli.common.open_store``)."""
    if (problem := running_problem(store)) is not None:
        raise CodeTooOldError(problem)


# --- nodes ----------------------------------------------------------------------------------------------------------


def _database_now(connection: sa.Connection) -> datetime:
    """The database's clock (PostgreSQL), every node's; this machine's for the embedded SQLite database."""
    if is_postgresql(connection):
        found = connection.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
        assert isinstance(found, datetime)
        return found
    return utc_now()


@dataclass(frozen=True)
class SeenNode:
    """A process the ``nodes`` table says works on the database."""

    id: str
    host: str
    pid: int
    role: str
    version: str
    schema: str
    seen_s_ago: float

    def describe(self) -> str:
        return (
            f"{self.role} on {self.host} (pid {self.pid}, radtrace {self.version}, schema {self.schema}; seen "
            f"{max(0.0, self.seen_s_ago):.0f} s ago)"
        )


def _register(store: Store, node_id: str, role: str) -> None:
    with store.session("recording this process in the nodes table") as session:
        connection = session.connection()
        now = _database_now(connection)
        session.execute(sa.delete(Node).where(Node.id == node_id))
        session.execute(
            sa.insert(Node).values(
                id=node_id, host=socket.gethostname()[:255], pid=os.getpid(), role=role[:32],
                version=code_version()[:64], schema=_head(), started_at=now, seen_at=now,
            )
        )  # fmt: skip


def _renew(store: Store, node_id: str, role: str) -> None:
    with store.session("renewing this process's row in the nodes table") as session:
        connection = session.connection()
        now = _database_now(connection)
        renewed = session.execute(sa.update(Node).where(Node.id == node_id).values(seen_at=now))
    if getattr(renewed, "rowcount", 1) == 0:  # removed meanwhile (a restored database): written again
        _register(store, node_id, role)


def _leave(store: Store, node_id: str) -> None:
    with store.session("removing this process from the nodes table") as session:
        session.execute(sa.delete(Node).where(Node.id == node_id))


def _ended_here(host: str, pid: int) -> bool:
    """Whether the process ``pid`` of this host has ended (its row outlived it: kill -9)."""
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def live_nodes(store: Store, *, excluding: Iterable[str] = (), stale_after_s: float = NODE_STALE_S) -> list[SeenNode]:
    """The processes the ``nodes`` table says work on the database now (renewed within ``stale_after_s``:
    ``store.node_stale_after_s``, and not a process of this host that has ended), but those ``excluding``; none before
    the floor's migration."""
    left_out = set(excluding)
    try:
        with store.engine.connect() as connection:
            if not sa.inspect(connection).has_table("nodes"):
                return []
            now = _database_now(connection)
            rows = connection.execute(
                sa.select(Node.id, Node.host, Node.pid, Node.role, Node.version, Node.schema,
                          Node.seen_at)
                .where(Node.seen_at >= now - timedelta(seconds=stale_after_s))
                .order_by(Node.host, Node.pid)
            ).all()  # fmt: skip
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the nodes table") from exc
    seen = []
    for node_id, host, pid, role, version, schema, seen_at in rows:
        if node_id in left_out or _ended_here(host, pid):
            continue
        ago = (now - seen_at).total_seconds()
        seen.append(SeenNode(node_id, host, pid, role, version, schema, ago))
    return seen


def _work_in_hand(connection: sa.Connection) -> list[str]:
    """The reads and sends in hand now, by the claims every radtrace writes (older versions' too)."""
    now = _database_now(connection)
    found: list[str] = []
    inspector = sa.inspect(connection)
    columns = {
        table: {column["name"] for column in inspector.get_columns(table)}
        for table in ("revisions", "outbox") if inspector.has_table(table)
    }  # fmt: skip
    if not {"claimed_by", "claim_expires_at"} <= columns.get("revisions", set()):
        return found  # an empty database, or one older than the claims
    for revision_id, holder in connection.execute(
        sa.select(Revision.id, Revision.claimed_by).where(Revision.claimed_by.is_not(None),
                                                          Revision.claim_expires_at > now)
    ):  # fmt: skip
        found.append(f"a worker reading revision {revision_id} ({str(holder).split(' ', 1)[0]})")
    if not {"claimed_by", "heartbeat_at"} <= columns.get("outbox", set()):
        return found  # before migration 0014 a delivery's claim was not recorded
    recent = now - timedelta(seconds=SENDING_WITHIN_S)
    for outbox_id, holder in connection.execute(
        sa.select(OutboxMessage.id, OutboxMessage.claimed_by).where(OutboxMessage.claimed_by.is_not(None),
                                                                    OutboxMessage.heartbeat_at >= recent)
    ):  # fmt: skip
        found.append(f"a dispatcher sending delivery {outbox_id} ({str(holder).split(' ', 1)[0]})")
    return found


@dataclass(frozen=True)
class _Client:
    """Connections to this database of one application name, role and client address (PostgreSQL)."""

    application: str
    user: str
    address: str | None
    count: int
    since: datetime | None
    may_write: bool

    def describe(self, what: str) -> str:
        # pg_stat_activity shows no address for a local socket, nor another role's to a role without pg_read_all_stats
        where = f"from {self.address}" if self.address is not None else "with no address shown"
        many = "connections" if self.count > 1 else "connection"
        started = f", since {self.since:%Y-%m-%d %H:%M} UTC" if self.since is not None else ""
        return f"{self.count} {what} {many} {where} as {escape(self.user)}{started}"


def _clients(connection: sa.Connection) -> list[_Client]:
    """PostgreSQL: the other client connections to this database, grouped by application name, role and address.
    ``may_write``: the role may update the outbox (what every radtrace's role may do; a monitoring role, pg_monitor
    or the like, may not; a process of no role, an autovacuum worker, may not either).

    Measured on PostgreSQL 15: a role without pg_read_all_stats sees another role's sessions with their
    ``application_name`` and ``usename`` but no ``client_addr``, ``backend_start`` nor ``backend_type`` (NULL), so
    a NULL ``backend_type`` is taken for a client and the names still tell radtrace's connections from others'."""
    rows = connection.execute(
        sa.text(
            "SELECT COALESCE(application_name, ''), COALESCE(usename, '?'), host(client_addr), count(*), "
            "min(backend_start), bool_or(COALESCE(CASE WHEN to_regclass('outbox') IS NULL THEN true "
            "ELSE has_table_privilege(usesysid, to_regclass('outbox'), 'UPDATE') END, false)) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND COALESCE(backend_type, 'client backend') = 'client backend' "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
    ).all()
    return [
        _Client(str(application)[:64], str(user)[:64], address, int(count),
                since if isinstance(since, datetime) else None, bool(may_write))
        for application, user, address, count, since, may_write in rows
    ]  # fmt: skip


def _connections(connection: sa.Connection, nodes: Iterable[SeenNode] = ()) -> tuple[list[str], list[str]]:
    """PostgreSQL: (the connections of other radtrace processes, the other clients'), in words.

    radtrace's: every engine radtrace opens names its connections ``radtrace <pid>@<host>``
    (:func:`radtrace.store.engine.application_name`; the floor's first code named them ``radtrace``); this process's
    own are left out, and those of a process ``nodes`` names already. radtrace before the schema floor named none, so
    while the database has no floor (before migration 0024) a connection with no application name whose role may write
    radtrace's tables is counted too: an older radtrace, idle, shows nothing else. From the floor on, an older radtrace
    cannot be at work unless a migration was forced under it: on PostgreSQL it refuses to start on a schema other than
    its newest, and the floor's migration was refused while it was connected. Every other client (psql, a monitoring
    exporter, a DBA's tool, an unnamed connection once the floor is there) is named, never counted."""
    before_floor = not sa.inspect(connection).has_table("schema_floor")
    named = {application_name()} | {
        f"{APPLICATION_NAME} {node.pid}@{node.host.encode('ascii', 'replace').decode('ascii')[:40]}" for node in nodes
    }
    ours: list[str] = []
    others: list[str] = []
    for client in _clients(connection):
        if client.application == APPLICATION_NAME or client.application.startswith(f"{APPLICATION_NAME} "):
            if client.application not in named:
                ours.append(client.describe(f"'{escape(client.application)}'"))
        elif not client.application and before_floor and client.may_write:
            ours.append(client.describe("unnamed") + " that may write radtrace's tables (an older radtrace?)")
        elif client.application:
            others.append(client.describe(f"'{escape(client.application)}'"))
        else:
            others.append(client.describe("unnamed"))
    return ours, others


def _listener_lock(store: Store) -> list[str]:
    """SQLite: a DICOM listener holding ``listener.lock`` beside the database (its data directory), old or new."""
    database = store.engine.url.database
    if not is_sqlite(store.engine) or not database or database == ":memory:":
        return []
    lock = Path(database).with_name("listener.lock")
    try:
        descriptor = os.open(lock, os.O_RDONLY)
    except OSError:
        return []
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return [f"a DICOM listener holding {lock}"]
    finally:
        os.close(descriptor)  # closing releases a lock taken here
    return []


def others_at_work(store: Store, *, excluding: Iterable[str] = (), stale_after_s: float = NODE_STALE_S) -> list[str]:
    """Each radtrace process seen working on the database now, in words (see the module docstring); empty when none
    is seen. ``excluding``: node ids of this process's own; ``stale_after_s``: see :func:`live_nodes`."""
    return survey(store, excluding=excluding, stale_after_s=stale_after_s)[0]


def survey(
    store: Store, *, excluding: Iterable[str] = (), stale_after_s: float = NODE_STALE_S
) -> tuple[list[str], list[str]]:
    """(each radtrace process seen working on the database now, each other client connected to it: PostgreSQL, not
    radtrace, never counted), in words (see :func:`others_at_work` and :func:`_connections`)."""
    nodes = live_nodes(store, excluding=excluding, stale_after_s=stale_after_s)
    found = [node.describe() for node in nodes]
    others: list[str] = []
    try:
        with store.engine.connect() as connection:
            found += _work_in_hand(connection)
            if is_postgresql(connection):
                ours, others = _connections(connection, nodes)
                found += ours
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "looking for radtrace processes working on the database") from exc
    return found + _listener_lock(store), others


class NodeWatch:
    """This process's row in ``nodes`` and the watch on the floor, while a long-running process runs.

    :meth:`start` writes the row (after the start-up checks) and starts a daemon thread that every ``interval_s``
    renews it and asks :func:`running_problem`. When this code may no longer work on the database (a newer radtrace
    raised the floor or migrated it), the thread logs one line saying both versions and what to do, removes the row
    and calls ``on_incompatible`` with the reason, once; by default that sends this process SIGTERM, which every
    radtrace service takes as ``systemctl stop``: no new work, what is in hand finished (a worker's study, a
    listener's association) or, cut short, taken up again by a node that may run (the claims expire; at least once).
    A database that does not answer is waited out (the services say that themselves). :meth:`stop` (also at exit)
    removes the row."""

    def __init__(
        self,
        store_url: str,
        role: str,
        *,
        interval_s: float = WATCH_INTERVAL_S,
        on_incompatible: Callable[[str], None] | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.store_url, self.role, self.interval_s = store_url, role, interval_s
        self.on_incompatible = on_incompatible or _stop_this_process
        self.node_id = uuid.uuid4().hex
        self.problem: str | None = None
        self._connect_timeout_s = connect_timeout_s
        self._store: Store | None = None
        self._stopped = threading.Event()
        self._checking = threading.Lock()
        self._thread: threading.Thread | None = None
        self._registered = False

    def start(self) -> NodeWatch:
        """Write this process's row and start watching (idempotent)."""
        if self._thread is not None:
            return self
        self._store = Store.from_url(self.store_url, pool_size=1, connect_timeout_s=self._connect_timeout_s)
        with contextlib.suppress(RadtraceError):  # the database away: the thread writes it at its first beat
            _register(self._store, self.node_id, self.role)
            self._registered = True
        self._thread = threading.Thread(target=self._run, name=f"radtrace-node-watch-{self.role}", daemon=True)
        self._thread.start()
        atexit.register(self.stop)
        return self

    def check(self) -> str | None:
        """One beat: renew the row and compare this code with the database; the reason it may not work on it, or
        None. Acts (the log line, ``on_incompatible``) the first time a reason is found, once however many threads
        ask (serve's supervisor asks too when a child exits)."""
        with self._checking:
            return self._check()

    def _check(self) -> str | None:
        store = self._store
        if store is None or self.problem is not None:
            return self.problem
        try:
            if self._registered:
                _renew(store, self.node_id, self.role)
            else:
                _register(store, self.node_id, self.role)
                self._registered = True
            problem = running_problem(store)
        except RadtraceError as exc:
            log.debug("node watch: %s", exc.reason)
            return None
        if problem is None:
            return None
        self.problem = problem
        log.error("%s. This %s (pid %d) stops taking work now; what it has in hand is finished, or taken up again by "
                  "an upgraded node", problem, self.role, os.getpid())  # fmt: skip
        self._remove_row()
        self.on_incompatible(problem)
        return problem

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            if self.check() is not None:
                return

    def _remove_row(self) -> None:
        if self._store is not None and self._registered:
            with contextlib.suppress(RadtraceError):
                _leave(self._store, self.node_id)
            self._registered = False

    def stop(self) -> None:
        """Stop watching and remove this process's row (idempotent)."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._connect_timeout_s + 5)
        self._remove_row()
        if self._store is not None:
            self._store.dispose()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def _stop_this_process(_problem: str) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
