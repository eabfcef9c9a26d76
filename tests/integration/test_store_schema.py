"""Migrations: the same schema on SQLite and PostgreSQL, matching the models, idempotent, with an app role."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from radtrace.audit import schema as _audit_schema  # noqa: F401 - registers the audit table
from radtrace.audit import tokens_schema as _token_schema  # noqa: F401 - registers the token table
from radtrace.errors import StoreUnavailableError
from radtrace.store import models as _work_models  # noqa: F401 - registers the work tables
from radtrace.store.base import Base
from radtrace.store.engine import Store
from radtrace.store.migrate import current_revision, head_revision, upgrade

pytestmark = pytest.mark.integration


def test_migrated_schema_matches_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrade_is_idempotent_and_reports_the_revision(store: Store) -> None:
    assert current_revision(store) == head_revision()
    assert upgrade(store) == head_revision()
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"studies", "revisions", "instances", "jobs", "outbox", "audit_events", "api_tokens"} <= tables


def test_a_database_that_is_down_is_a_retryable_error_naming_the_step() -> None:
    store = Store.from_url("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_timeout_s=1)
    with pytest.raises(StoreUnavailableError, match="database unavailable while migrating"):
        upgrade(store)


def test_app_role_may_insert_and_read_audit_rows_but_never_change_them(postgres_url: str) -> None:
    role = "radtrace_app_test"
    store = Store.from_url(postgres_url)
    upgrade(store, app_role=role)
    store.dispose()
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(f"postgresql://{role}@127.0.0.1:5432/{database}") as conn:
        conn.execute(
            "INSERT INTO audit_events (seq, recorded_at, event_type, dicom_event_id, outcome, actor_process,"
            " payload, prev_hash, hash) VALUES (1, now(), 'audit_queried', '110101', 'success', 'p', '{}', %s, %s)",
            ("0" * 64, "a" * 64),
        )
        conn.commit()
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone() == (1,)
        for statement in ("UPDATE audit_events SET outcome = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
