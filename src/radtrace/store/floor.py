"""Which radtrace may work on this database: the schema floor.

``schema_floor`` names the oldest code that may run against the database: code that knows migration ``min_schema``
(first shipped in radtrace ``min_version``). A migration older code cannot work with raises it (:func:`raise_floor`,
in the migration's own transaction). Every radtrace process refuses to start, and a running one stops taking work
(:class:`radtrace.store.node_watch.NodeWatch`), when its code does not know the floor's migration or the database's
revision (:func:`running_problem`): before, an older dispatcher left running while a newer radtrace migrated the
database failed on the outbox state ``cancelled`` and marked draft withdrawals ``failed``. A migration is refused
while other radtrace processes work on the database (:mod:`radtrace.store.census`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from radtrace.errors import PermanentError
from radtrace.store.base import Base, UtcDateTime, utc_now
from radtrace.store.engine import Store, translate_db_error

__all__ = [
    "CodeTooOldError",
    "Floor",
    "SchemaFloor",
    "code_version",
    "head_schema",
    "known_revisions",
    "raise_floor",
    "read_floor",
    "refuse_too_old",
    "running_problem",
    "too_old_problem",
]


class SchemaFloor(Base):
    """The oldest radtrace that may run against this database (one row, id 1): code that knows migration
    ``min_schema``, first shipped in radtrace ``min_version`` (see the module docstring)."""

    __tablename__ = "schema_floor"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    min_schema: Mapped[str] = mapped_column(sa.String(64), doc="the migration the code must know")
    min_version: Mapped[str] = mapped_column(sa.String(64), doc="the radtrace that raised the floor")
    reason: Mapped[str] = mapped_column(sa.Text, doc="what older code would get wrong")
    set_at: Mapped[datetime] = mapped_column(UtcDateTime)


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every migration this code ships."""
    from alembic.script import ScriptDirectory

    from radtrace.store.migrate import MIGRATIONS

    return frozenset(script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions())


def code_version() -> str:
    """This radtrace's version."""
    import radtrace

    return str(radtrace.__version__)


def head_schema() -> str:
    """The newest migration this code knows."""
    from radtrace.store.migrate import head_revision

    return head_revision()


@dataclass(frozen=True)
class Floor:
    """The oldest radtrace that may run against the database (see the module docstring)."""

    min_schema: str
    min_version: str
    reason: str


def raise_floor(connection: sa.Connection, min_schema: str, reason: str) -> None:
    """Record (in a migration, on its connection) that only code knowing migration ``min_schema`` may run against
    the database from now on, because older code ``reason`` (what it would get wrong, for the refusal's words). The
    version named is the radtrace running the migration."""
    values = {"min_schema": min_schema, "min_version": code_version(), "reason": reason, "set_at": utc_now()}
    if connection.execute(sa.select(SchemaFloor.id).where(SchemaFloor.id == 1)).first() is None:
        connection.execute(sa.insert(SchemaFloor).values(id=1, **values))
    else:
        connection.execute(sa.update(SchemaFloor).where(SchemaFloor.id == 1).values(**values))


def read_floor(connection: sa.Connection) -> Floor | None:
    """The database's floor; None before the floor's migration (no floor recorded)."""
    if not sa.inspect(connection).has_table("schema_floor"):
        return None
    row = connection.execute(
        sa.select(SchemaFloor.min_schema, SchemaFloor.min_version, SchemaFloor.reason).where(SchemaFloor.id == 1)
    ).first()
    return None if row is None else Floor(str(row[0]), str(row[1]), str(row[2]))


def too_old_problem(floor: Floor | None) -> str | None:
    """Why this code must not run against a database with ``floor``; None when it may.

    The floor is judged by migration (``min_schema``), never by version: the version (``pyproject.toml``, read by
    :func:`code_version`) is words for the operator. It is raised only by a release, so a build between two releases
    (or a release that did not raise it) says the same version as the code that raised the floor: then the words name
    the schema and the build, not an upgrade "to" the version this node already runs."""
    if floor is None or floor.min_schema in known_revisions():
        return None
    runs = f"this node runs radtrace {code_version()} (schema {head_schema()})"
    if code_version() == floor.min_version:
        return (
            f"{runs}; the database needs radtrace code that knows schema {floor.min_schema} ({floor.reason}), which "
            f"the radtrace that migrated it ships (it also says it is radtrace {floor.min_version}: the version was "
            "not raised with that migration, so it cannot tell the two apart): install the radtrace build that "
            "migrated the database on this node, then start it again (docs/operations.md, Upgrades and migrations)"
        )
    return (
        f"{runs}; the database needs radtrace >= {floor.min_version} (schema {floor.min_schema} or newer; "
        f"{floor.reason}): upgrade this node to radtrace {floor.min_version} or newer, then start it again "
        "(docs/operations.md, Upgrades and migrations)"
    )


def running_problem(store: Store) -> str | None:
    """Why this code must not work on the database now: its floor names a migration this code does not know
    (:func:`too_old_problem`), or a newer radtrace migrated it
    (:func:`radtrace.store.migrate.newer_schema_problem`); None when it may."""
    from alembic.runtime.migration import MigrationContext

    from radtrace.store.migrate import newer_schema_problem

    try:
        with store.engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
            floor = read_floor(connection)
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the schema revision and floor") from exc
    return too_old_problem(floor) or newer_schema_problem(revision)


class CodeTooOldError(PermanentError):
    """This radtrace may not work on the database (:func:`running_problem`)."""


def refuse_too_old(store: Store) -> None:
    """Raise :class:`CodeTooOldError` with :func:`running_problem`'s words when this code may not work on the
    database: for a command, before it reads or writes (``radtrace.cli.common.open_store``)."""
    if (problem := running_problem(store)) is not None:
        raise CodeTooOldError(problem)
