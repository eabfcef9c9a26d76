"""``radtrace db upgrade|current``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from radtrace.cli.common import EXIT_FAILED, db_app, err, fail, open_store, out, settings_of
from radtrace.cli.interrupt import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from radtrace.store.engine import Store

#: PostgreSQL: how long the migration may wait for a lock another client holds before it is stopped (--lock-wait).
LOCK_WAIT_S = 30.0


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    app_role: Annotated[
        str | None, typer.Option(help="PostgreSQL: also create this login role, INSERT/SELECT only on the audit log.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Migrate even while other radtrace processes are seen working on it.")
    ] = False,
    lock_wait: Annotated[
        float,
        typer.Option(
            "--lock-wait",
            min=0,
            help="PostgreSQL: seconds the migration may wait for a lock another client holds (a DBA's psql in a "
            "transaction) before it is stopped, nothing changed, naming that client; 0 waits as long as it takes.",
        ),
    ] = LOCK_WAIT_S,
) -> None:
    """Create or migrate the work and audit tables to the latest revision (safe to repeat).

    A database with a schema is not migrated while other radtrace processes work on it (stop every node first)."""
    from radtrace.audit.checkpoints import CheckpointSource
    from radtrace.audit.operations import ChainNotVerifiedError, local_operator
    from radtrace.audit.rebind import rebind_after_upgrade
    from radtrace.cli.audit_commands import report_rebound
    from radtrace.store.engine import is_sqlite
    from radtrace.store.migrate import (
        StartMigrationError,
        backup_sqlite,
        current_revision,
        head_revision,
        one_at_a_time,
        refuse_while_others_work,
        same_schema_backups,
    )

    settings = settings_of(ctx)
    with open_store(settings, create=True) as store, one_at_a_time(store), _one_upgrade_at_a_time(store):
        before = current_revision(store)
        refuse_newer(before)
        if before not in (None, head_revision()) and not force:  # no rolling upgrade (radtrace.store.census)
            try:
                clients = refuse_while_others_work(
                    store, before, head_revision(), stale_after_s=settings.store.node_stale_after_s
                )
            except StartMigrationError as exc:
                fail(exc.reason)
            if clients:  # psql, a monitoring exporter: not radtrace, named so that nobody wonders
                err.print(f"also connected, not radtrace (not waited for): {'; '.join(clients)}", soft_wrap=True,
                          highlight=False, markup=False)  # fmt: skip
        if is_sqlite(store.engine) and before not in (None, head_revision()):  # as serve keeps one at start
            older = same_schema_backups(Path(str(store.engine.url.database)), before)
            try:
                kept = backup_sqlite(store, before)
            except StartMigrationError as exc:
                fail(exc.reason)
            out.print(f"kept a copy of the database as it was (revision {before}) in {kept}", soft_wrap=True)
            if replaced := [str(path) for path in older if path != kept]:
                out.print(f"it replaces an older copy of schema {before} (a run that did not finish kept it, or it "
                          f"was restored from it): {', '.join(replaced)}", soft_wrap=True)  # fmt: skip
        with err.status("migrating the database …"):
            revision = _migrate(store, before, head_revision(), app_role=app_role, lock_wait_s=lock_wait)
        outcome = f"upgraded from {before}" if before not in (None, revision) else "already; nothing to do"
        out.print(f"database at revision {revision} ({'created' if before is None else outcome})")
        try:
            done = rebind_after_upgrade(store, local_operator(), CheckpointSource.for_settings(settings))
        except ChainNotVerifiedError as exc:
            fail(f"tokens and accounts from before this version are not recorded in the audit log ({exc.reason}); "
                 "until 'radtrace audit rebind' records them they are refused")  # fmt: skip
    report_rebound(done)  # tokens and accounts from before credentials were bound to the audit log


@contextlib.contextmanager
def _one_upgrade_at_a_time(store: Store) -> Iterator[None]:
    """PostgreSQL: hold :data:`radtrace.store.census.UPGRADE_LOCK` (a session's advisory lock, released when this
    ends or its connection goes) from before the census to the end, so that several ``radtrace db upgrade`` started
    together (systemd's radtrace-db-upgrade.service on each host, a Kubernetes Job beside it) take turns: the first
    migrates, the next find it done. Before, each counted the others' connections as radtrace at work and all three
    refused, leaving the database unmigrated. The census leaves out those waiting (radtrace.store.census), and, while
    this process holds the turn, every connection named as another ``db upgrade``'s: this one's are named so from here
    on (census.name_as_upgrade), before their first statement, so that one just connected, not yet asking for its
    turn, is not taken for a radtrace at work either."""
    import sqlalchemy as sa

    from radtrace.store.census import UPGRADE_LOCK, name_as_upgrade
    from radtrace.store.engine import is_postgresql, translate_db_error

    if not is_postgresql(store.engine):
        yield  # SQLite: one_at_a_time's file lock
        return
    name_as_upgrade(store)
    keys = {"first": UPGRADE_LOCK[0], "second": UPGRADE_LOCK[1]}
    try:
        with store.engine.connect() as connection:
            if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:first, :second)"), keys).scalar_one():
                err.print("another 'radtrace db upgrade' is migrating this database: waiting for it to end",
                          highlight=False, markup=False)  # fmt: skip
                connection.execute(sa.text("SELECT pg_advisory_lock(:first, :second)"), keys)
            connection.commit()  # a session's lock: held until unlocked, or this connection ends
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:first, :second)"), keys)
                connection.commit()
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "taking the turn to migrate the database") from exc


def _migrate(store: Store, before: str | None, head: str, *, app_role: str | None, lock_wait_s: float) -> str:
    """:func:`radtrace.store.migrate.upgrade`, and when it does not end (the database went away, a lock held past
    ``lock_wait_s``, SIGTERM or Ctrl-C, an error) exit 1 saying so and where the database is now
    (:func:`_where_now`): before, a restart of PostgreSQL said only "database unavailable while migrating", and
    SIGTERM or Ctrl-C nothing at all, so hospital IT could not tell whether the schema was half done."""
    from radtrace.errors import RadtraceError
    from radtrace.store.census import LockWatch
    from radtrace.store.migrate import upgrade

    end_it = "end that transaction, or SELECT pg_terminate_backend(<pid>) as a superuser"

    def waiting(holders: list[str]) -> None:
        limit = f"stopped, nothing changed, after {lock_wait_s:.0f} s" if lock_wait_s else "waiting as long as it takes"
        err.print(f"the migration waits for a lock held by {'; '.join(holders)} ({limit}: {end_it})", soft_wrap=True,
                  highlight=False, markup=False)  # fmt: skip

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # systemd's stop: a KeyboardInterrupt too
    watch = LockWatch(store, limit_s=lock_wait_s, on_wait=waiting)
    code = EXIT_FAILED
    try:
        with watch:
            return upgrade(store, app_role=app_role)
    except KeyboardInterrupt:
        cause, code = "it was interrupted (SIGTERM or Ctrl-C)", EXIT_INTERRUPTED
    except RadtraceError as exc:
        cause = str(exc)
        if watch.holders:
            cause = (f"it waited {lock_wait_s:.0f} s for a lock held by {'; '.join(watch.holders)} and was stopped "
                     f"(--lock-wait; {end_it})")  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
    where = _where_now(store, before, head)
    fail(f"the migration from {_schema(before)} to schema {head} did not finish: {cause}; {where}", code)


def _schema(revision: str | None) -> str:
    return "an empty database" if revision is None else f"schema {revision}"


def _where_now(store: Store, before: str | None, head: str) -> str:
    """Where the database is after a migration that did not finish, in words: every migration runs in one
    transaction (radtrace.store.migrate.upgrade), which PostgreSQL and SQLite undo whole when it is cut short."""
    from radtrace.errors import RadtraceError
    from radtrace.store.migrate import current_revision

    again = "run 'radtrace db upgrade' again once the cause is gone"
    try:
        now = current_revision(store)
    except RadtraceError as exc:
        return (f"its schema cannot be read now ({exc}): the migration runs in one transaction, which the database "
                f"undoes whole when it is cut short, so the database is at {_schema(before)}, untouched, or at schema "
                f"{head} if it had committed, never in between; {again}: it migrates, or says it is done")  # fmt: skip
    if now == before:
        return f"the database is at {_schema(before)}, untouched (the migration runs in one transaction); {again}"
    if now == head:
        return f"the migration had committed: the database is at schema {head}; run 'radtrace db upgrade' again"
    return f"the database is at schema {now}; {again}"  # pragma: no cover - one transaction: before or head


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the database's migration revision and whether it is the newest (exit 1 if not)."""
    from radtrace.store.migrate import current_revision, head_revision

    with open_store(settings_of(ctx)) as store:
        current = current_revision(store)
    head = head_revision()
    out.print(f"database revision: {current or 'none (empty database)'}; newest: {head}")
    refuse_newer(current)
    if current != head:
        fail("the database is not at the newest revision; run 'radtrace db upgrade'")


def refuse_newer(revision: str | None) -> None:
    """Exit 1 when a newer radtrace migrated the database (:func:`radtrace.store.migrate.newer_schema_problem`)."""
    from radtrace.store.migrate import newer_schema_problem

    if (problem := newer_schema_problem(revision)) is not None:
        fail(problem)
