"""Which radtrace processes work on this database now, by their rows in ``nodes``.

Each long-running process is a row while it runs (:class:`radtrace.store.node_watch.NodeWatch`): written when it
starts, ``seen_at`` renewed every ``store.node_watch_interval_s`` (10 s) on the database's clock, removed when it
stops; a row not renewed for ``store.node_stale_after_s`` (30 s) is a process that ended without saying so (kill -9, a
machine gone). A migration is refused while a fresh row is seen (:mod:`radtrace.store.census`).

Each row says its process's own interval and limit (from migration 0026), and is judged by them: before, the host
judging the rows (``radtrace db upgrade``) judged them all by its own ``store.node_stale_after_s``, so a node set to
renew its row less often looked ended between two beats, and the migration ran under it. A row that says none (a node
still running the code of 0024 or 0025) is judged by the judging host's setting, as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from radtrace.store.base import Base, UtcDateTime, utc_now
from radtrace.store.engine import Store, is_postgresql, translate_db_error
from radtrace.store.floor import code_version, head_schema

__all__ = [
    "NODE_STALE_S",
    "WATCH_INTERVAL_S",
    "Node",
    "SeenNode",
    "database_now",
    "ended_here",
    "live_nodes",
    "register_node",
    "remove_node",
    "renew_node",
]

#: How often a running process renews its row and compares its code with the database's floor and revision: the
#: default of ``store.node_watch_interval_s``.
WATCH_INTERVAL_S: Final = 10.0
#: A row not renewed for this long is a process that ended (three beats missed): the default of
#: ``store.node_stale_after_s``.
NODE_STALE_S: Final = 3 * WATCH_INTERVAL_S
#: The longest ``store.node_stale_after_s`` a node may say (the setting's bound): rows older than that are not read.
LONGEST_STALE_S: Final = 3600.0


class Node(Base):
    """One radtrace process working on this database now (see the module docstring)."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    role: Mapped[str] = mapped_column(sa.String(32))
    version: Mapped[str] = mapped_column(sa.String(64), doc="radtrace's version")
    schema: Mapped[str] = mapped_column(sa.String(64), doc="the newest migration its code knows")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    watch_interval_s: Mapped[float | None] = mapped_column(sa.Float, doc="how often it renews its row")
    stale_after_s: Mapped[float | None] = mapped_column(sa.Float, doc="not renewed for this long: it has ended")


def database_now(connection: sa.Connection) -> datetime:
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
    #: Its own ``store.node_stale_after_s``; None for a row that says none (written before migration 0026).
    stale_after_s: float | None = None

    def describe(self) -> str:
        limit = f", stale after {self.stale_after_s:.0f} s" if self.stale_after_s is not None else ""
        return (
            f"{self.role} on {self.host} (pid {self.pid}, radtrace {self.version}, schema {self.schema}; seen "
            f"{max(0.0, self.seen_s_ago):.0f} s ago{limit})"
        )


def register_node(
    store: Store, node_id: str, role: str, *, interval_s: float = WATCH_INTERVAL_S, stale_after_s: float = NODE_STALE_S
) -> None:
    """Write this process's row (again: a row of the same id is replaced), saying how often it renews it
    (``interval_s``) and after how long without a renewal it is a process that ended (``stale_after_s``)."""
    with store.session("recording this process in the nodes table") as session:
        connection = session.connection()
        now = database_now(connection)
        session.execute(sa.delete(Node).where(Node.id == node_id))
        session.execute(
            sa.insert(Node).values(
                id=node_id, host=socket.gethostname()[:255], pid=os.getpid(), role=role[:32],
                version=code_version()[:64], schema=head_schema(), started_at=now, seen_at=now,
                watch_interval_s=interval_s, stale_after_s=stale_after_s,
            )
        )  # fmt: skip


def renew_node(
    store: Store, node_id: str, role: str, *, interval_s: float = WATCH_INTERVAL_S, stale_after_s: float = NODE_STALE_S
) -> None:
    """Renew this process's row (``seen_at``), writing it again when it was removed meanwhile
    (:func:`register_node`)."""
    with store.session("renewing this process's row in the nodes table") as session:
        connection = session.connection()
        now = database_now(connection)
        renewed = session.execute(sa.update(Node).where(Node.id == node_id).values(seen_at=now))
    if getattr(renewed, "rowcount", 1) == 0:  # removed meanwhile (a restored database): written again
        register_node(store, node_id, role, interval_s=interval_s, stale_after_s=stale_after_s)


def remove_node(store: Store, node_id: str) -> None:
    """Remove this process's row."""
    with store.session("removing this process from the nodes table") as session:
        session.execute(sa.delete(Node).where(Node.id == node_id))


def ended_here(host: str, pid: int) -> bool:
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
    """The processes the ``nodes`` table says work on the database now (renewed within the limit their row says, else
    within ``stale_after_s``: this host's ``store.node_stale_after_s``; and not a process of this host that has ended),
    but those ``excluding``; none before the floor's migration."""
    left_out = set(excluding)
    try:
        with store.engine.connect() as connection:
            if not sa.inspect(connection).has_table("nodes"):
                return []
            now = database_now(connection)
            says_limits = "stale_after_s" in {column["name"] for column in sa.inspect(connection).get_columns("nodes")}
            limit = Node.stale_after_s if says_limits else sa.null()  # before migration 0026 (db upgrade judging)
            rows = connection.execute(
                sa.select(Node.id, Node.host, Node.pid, Node.role, Node.version, Node.schema,
                          Node.seen_at, limit)
                .where(Node.seen_at >= now - timedelta(seconds=max(stale_after_s, LONGEST_STALE_S)))
                .order_by(Node.host, Node.pid)
            ).all()  # fmt: skip
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the nodes table") from exc
    seen = []
    for node_id, host, pid, role, version, schema, seen_at, own in rows:
        own_limit = None if own is None else float(own)
        ago = (now - seen_at).total_seconds()
        if node_id in left_out or ended_here(host, pid) or ago > (own_limit or stale_after_s):
            continue
        seen.append(SeenNode(node_id, host, pid, role, version, schema, ago, own_limit))
    return seen
