"""Listener facts: what each instance is (modality, body part) and the study's description.

The completion step decides from these whether a study goes to the model or is skipped, without
re-reading the spooled files.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("modality", sa.String(16)))
    op.add_column("instances", sa.Column("body_part", sa.String(16)))
    op.add_column("studies", sa.Column("study_description", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("study_description")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("body_part")
        batch.drop_column("modality")
