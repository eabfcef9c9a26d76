"""The work database: reachable, at the newest schema (the embedded SQLite one migrated here), and what to correct
when it is not."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from radtrace.config import Settings
from radtrace.errors import RadtraceError
from radtrace.preflight.check import Check

if TYPE_CHECKING:
    from radtrace.store.engine import Store
    from radtrace.store.node_watch import NodeWatch

__all__ = ["database_check", "judged_on_postgresql", "start_node_watch", "store_problem"]


def judged_on_postgresql(settings: Settings, judge: Callable[[Settings, Store], Check]) -> Check | None:
    """``judge``'s check of the work database, for checks of a site of several hosts: ``None`` on SQLite (the
    embedded database is one host's) and when the database does not answer or ``judge`` cannot read it (the database
    check says why)."""
    from radtrace.store.engine import Store, is_sqlite

    try:
        store = Store.from_url(settings.store_url, connect_timeout_s=settings.store.connect_timeout_s)
    except RadtraceError:
        return None
    try:
        if is_sqlite(store.engine):
            return None
        return judge(settings, store)
    except RadtraceError:
        return None
    finally:
        store.dispose()


# libpq's words for a store.url that names a database, user, password or host that is not there: a setting to
# correct (exit 2). Anything else that keeps the database from answering (refused, timed out) is a server that is
# down (exit 1, as the README's exit codes say).
_WRONG_URL_WORDS = (
    "does not exist", "password authentication failed", "no password supplied", "failed to resolve host",
    "Name or service not known", "no pg_hba.conf entry", "Peer authentication failed", "invalid dsn",
    "invalid connection option", "unsupported database",
)  # fmt: skip


def store_problem(settings: Settings, exc: RadtraceError) -> tuple[str, bool]:
    """What went wrong reaching the work database, with the setting and its (masked) value, and whether it is the
    setting that must change (True: exit 2) rather than a server to start."""
    from radtrace.config_reference import masked_settings
    from radtrace.errors import ConfigError

    shown = masked_settings(settings)["store"]["effective_url"]
    reason = exc.reason
    if isinstance(exc, ConfigError) or any(words in reason for words in _WRONG_URL_WORDS):
        spelled = (
            " (PostgreSQL is written postgresql+psycopg://USER@HOST:5432/DATABASE)" if "'postgres'" in reason else ""
        )
        return f"{reason}; correct store.url (RADTRACE_STORE__URL), now {shown}{spelled}", True
    return f"{reason}; is the database server running? store.url (RADTRACE_STORE__URL) is {shown}", False


def database_check(settings: Settings) -> Check:
    """The work database is reachable and at the newest schema; the embedded SQLite one is migrated here (an older
    one after a copy is kept beside it: :func:`radtrace.store.migrate.migrate_at_start`). A database a newer radtrace
    migrated is refused on either store, saying so (before: alembic's "Can't locate revision" traceback on SQLite,
    "run 'radtrace db upgrade'" on PostgreSQL, which cannot help), and so is one whose floor this code is below
    (:func:`radtrace.store.floor.running_problem`: "this node runs radtrace X; the database needs >= Y"): a failure
    only this host's upgrade fixes, so exit 2 (``config_error``) and systemd does not restart the service every few
    seconds until then (before: exit 1, a restart loop on every host left on the old version). A database
    with a schema is not migrated while other radtrace processes work on it
    (:func:`radtrace.store.migrate.refuse_while_others_work`)."""
    from radtrace.store.engine import Store, is_sqlite
    from radtrace.store.floor import running_problem
    from radtrace.store.migrate import (
        StartMigrationError,
        current_revision,
        head_revision,
        migrate_at_start,
        newer_schema_problem,
    )

    try:
        store = Store.from_url(settings.store_url, connect_timeout_s=settings.store.connect_timeout_s)
    except RadtraceError as exc:
        return _database_failed(settings, exc)
    try:
        if (too_old := running_problem(store)) is not None:  # before migrating: a floor this code is below
            return Check("database", "failed", too_old, config_error=True)  # exit 2: upgrade this host, no restarts
        if is_sqlite(store.engine):
            migrated = migrate_at_start(store, stale_after_s=settings.store.node_stale_after_s)
            return _after_upgrade(settings, store) or Check(
                "database", "ok", f"SQLite {migrated.describe()} ({store.engine.url.database})"
            )
        current, head = current_revision(store), head_revision()
        if (newer := newer_schema_problem(current)) is not None:
            return Check("database", "failed", newer, config_error=True)
        if current != head:
            return Check("database", "failed", f"schema {current or 'empty'}, newest {head}: run 'radtrace db upgrade'")
        return Check("database", "ok", f"{store.engine.url.get_backend_name()} at schema {current}")
    except StartMigrationError as exc:  # not a server to start nor a store.url to correct: the words say what to do
        return Check("database", "failed", exc.reason)
    except RadtraceError as exc:
        return _database_failed(settings, exc)
    finally:
        store.dispose()


def start_node_watch(settings: Settings, service: str) -> NodeWatch:
    """After the start-up checks passed: this process's row in the database's ``nodes`` table (a migration is refused
    while it runs) and the watch that stops it, as on SIGTERM with one line naming both versions, once a newer
    radtrace has raised the database's floor or migrated it (:class:`radtrace.store.node_watch.NodeWatch`)."""
    from radtrace.store.node_watch import NodeWatch

    return NodeWatch(
        settings.store_url, service, interval_s=settings.store.node_watch_interval_s,
        stale_after_s=settings.store.node_stale_after_s, connect_timeout_s=settings.store.connect_timeout_s,
    ).start()  # fmt: skip


def _after_upgrade(settings: Settings, store: Store) -> Check | None:
    """Record the tokens and accounts from before credentials were bound to the audit log, as ``radtrace db
    upgrade`` does; a warning when one stays refused, None when all is well."""
    from radtrace.audit.checkpoints import CheckpointSource
    from radtrace.audit.operations import ChainNotVerifiedError, local_operator
    from radtrace.audit.rebind import rebind_after_upgrade

    try:
        done = rebind_after_upgrade(store, local_operator(), CheckpointSource.for_settings(settings))
    except ChainNotVerifiedError as exc:
        return Check("database", "warning", f"tokens and accounts from before this version stay refused: {exc.reason}")
    refused = [item.name for item in done if item.outcome == "refused"]
    if refused:
        return Check("database", "warning", f"{len(refused)} token(s) or account(s) are not as the audit log recorded "
                     "them and stay refused: 'radtrace audit rebind' names each")  # fmt: skip
    return None


def _database_failed(settings: Settings, exc: RadtraceError) -> Check:
    detail, wrong_url = store_problem(settings, exc)
    return Check("database", "failed", detail, config_error=wrong_url)
