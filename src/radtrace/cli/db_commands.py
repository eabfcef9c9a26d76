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
) -> None:
    """Create or migrate the work and audit tables to the latest revision (safe to repeat)."""
    from radtrace.store.migrate import upgrade

    with open_store(settings_of(ctx), create=True) as store, err.status("migrating the database …"):
        revision = upgrade(store, app_role=app_role)
    out.print(f"database at revision {revision}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the database's migration revision and whether it is the newest (exit 1 if not)."""
    from radtrace.store.migrate import current_revision, head_revision

    with open_store(settings_of(ctx)) as store:
        current = current_revision(store)
    head = head_revision()
    out.print(f"database revision: {current or 'none (empty database)'}; newest: {head}")
    if current != head:
        fail("the database is not at the newest revision; run 'radtrace db upgrade'")
