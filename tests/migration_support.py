"""A store at an older migration, for the tests of an upgrade: the schema an older radtrace left, filled by the test,
then upgraded (``radtrace.store.migrate.upgrade``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import command

from radtrace.store.engine import Store
from radtrace.store.migrate import _config


@contextmanager
def store_at_migration(url: str, revision: str) -> Iterator[Store]:
    """The database at ``url`` migrated up to ``revision`` alone (not to head); disposed at the end."""
    store = Store.from_url(url)
    with store.engine.connect() as connection:
        command.upgrade(_config(connection), revision)
        connection.commit()
    yield store
    store.dispose()


def run_sql(url: str, statement: str) -> list[tuple[object, ...]]:
    """``statement`` run on the database at ``url`` in a transaction of its own (an engine of its own, as another
    process would: an older or newer radtrace): its rows, or none."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def schema_revision(url: str) -> str | None:
    """The Alembic revision the database at ``url`` records (``alembic_version``; None: none recorded), read with an
    engine of its own."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
