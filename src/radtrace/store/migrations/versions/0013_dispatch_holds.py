"""Destinations on hold: ``dispatch_holds``, one row per PACS that rejected our association for good (A-ASSOCIATE-RJ
result 1), with the reason, since when and the configuration it was refused under. Its deliveries wait, held, until
``radtrace dispatch retry DESTINATION`` lifts it. In the database so that a restarted worker, and every worker on the
same database, sees it. See :mod:`radtrace.reporting.dispatch.holds`.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatch_holds",
        sa.Column("destination", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("codes", sa.String(length=16), nullable=False),
        sa.Column("held_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("destination", name=op.f("pk_dispatch_holds")),
    )
    config = op.get_context().config
    app_role = config.attributes.get("app_role") if config is not None else None
    if app_role and op.get_bind().dialect.name == "postgresql":
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", str(app_role)):
            raise ValueError(f"app role name {app_role!r} must be a lower-case SQL identifier")
        op.execute(f"GRANT SELECT, INSERT, DELETE ON dispatch_holds TO {app_role}")


def downgrade() -> None:
    op.drop_table("dispatch_holds")
