"""Leniency with a record: each instance keeps the header deviations it was accepted with.

``instances.deviations`` is a JSON list of ``{"tag", "keyword", "problem"}`` (never the value), or NULL when the
header had none. Existing instances were accepted under the strict rule and have none.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("deviations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("deviations")
