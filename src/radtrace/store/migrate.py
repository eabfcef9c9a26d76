"""Schema migrations (Alembic) for the work and audit tables; the same migrations on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from radtrace.store.engine import Store, translate_db_error

__all__ = ["current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection: sa.Connection | None = None, app_role: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["app_role"] = app_role
    return config


def head_revision() -> str:
    """The newest migration this version of radtrace ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no migrations found")
    return head


def current_revision(store: Store) -> str | None:
    """The migration the database is at; ``None`` for an empty database."""
    try:
        with store.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the schema revision") from exc


def upgrade(store: Store, *, app_role: str | None = None) -> str:
    """Migrate the database to the newest schema (idempotent). Returns the revision it is at.

    ``app_role`` (PostgreSQL) also creates a login role with INSERT/SELECT only on the audit table.
    """
    try:
        with store.engine.connect() as connection:
            command.upgrade(_config(connection, app_role), "head")
            connection.commit()
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "migrating the database") from exc
    revision = current_revision(store)
    if revision is None:  # pragma: no cover - upgrade always stamps
        raise RuntimeError("migration left no revision")
    return revision
