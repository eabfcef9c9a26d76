"""The review console: accounts, sessions, and the worklist's projection of reported revisions.

``console_users`` (role, argon2 hash, failed-login run, lock), ``console_sessions`` (SHA-256 of each session
cookie, its CSRF token, last use) and ``review_items`` (one row per reported revision, indexed for the
worklist's orders). See :mod:`radtrace.console.schema`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _timestamp(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255)),
        _timestamp("created_at"),
        sa.Column("failed_logins", sa.Integer, nullable=False),
        _timestamp("locked_at", nullable=True),
        _timestamp("last_login_at", nullable=True),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("console_users.id"), nullable=False, index=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255)),
        _timestamp("created_at"),
        _timestamp("last_seen_at"),
        _timestamp("ended_at", nullable=True),
    )
    op.create_table(
        "review_items",
        sa.Column("revision_id", sa.Integer, sa.ForeignKey("revisions.id"), primary_key=True, autoincrement=False),
        sa.Column("study_uid", sa.String(64), nullable=False, index=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        _timestamp("reported_at"),
        sa.Column("superseded", sa.Boolean, nullable=False),
        sa.Column("patient_name", sa.String(255)),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("patient_age", sa.String(8)),
        sa.Column("patient_sex", sa.String(8)),
        sa.Column("accession", sa.String(64)),
        sa.Column("study_date", sa.String(8)),
        sa.Column("view", sa.String(16)),
        sa.Column("findings", sa.String(1024), nullable=False),
        sa.Column("flags", sa.String(255), nullable=False),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("model_name", sa.String(255)),
        sa.Column("sr_sop_instance_uid", sa.String(64)),
        sa.Column("opened_by", sa.String(64)),
        sa.Column("assessed", sa.Boolean, nullable=False),
        sa.Column("decision", sa.String(16)),
        sa.Column("decided_by", sa.String(64)),
        _timestamp("decided_at", nullable=True),
    )
    op.create_index(
        "ix_review_items_queue", "review_items", ["superseded", "assessed", "rank", "reported_at", "revision_id"]
    )
    op.create_index("ix_review_items_all", "review_items", ["superseded", "rank", "reported_at", "revision_id"])
    op.create_index(
        "ix_review_items_flagged",
        "review_items",
        ["superseded", "flagged", "assessed", "rank", "reported_at", "revision_id"],
    )
    op.create_index(
        "ix_review_items_mine", "review_items", ["opened_by", "superseded", "rank", "reported_at", "revision_id"]
    )
    config = op.get_context().config
    app_role = config.attributes.get("app_role") if config is not None else None
    if app_role and op.get_bind().dialect.name == "postgresql":
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", str(app_role)):
            raise ValueError(f"app role name {app_role!r} must be a lower-case SQL identifier")
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON console_users, console_sessions, review_items TO {app_role}")
        op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {app_role}")


def downgrade() -> None:
    op.drop_table("review_items")
    op.drop_table("console_sessions")
    op.drop_table("console_users")
