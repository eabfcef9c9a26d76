"""Initial schema: work tables, the append-only audit table with its guards, API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

REVISION_STATES = ("receiving", "queued", "processing", "reported", "dispatched", "skipped", "failed")
JOB_STATES = ("running", "succeeded", "retrying", "failed")
OUTBOX_STATES = ("pending", "delivered", "failed")


def _timestamp(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _state(name: str, values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("study_key", sa.String(16), nullable=False, index=True),
        sa.Column("accession", sa.String(64), index=True),
        _timestamp("created_at"),
        _timestamp("last_instance_at", nullable=True),
    )
    op.create_table(
        "revisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("state", _state("revision_state", REVISION_STATES), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        _timestamp("opened_at"),
        _timestamp("queued_at", nullable=True),
        _timestamp("started_at", nullable=True),
        _timestamp("reported_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("updated_at"),
        sa.Column("sr_sop_instance_uid", sa.String(64)),
        sa.UniqueConstraint("study_id", "number"),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.id"), nullable=False, index=True),
        sa.Column("revision_id", sa.Integer, sa.ForeignKey("revisions.id"), nullable=False, index=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64)),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("calling_ae", sa.String(16)),
        _timestamp("received_at"),
        sa.UniqueConstraint("sop_instance_uid", "version"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision_id", sa.Integer, sa.ForeignKey("revisions.id"), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("state", _state("job_state", JOB_STATES), nullable=False),
        sa.Column("worker", sa.String(255)),
        _timestamp("started_at"),
        _timestamp("finished_at", nullable=True),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision_id", sa.Integer, sa.ForeignKey("revisions.id"), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("payload_path", sa.Text, nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("state", _state("outbox_state", OUTBOX_STATES), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("last_error", sa.Text),
        _timestamp("created_at"),
        _timestamp("delivered_at", nullable=True),
        sa.UniqueConstraint("revision_id", "kind", "destination"),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("event_type", sa.String(40), nullable=False, index=True),
        sa.Column("dicom_event_id", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False, index=True),
        sa.Column("actor_ae", sa.String(16)),
        sa.Column("actor_host", sa.String(255)),
        sa.Column("actor_user", sa.String(255), index=True),
        sa.Column("actor_process", sa.String(255), nullable=False),
        sa.Column("study_uid", sa.String(64), index=True),
        sa.Column("accession", sa.String(64), index=True),
        sa.Column("patient_id", sa.String(64), index=True),
        sa.Column("model_name", sa.String(255), index=True),
        sa.Column("model_version", sa.String(255)),
        sa.Column("labels", sa.Text),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        _timestamp("created_at"),
        _timestamp("revoked_at", nullable=True),
    )
    _guard_audit_table()
    config = op.get_context().config
    app_role = config.attributes.get("app_role") if config is not None else None
    if app_role:
        _create_app_role(str(app_role))


def _guard_audit_table() -> None:
    """Refuse UPDATE, DELETE and TRUNCATE on audit_events at the database itself."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION radtrace_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION radtrace_audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION radtrace_audit_append_only()"
        )
        # ENABLE ALWAYS: the triggers fire even with session_replication_role = replica.
        op.execute("ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_append_only")
        op.execute("ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_no_truncate")
        op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC")
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{operation.lower()} BEFORE {operation} ON audit_events "
                f"BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: {operation} refused'); END"
            )


def _create_app_role(role: str) -> None:
    """A PostgreSQL role for the services: INSERT/SELECT on the audit table, read-write on work tables."""
    if op.get_bind().dialect.name != "postgresql":
        return
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise ValueError(f"app role name {role!r} must be a lower-case SQL identifier")
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
        f"THEN CREATE ROLE {role} LOGIN; END IF; END $$"
    )
    op.execute(f"GRANT SELECT, INSERT ON audit_events TO {role}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON studies, revisions, instances, jobs, outbox TO {role}")
    op.execute(f"GRANT SELECT ON api_tokens, alembic_version TO {role}")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")


def downgrade() -> None:
    raise RuntimeError("the initial schema holds the audit log and is never downgraded; restore a backup instead")
