"""``radtrace status``'s table of the radtrace processes working on the database: the ``nodes`` rows.

Every long-running process (``serve``, ``listen``, each ``worker``, ``api``, a standalone ``audit forward``) is a row
while it runs (:mod:`radtrace.store.nodes`): its host, role, pid, radtrace version and the newest migration its code
knows (the schema it obeys), renewed every ``store.node_watch_interval_s``. Before, ``radtrace status`` did not show
them: at 3 a.m. the question "which hosts run what, and is one gone or on old code" needed SQL. A row not renewed
within its limit is marked STALE (the process ended without removing its row: killed, its host down, or it cannot
reach the database); a row of this host whose pid is no longer running is marked ENDED. The rows hold no patient data.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from rich.table import Table

from radtrace.store.engine import Store, translate_db_error
from radtrace.store.nodes import Node, database_now, ended_here

__all__ = ["NODE_ROWS_SHOWN", "NodeRow", "node_rows", "node_rows_table"]

#: At most this many rows are read (newest renewal first): a site runs tens of processes, not hundreds.
NODE_ROWS_SHOWN = 200


@dataclass(frozen=True)
class NodeRow:
    """One ``nodes`` row as ``radtrace status`` shows it."""

    host: str
    role: str
    pid: int
    version: str
    schema: str
    seen_at: datetime
    seen_s_ago: float
    #: After how long without a renewal the row is a process that ended: its own, else this host's setting.
    stale_after_s: float
    #: ``running``, ``STALE`` (not renewed within stale_after_s) or ``ENDED`` (this host's pid is gone).
    state: str

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {
            "host": self.host, "role": self.role, "pid": self.pid, "version": self.version, "schema": self.schema,
            "seen_at": self.seen_at.isoformat(), "seen_s_ago": round(self.seen_s_ago, 1),
            "stale_after_s": self.stale_after_s, "state": self.state,
        }  # fmt: skip


def node_rows(store: Store, *, stale_after_s: float) -> list[NodeRow]:
    """Every ``nodes`` row (at most :data:`NODE_ROWS_SHOWN`), by host, role and pid, each judged by the limit it says
    (else ``stale_after_s``, this host's ``store.node_stale_after_s``); none before the nodes table's migration."""
    try:
        with store.engine.connect() as connection:
            if not sa.inspect(connection).has_table("nodes"):
                return []
            now = database_now(connection)
            columns = {column["name"] for column in sa.inspect(connection).get_columns("nodes")}
            limit = Node.stale_after_s if "stale_after_s" in columns else sa.null()  # before migration 0026
            newest = (
                sa.select(Node.host, Node.role, Node.pid, Node.version, Node.schema, Node.seen_at, limit)
                .order_by(Node.seen_at.desc())
                .limit(NODE_ROWS_SHOWN)
                .subquery()
            )
            rows = connection.execute(sa.select(newest).order_by(newest.c.host, newest.c.role, newest.c.pid)).all()
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the nodes table") from exc
    found = []
    for host, role, pid, version, schema, seen_at, own in rows:
        own_limit = stale_after_s if own is None else float(own)
        ago = max(0.0, (now - seen_at).total_seconds())
        state = "ENDED" if ended_here(host, pid) else "STALE" if ago > own_limit else "running"
        found.append(NodeRow(host, role, pid, version, schema, seen_at, ago, own_limit, state))
    return found


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min ago"
    return f"{hours // 24} days ago"


def node_rows_table(rows: list[NodeRow]) -> Table:
    """The rows as a table: host, role, pid, last seen (how long ago, and when in UTC), radtrace version, schema,
    state; its caption says what STALE and ENDED mean when a row is either."""
    table = Table(title="radtrace processes (nodes table)", title_justify="left")
    for name in ("host", "role", "pid", "last seen", "radtrace", "schema", "state"):
        table.add_column(name, overflow="fold")  # a host name or schema cut short ("gpu-node-…") names nothing
    here = socket.gethostname()
    for row in rows:
        when = f"{row.seen_at:%H:%M:%S} UTC" if row.seen_s_ago < 20 * 3600 else f"{row.seen_at:%Y-%m-%d %H:%M} UTC"
        seen = f"{_ago(row.seen_s_ago)} ({when})"
        host = f"{row.host} (this host)" if row.host == here else row.host
        table.add_row(host, row.role, str(row.pid), seen, row.version, row.schema, row.state)
    notes = []
    if any(row.state == "STALE" for row in rows):
        notes.append(
            "STALE: not renewed within its limit (store.node_stale_after_s): the process ended without "
            "removing its row (killed, host down) or cannot reach the database; check it on its host"
        )
    if any(row.state == "ENDED" for row in rows):
        notes.append("ENDED: a process of this host that is no longer running (killed); its row is left over")
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table
