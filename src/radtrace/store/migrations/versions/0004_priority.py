"""STAT priority: a revision's priority, and the Requested Procedure Priority each instance was sent with.

``revisions.priority`` is ``routine`` or ``stat`` (decided by the listener's routing rule when the
revision is queued); workers read STAT revisions first. Existing revisions are routine.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(
            sa.Column(
                "priority",
                sa.Enum("routine", "stat", name="revision_priority", native_enum=False, create_constraint=True,
                        length=16),
                nullable=False,
                server_default="routine",
            )
        )  # fmt: skip
    op.add_column("instances", sa.Column("requested_priority", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("requested_priority")
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("priority")
