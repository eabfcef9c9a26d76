"""A node of a multi-host site reads the data directory the listener writes: its spool, drafts and pictures.

With PostgreSQL and Redis, the listener may run on one host and the workers, dispatcher and QA API on others; they
read what the listener spooled (``instances.path``, relative to ``<data_dir>/spool``) and what the workers drafted,
so ``data_dir`` must be the same storage on every host (docs/operations.md, "Shapes of a deployment"). A host whose
``RADTRACE_DATA_DIR`` is a local folder passed every start-up check and then failed each study it took with
"spooled instance … cannot be read: No such file or directory", at its first attempt, while the listener's host
read them. This check says so before the node starts, from what the database records: the newest instances it
spooled, or, before any, the lock file a running listener holds in its data directory.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from radtrace.config import Settings
from radtrace.preflight.check import Check
from radtrace.preflight.database import judged_on_postgresql

if TYPE_CHECKING:
    from radtrace.store.engine import Store

__all__ = ["NEWEST_INSTANCES", "shared_data_check"]

#: How many of the newest spooled instances are looked for: one found is enough (a retention job deletes the old).
NEWEST_INSTANCES = 20
_NAME = "shared data directory"
_REMEDY = (
    "mount the storage the listener's host writes (NFS, a ReadWriteMany volume) at this host's data directory, or "
    "point RADTRACE_DATA_DIR (data_dir) at where it is mounted here; every host of a site reads the same data_dir "
    "(docs/operations.md, Shapes of a deployment)"
)


def shared_data_check(settings: Settings, service: str) -> Check | None:
    """Whether this node's data directory holds what the listener writes, for a worker, dispatcher or QA API on
    PostgreSQL (``None`` elsewhere: the embedded SQLite database is one host's, and ``serve`` and the listener write
    the spool themselves). Failed (exit 2) when none of the newest spooled instances is under this node's spool, or
    when a listener runs on the database and this data directory has no ``listener.lock`` of any listener; ok when
    one is found; ok saying so when there is nothing yet to compare. A database that does not answer is left to the
    database check."""
    if service not in ("worker", "dispatcher", "api"):
        return None
    return judged_on_postgresql(settings, _judge)


def _judge(settings: Settings, store: Store) -> Check:
    from radtrace.store.nodes import live_nodes

    spool = settings.spool_dir.absolute()
    newest = _newest_instances(store)
    if newest:
        if any((spool / path).is_file() for path, _received in newest):
            return Check(_NAME, "ok", f"{spool} holds the newest instances the listener spooled")
        received = max(received for _path, received in newest)
        return Check(_NAME, "failed", f"{spool} holds none of the {len(newest)} newest instances the database says "
                     f"were spooled (the newest received {received:%Y-%m-%d %H:%M:%S} UTC): this host's data "
                     f"directory {settings.data_dir.absolute()} is not the one the listener writes; {_REMEDY}",
                     config_error=True)  # fmt: skip
    listeners = [node for node in live_nodes(store, stale_after_s=settings.store.node_stale_after_s)
                 if node.role == "listener"]  # fmt: skip
    lock = settings.data_dir.absolute() / "listener.lock"
    if listeners and not lock.is_file():
        return Check(_NAME, "failed", f"{'; '.join(node.describe() for node in listeners)} works on this database, "
                     f"and {lock} is not there (a running listener holds it in its data directory): this host's data "
                     f"directory is not the one the listener writes; {_REMEDY}", config_error=True)  # fmt: skip
    if listeners:
        return Check(_NAME, "ok", f"{lock} is there, as a running listener holds it")
    return Check(_NAME, "ok", "nothing received and no listener running yet: checked again at the next start")


def _newest_instances(store: Store) -> list[tuple[Path, datetime]]:
    """The newest spooled instances (path relative to the spool, received time), newest first."""
    from radtrace.store.engine import translate_db_error
    from radtrace.store.models import Instance

    try:
        with store.engine.connect() as connection:
            rows = connection.execute(
                sa.select(Instance.path, Instance.received_at).order_by(Instance.id.desc()).limit(NEWEST_INSTANCES)
            ).all()
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the newest instances") from exc
    return [(Path(path), received) for path, received in rows]
