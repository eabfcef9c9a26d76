"""Input mix: each instance keeps its manufacturer, model, photometric interpretation and pixel spacing.

QA watches the input mix for drift (a new detector, another vendor's processing, a changed pixel spacing), and the
dashboard counts these per day. They are read from the header at receive time, as modality and body part are; the
instances received before this revision have none (NULL). The dashboard's input-mix index gets the new columns so
the count stays an index-only scan.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_OLD_MIX = ["received_at", "transfer_syntax_uid", "modality", "body_part", "sop_class_uid", "calling_ae"]
_NEW_COLUMNS = ["manufacturer", "manufacturer_model", "photometric", "pixel_spacing_mm"]


def upgrade() -> None:
    op.add_column("instances", sa.Column("manufacturer", sa.String(length=64), nullable=True))
    op.add_column("instances", sa.Column("manufacturer_model", sa.String(length=64), nullable=True))
    op.add_column("instances", sa.Column("photometric", sa.String(length=16), nullable=True))
    op.add_column("instances", sa.Column("pixel_spacing_mm", sa.Float(), nullable=True))
    op.drop_index("ix_instances_received_mix", table_name="instances")
    op.create_index("ix_instances_received_mix", "instances", _OLD_MIX + _NEW_COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_instances_received_mix", table_name="instances")
    op.create_index("ix_instances_received_mix", "instances", _OLD_MIX)
    with op.batch_alter_table("instances") as batch:
        for column in reversed(_NEW_COLUMNS):
            batch.drop_column(column)
