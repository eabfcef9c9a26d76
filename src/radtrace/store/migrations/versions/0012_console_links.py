"""Console addresses without patient identifiers, shared by every console process: ``console_keys`` (the key of
the study handles, made by the first process that needs it), ``study_handles`` (the Study Instance UID each handle
stands for: study pages and audit timelines) and ``saved_searches`` (an audit search's patient identifiers under
a random token). Before, the timeline handles and search tokens lived in one process's memory: another console
process, or the same one restarted, read them as expired. See :mod:`radtrace.console.links`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_keys",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_console_keys")),
    )
    op.create_table(
        "study_handles",
        sa.Column("handle", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("shown_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("handle", name=op.f("pk_study_handles")),
    )
    op.create_index("ix_study_handles_kind_shown_at", "study_handles", ["kind", "shown_at"])
    op.create_table(
        "saved_searches",
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("filters", sa.Text(), nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_saved_searches")),
    )
    op.create_index("ix_saved_searches_saved_at", "saved_searches", ["saved_at"])
    config = op.get_context().config
    app_role = config.attributes.get("app_role") if config is not None else None
    if app_role and op.get_bind().dialect.name == "postgresql":
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", str(app_role)):
            raise ValueError(f"app role name {app_role!r} must be a lower-case SQL identifier")
        op.execute(f"GRANT SELECT, INSERT ON console_keys TO {app_role}")
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON study_handles, saved_searches TO {app_role}")


def downgrade() -> None:
    op.drop_table("saved_searches")
    op.drop_table("study_handles")
    op.drop_table("console_keys")
