"""Which radtrace processes are seen working on this database now, for a migration to refuse to run under them
(:func:`others_at_work`): a fresh row of ``nodes`` (:mod:`radtrace.store.nodes`), a study's read or a delivery's send
in hand (the claims every radtrace writes, older ones too), a DICOM listener holding the data directory's lock
(SQLite), and on PostgreSQL another radtrace process's connection (named ``radtrace <pid>@<host>``:
:func:`radtrace.store.engine.application_name`); radtrace before the floor (:mod:`radtrace.store.floor`) named none, so
until the floor's migration an unnamed connection whose role may write radtrace's tables counts too, unless a
connection pooler's session reset (DISCARD ALL) was the last statement on it, idle (:func:`_connections`). Other
clients (psql, a monitoring exporter) are named, never counted.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import sqlalchemy as sa

from radtrace.logging.redaction import escape
from radtrace.store.engine import (
    APPLICATION_NAME,
    Store,
    application_name,
    is_postgresql,
    is_sqlite,
    translate_db_error,
)
from radtrace.store.models import OutboxMessage, Revision
from radtrace.store.nodes import NODE_STALE_S, SeenNode, database_now, ended_here, live_nodes

__all__ = [
    "SENDING_WITHIN_S",
    "UPGRADE_APPLICATION",
    "UPGRADE_LOCK",
    "LockWatch",
    "lock_waits",
    "name_as_upgrade",
    "others_at_work",
    "session_reset",
    "survey",
    "upgrade_application_name",
]

#: Why an idle connection with a radtrace name may be no radtrace at work (:func:`_connections`).
POOLED: Final = "connection pooler such as pgbouncer keeps a stopped client's name on its idle server connection"
#: ``pg_advisory_lock(int4, int4)``'s keys (a key space of its own, beside the bigint keys of the audit log and the
#: others) that ``radtrace db upgrade`` holds on PostgreSQL from before its census to its end: 'radt', 'upgr'.
UPGRADE_LOCK: Final = (0x72616474, 0x75706772)
#: ``radtrace db upgrade`` names its PostgreSQL connections ``radtrace db upgrade <pid>@<host>``
#: (:func:`upgrade_application_name`), from the connection's start: the one holding :data:`UPGRADE_LOCK` tells another
#: ``db upgrade`` that has connected but not yet asked for its turn from a radtrace at work (:func:`_clients`).
UPGRADE_APPLICATION: Final = f"{APPLICATION_NAME} db upgrade"
#: A delivery whose claim's beat (every 5 s, radtrace.reporting.dispatch.claims) is this recent is being sent now.
SENDING_WITHIN_S: Final = 60.0


def upgrade_application_name() -> str:
    """This process's application name as ``radtrace db upgrade`` (:data:`UPGRADE_APPLICATION`): ``radtrace db upgrade
    <pid>@<host>``, cut to PostgreSQL's 63 bytes (ASCII) as PostgreSQL would cut it."""
    return f"{UPGRADE_APPLICATION} {application_name().removeprefix(f'{APPLICATION_NAME} ')}"[:63]


def _name_as_upgrade(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
    params["application_name"] = upgrade_application_name()


def name_as_upgrade(store: Store) -> None:
    """Name every connection ``store`` opens from now on as ``radtrace db upgrade``'s
    (:func:`upgrade_application_name`; after the engine's own naming, which it replaces), and close those it keeps
    under the other name. The name is in the connection's start-up packet: pg_stat_activity shows it from the
    session's first moment, before any statement, so no census sees a ``db upgrade`` under another name."""
    if not is_postgresql(store.engine):
        return
    sa.event.listen(store.engine, "do_connect", _name_as_upgrade)
    store.engine.dispose()


def _work_in_hand(connection: sa.Connection) -> list[str]:
    """The reads and sends in hand now, by the claims every radtrace writes (older versions' too)."""
    now = database_now(connection)
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


#: What a connection pooler runs on its server connection when a client leaves (pgbouncer's ``server_reset_query``
#: for session pooling, ``DISCARD ALL`` by default; its older advice ``RESET ALL; SET SESSION AUTHORIZATION DEFAULT``;
#: pgpool-II's ``reset_query_list`` ends with ``DISCARD ALL``). radtrace runs none of these statements.
SESSION_RESETS: Final = frozenset({"discard all", "reset all", "set session authorization default", "deallocate all",
                                   "close all", "unlisten *", "select pg_advisory_unlock_all()", "discard plans",
                                   "discard sequences", "discard temp"})  # fmt: skip
#: How the refusal tells hospital IT the way through when a pooler's idle server connection is not recognised.
POOLER_WAY: Final = (
    "if that address is a connection pooler (pgbouncer) with no radtrace left behind it, close its idle server "
    "connections (pgbouncer's admin console: RECONNECT <database>, or KILL <database> then RESUME <database>) or wait "
    "for its server_idle_timeout, then migrate; an idle server connection whose last statement was the pooler's "
    "reset (server_reset_query, DISCARD ALL) is recognised and not waited for"
)


def session_reset(query: str | None) -> bool:
    """Whether ``query`` (a connection's last statement, pg_stat_activity) is a connection pooler's session reset
    (:data:`SESSION_RESETS`, one or several of them): what pgbouncer in session pooling leaves on a server connection
    its client has left."""
    if not query:
        return False
    statements = [" ".join(part.split()).lower() for part in query.split(";")]
    statements = [statement for statement in statements if statement]
    return bool(statements) and all(statement in SESSION_RESETS for statement in statements)


@dataclass(frozen=True)
class _Client:
    """Connections to this database of one application name, role and client address (PostgreSQL), and whether
    they are a pooler's idle server connections after its reset."""

    application: str
    user: str
    address: str | None
    count: int
    since: datetime | None
    may_write: bool
    #: Seconds since the most recently used of them went idle, when every one is idle (outside a transaction); None
    #: when one is busy, or their state is not shown (another role's, to a role without pg_read_all_stats).
    idle_s: float | None = None
    #: Every one is idle and its last statement was a pooler's session reset (:func:`session_reset`).
    reset: bool = False
    #: Their state and last statement are shown to this role (its own role's, or it has pg_read_all_stats).
    shown: bool = True

    def describe(self, what: str) -> str:
        # pg_stat_activity shows no address for a local socket, nor another role's to a role without pg_read_all_stats
        where = f"from {self.address}" if self.address is not None else "with no address shown"
        many = "connections" if self.count > 1 else "connection"
        started = f", since {self.since:%Y-%m-%d %H:%M} UTC" if self.since is not None else ""
        return f"{self.count} {what} {many} {where} as {escape(self.user)}{started}"

    def left_by_a_pooler(self, stale_after_s: float) -> bool:
        """Idle for longer than ``stale_after_s``: with no live ``nodes`` row of its process (the caller's part),
        a name a connection pooler kept on its idle server connection after its client left, not radtrace at work."""
        return self.idle_s is not None and self.idle_s > stale_after_s


def _clients(connection: sa.Connection) -> list[_Client]:
    """PostgreSQL: the other client connections to this database, grouped by application name, role, address and
    whether they are a pooler's idle server connections after its reset (:func:`session_reset`). ``may_write``: the
    role may update the outbox (what every radtrace's role may do; a monitoring role, pg_monitor or the like, may
    not; a process of no role, an autovacuum worker, may not either).

    Measured on PostgreSQL 15: a role without pg_read_all_stats sees another role's sessions with their
    ``application_name`` and ``usename`` but no ``client_addr``, ``backend_start`` nor ``backend_type`` (NULL), so
    a NULL ``backend_type`` is taken for a client and the names still tell radtrace's connections from others'.
    Nor does it see their ``state``, ``state_change`` and ``query`` (NULL, '<insufficient privilege>'): ``idle_s``
    is None then (as for a busy connection), ``reset`` False and ``shown`` False."""
    rows = connection.execute(
        sa.text(
            "SELECT COALESCE(application_name, ''), COALESCE(usename, '?'), host(client_addr), backend_start, "
            "COALESCE(CASE WHEN to_regclass('outbox') IS NULL THEN true "
            "ELSE has_table_privilege(usesysid, to_regclass('outbox'), 'UPDATE') END, false), "
            "state, CASE WHEN state = 'idle' AND state_change IS NOT NULL "
            "THEN EXTRACT(EPOCH FROM clock_timestamp() - state_change)::float END, query "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND COALESCE(backend_type, 'client backend') = 'client backend' "
            # a process with a session waiting for UPGRADE_LOCK: another db upgrade waiting its turn
            "AND COALESCE(application_name, '') NOT IN (SELECT application_name FROM pg_stat_activity "
            "WHERE application_name LIKE :radtrace AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
            "AND NOT granted AND objsubid = 2 AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND classid::bigint = :first AND objid::bigint = :second)) "
            # another db upgrade's connection (by its name, from its first moment) while this process has the turn:
            # it waits for it, or is about to ask for it; none migrates
            "AND NOT (COALESCE(application_name, '') LIKE :upgrade AND EXISTS (SELECT 1 FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = :first AND l.objid::bigint = :second AND a.application_name = ANY(:ours)))"
        ),
        {
            "radtrace": f"{APPLICATION_NAME} %",
            "first": UPGRADE_LOCK[0],
            "second": UPGRADE_LOCK[1],
            "upgrade": f"{UPGRADE_APPLICATION} %",
            "ours": [application_name(), upgrade_application_name()],
        },
    ).all()
    groups: dict[tuple[str, str, str, bool], list[tuple[Any, ...]]] = {}
    for row in rows:
        application, user, address, _since, _may_write, state, _idle, query = row
        reset = state == "idle" and session_reset(query)
        groups.setdefault((str(application)[:64], str(user)[:64], address or "", reset), []).append(tuple(row))
    clients = []
    for (application, user, address, reset), members in sorted(groups.items()):
        starts = [row[3] for row in members if isinstance(row[3], datetime)]
        idles = [row[6] for row in members]
        clients.append(
            _Client(application, user, address or None, len(members), min(starts, default=None),
                    any(bool(row[4]) for row in members),
                    None if None in idles else max(0.0, min(float(idle) for idle in idles)),
                    reset, all(row[5] is not None for row in members))
        )  # fmt: skip
    return clients


def _pid_of_this_host(application: str) -> int | None:
    """The process id in the radtrace name ``application`` (``radtrace <pid>@<host>``) when its host is this one."""
    pid, _, host = application.removeprefix(f"{APPLICATION_NAME} ").partition("@")
    return int(pid) if pid.isdigit() and host == application_name().partition("@")[2] else None


def _connections(
    connection: sa.Connection, nodes: Iterable[SeenNode] = (), *, stale_after_s: float = NODE_STALE_S
) -> tuple[list[str], list[str]]:
    """PostgreSQL: (the connections of other radtrace processes, the other clients'), in words.

    radtrace's: every engine radtrace opens names its connections ``radtrace <pid>@<host>``
    (:func:`radtrace.store.engine.application_name`; the floor's first code named them ``radtrace``); this process's
    own are left out, and those of a process ``nodes`` names already. A connection pooler keeps a name after its
    client left: pgbouncer sets each server connection's name to its client's and, pooling transactions, resets
    nothing when the client goes (measured with Debian's pgbouncer 1.18: the name of a radtrace that had ended stayed
    until pgbouncer closed the connection, ``server_idle_timeout``, 600 s). So a radtrace name on connections all idle
    for longer than ``stale_after_s`` (``store.node_stale_after_s``) whose process has no live ``nodes`` row is named
    as the pooler's, not counted: a radtrace at work is in a transaction, used its connection since, or is a service
    renewing its row (a process without a row that leaves its connection idle longer, ``radtrace audit forward``
    backing off, is not waited for then). A name of this host is judged by its process instead: counted while it
    runs, however long idle, named as the pooler's once it has ended. radtrace before the schema floor named none, so
    while the database has no floor (before migration 0024) a connection with no application name whose role may write
    radtrace's tables is counted too: an older radtrace, idle, shows nothing else; unless it is idle after a
    connection pooler's session reset (:func:`session_reset`): pgbouncer pooling sessions runs ``DISCARD ALL`` on a
    server connection its client left, which clears the name too (measured with Debian's pgbouncer 1.18), and radtrace
    runs no such statement, so a radtrace behind the pooler, connected, shows its own last statement instead (a client
    that has just connected and sent nothing yet shows the reset too: radtrace queries at once on connecting). Where
    this role is not shown the statement, the words say how to close the pooler's idle connections
    (:data:`POOLER_WAY`). From the floor on, an older radtrace
    cannot be at work unless a migration was forced under it: on PostgreSQL it refuses to start on a schema other than
    its newest, and the floor's migration was refused while it was connected. Every other client (psql, a monitoring
    exporter, a DBA's tool, an unnamed connection once the floor is there) is named, never counted. Left out: the
    connections of a process with a session waiting for :data:`UPGRADE_LOCK`, another ``radtrace db upgrade``
    waiting its turn (before, three started together on one database refused each other, none migrated); and while
    this process holds that turn, every connection named as another ``radtrace db upgrade``'s
    (:data:`UPGRADE_APPLICATION`): one that had connected but not yet asked for its turn (its first statements, a
    few milliseconds) was counted, and the one holding the turn refused (8 released together: a refusal in 4 of 8 runs
    of 3 rounds, tests/integration/test_upgrade_together.py)."""
    before_floor = not sa.inspect(connection).has_table("schema_floor")
    named = {application_name()} | {
        f"{APPLICATION_NAME} {node.pid}@{node.host.encode('ascii', 'replace').decode('ascii')[:40]}" for node in nodes
    }
    ours: list[str] = []
    others: list[str] = []
    for client in _clients(connection):
        if client.application == APPLICATION_NAME or client.application.startswith(f"{APPLICATION_NAME} "):
            if client.application in named:
                continue
            said = client.describe(f"'{escape(client.application)}'")
            here = _pid_of_this_host(client.application)
            if here is not None and ended_here(socket.gethostname(), here):
                others.append(f"{said}, of process {here} of this host, which has ended (a {POOLED})")
            elif here is not None:
                ours.append(said)  # a process of this host that runs: counted however long its connection idles
            elif client.left_by_a_pooler(stale_after_s):
                others.append(f"{said}, idle {client.idle_s:.0f} s, of no radtrace process seen (a {POOLED})")
            elif client.idle_s is not None:
                ours.append(f"{said}, idle {client.idle_s:.0f} s (behind a connection pooler such as pgbouncer it "
                            "may be a stopped client's name: not waited for once idle for "
                            f"{stale_after_s:.0f} s)")  # fmt: skip
            else:
                ours.append(said)
        elif not client.application and before_floor and client.may_write and client.reset:
            others.append(f"{client.describe('unnamed')}, idle after a connection pooler's reset (its last statement "
                          "was its server_reset_query, DISCARD ALL: pgbouncer in session pooling keeps such a "
                          "connection after its client left)")  # fmt: skip
        elif not client.application and before_floor and client.may_write:
            hidden = "" if client.shown else (
                "; its state and last statement are not shown to this role: with pg_read_all_stats granted to it, "
                "a pooler's idle server connection is recognised"
            )  # fmt: skip
            ours.append(
                f"{client.describe('unnamed')} that may write radtrace's tables (an older radtrace? "
                f"{POOLER_WAY.replace('that address', client.address or 'its address', 1)}{hidden})"
            )
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
                ours, others = _connections(connection, nodes, stale_after_s=stale_after_s)
                found += ours
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "looking for radtrace processes working on the database") from exc
    return found + _listener_lock(store), others


def lock_waits(connection: sa.Connection, *applications: str) -> list[tuple[int, list[str]]]:
    """PostgreSQL: each session named one of ``applications`` (this process's: :func:`application_name`,
    :func:`upgrade_application_name`) but the asking one
    that waits for a lock: its pid and the sessions that hold it up (``pg_blocking_pids``), in words: pid,
    application name, address, role, state and since when its transaction runs (for ``pg_terminate_backend``)."""
    waits = []
    for pid, blocking in connection.execute(
        sa.text("SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity WHERE application_name = ANY(:names) "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"),
        {"names": list(applications)},
    ).all():  # fmt: skip
        holders = connection.execute(
            sa.text("SELECT pid, COALESCE(application_name, ''), COALESCE(usename, '?'), host(client_addr), "
                    "COALESCE(state, 'state not shown'), xact_start FROM pg_stat_activity WHERE pid = ANY(:pids) "
                    "ORDER BY pid"),
            {"pids": [int(holder) for holder in blocking or ()]},
        ).all()  # fmt: skip
        words = []
        for holder, name, user, address, state, since in holders:
            who = f"'{escape(str(name)[:64])}'" if name else "unnamed"
            where = f"from {address}" if address is not None else "with no address shown"
            started = f", its transaction since {since:%Y-%m-%d %H:%M:%S} UTC" if isinstance(since, datetime) else ""
            words.append(f"pid {holder} ({who} {where} as {escape(str(user)[:64])}, {state}{started})")
        waits.append((int(pid), words or ["a session that has ended since"]))
    return waits


class LockWatch:
    """While ``radtrace db upgrade`` migrates a PostgreSQL database (a context manager): a thread that, every
    ``poll_s``, looks for this process's sessions waiting for a lock (:func:`lock_waits`). Another client holding
    one (a DBA's psql idle in a transaction, a report) held the migration up without a word for as long as it
    stayed, every other session on that table queued behind the migration's lock. Now ``on_wait`` is told who holds
    it once the wait has lasted ``tell_after_s``, and after ``limit_s`` (0: never) the waiting statement is
    cancelled (``pg_cancel_backend``), so that the migration fails, rolled back in whole, and :attr:`holders` names
    them for the refusal."""

    def __init__(
        self,
        store: Store,
        *,
        limit_s: float,
        on_wait: Callable[[list[str]], None],
        tell_after_s: float = 2.0,
        poll_s: float = 0.5,
    ) -> None:
        self.store = store
        self.limit_s = limit_s
        self.on_wait = on_wait
        self.tell_after_s = tell_after_s
        self.poll_s = poll_s
        #: The sessions that held the migration up when it was cancelled; empty while it was not.
        self.holders: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="migration-lock-watch", daemon=True)

    def __enter__(self) -> LockWatch:
        if is_postgresql(self.store.engine):
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        since: float | None = None
        told = False
        while not self._stop.wait(self.poll_s):
            try:
                with self.store.engine.connect() as connection:
                    waits = lock_waits(connection, application_name(), upgrade_application_name())
                    if not waits:
                        since = None
                        continue
                    since = time.monotonic() if since is None else since
                    waited = time.monotonic() - since
                    holders = sorted({holder for _pid, held_by in waits for holder in held_by})
                    if not told and waited >= min(self.tell_after_s, self.limit_s or self.tell_after_s):
                        self.on_wait(holders)
                        told = True
                    if self.limit_s and waited >= self.limit_s:
                        self.holders = holders
                        for pid, _held_by in waits:
                            connection.execute(sa.text("SELECT pg_cancel_backend(:pid)"), {"pid": pid})
                        return
            except sa.exc.SQLAlchemyError:
                continue  # the database went away: the migration itself fails and says so
