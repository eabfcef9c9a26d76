"""Worker claims: which worker holds a revision, until when, and when a retry is due.

A revision in ``processing`` is claimed by one worker until ``claim_expires_at``; a worker that dies
leaves a claim that expires, and the reconciler rings the doorbell again so another worker takes it
over. ``next_attempt_at`` holds a ``queued`` revision back after a retryable failure (backoff);
``rung_at`` is when the reconciler last rang its doorbell, so it rings once per overdue period.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("revisions", sa.Column("claimed_by", sa.String(255)))
    op.add_column("revisions", sa.Column("claim_expires_at", sa.DateTime(timezone=True)))
    op.add_column("revisions", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.add_column("revisions", sa.Column("rung_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("rung_at")
        batch.drop_column("next_attempt_at")
        batch.drop_column("claim_expires_at")
        batch.drop_column("claimed_by")
