"""``radtrace db upgrade|current``."""

from __future__ import annotations

from typing import Annotated

import typer

from radtrace.cli.common import db_app, err, fail, open_store, out, settings_of


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    app_role: Annotated[
        str | None, typer.Option(help="PostgreSQL: also create this login role, INSERT/SELECT only on the audit log.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Migrate even while other radtrace processes are seen working on it.")
    ] = False,
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
        upgrade,
    )

    settings = settings_of(ctx)
    with open_store(settings, create=True) as store, one_at_a_time(store):  # a service starting on it: its turn
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
            try:
                kept = backup_sqlite(store, before)
            except StartMigrationError as exc:
                fail(exc.reason)
            out.print(f"kept a copy of the database as it was (revision {before}) in {kept}", soft_wrap=True)
        with err.status("migrating the database …"):
            revision = upgrade(store, app_role=app_role)
        outcome = f"upgraded from {before}" if before not in (None, revision) else "already; nothing to do"
        out.print(f"database at revision {revision} ({'created' if before is None else outcome})")
        try:
            done = rebind_after_upgrade(store, local_operator(), CheckpointSource.for_settings(settings))
        except ChainNotVerifiedError as exc:
            fail(f"tokens and accounts from before this version are not recorded in the audit log ({exc.reason}); "
                 "until 'radtrace audit rebind' records them they are refused")  # fmt: skip
    report_rebound(done)  # tokens and accounts from before credentials were bound to the audit log


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
