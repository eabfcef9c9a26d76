"""The settings every node of a site must share, recorded for each node to compare at start: ``site_settings``.

A node whose broker is another Redis database number or key prefix than the rest of the site passed every start-up
check and then never received work (its doorbell rang where no other node listens). The first node to start records
the site's broker here; a node started later with another one is refused, naming both
(:mod:`radtrace.preflight.site_broker`). Older code does not read the table: the floor is not raised.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site_settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(1024), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(300), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_site_settings")),
    )


def downgrade() -> None:
    op.drop_table("site_settings")
