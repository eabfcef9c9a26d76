"""Which radtrace processes are seen working on this database now, for a migration to refuse to run under them
(:func:`others_at_work`): a fresh row of ``nodes`` (:mod:`radtrace.store.nodes`), a study's read or a delivery's send
in hand (the claims every radtrace writes, older ones too), a DICOM listener holding the data directory's lock
(SQLite), and on PostgreSQL another radtrace process's connection (named ``radtrace <pid>@<host>``:
:func:`radtrace.store.engine.application_name`); radtrace before the floor (:mod:`radtrace.store.floor`) named none, so
until the floor's migration an unnamed connection whose role may write radtrace's tables counts too
(:func:`_connections`). Other clients (psql, a monitoring exporter) are named, never counted.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

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
from radtrace.store.nodes import NODE_STALE_S, SeenNode, database_now, live_nodes

__all__ = ["SENDING_WITHIN_S", "others_at_work", "survey"]

#: A delivery whose claim's beat (every 5 s, radtrace.reporting.dispatch.claims) is this recent is being sent now.
SENDING_WITHIN_S: Final = 60.0


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
