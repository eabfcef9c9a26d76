"""Alembic environment: runs radtrace's migrations on the connection radtrace.store.migrate provides."""

from __future__ import annotations

from alembic import context

from radtrace.audit import schema as _audit_table  # noqa: F401
from radtrace.audit import tokens_schema as _token_table  # noqa: F401
from radtrace.console import schema as _console_tables  # noqa: F401
from radtrace.reporting.dispatch import holds as _dispatch_holds  # noqa: F401

# Importing the table modules registers them on Base.metadata (for autogenerate comparisons).
from radtrace.store import floor as _floor_table  # noqa: F401
from radtrace.store import models as _work_tables  # noqa: F401
from radtrace.store import nodes as _nodes_table  # noqa: F401
from radtrace.store import site_settings as _site_settings_table  # noqa: F401
from radtrace.store.base import Base
from radtrace.worker import outage_table as _outage_table  # noqa: F401

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through radtrace.store.migrate (radtrace db upgrade), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
