"""Outbox claims with a holder and a heartbeat: ``outbox.claimed_by`` (the dispatcher sending the row now: program,
host, pid, and what tells its process apart from one in another PID namespace under the same host name: the PID
namespace's inode, the boot id and the process's start time) and ``outbox.heartbeat_at`` (renewed while the send is
in flight). Before, a delivery's claim was only ``next_attempt_at`` pushed a lease ahead and its holder was read from
its ``dispatch_attempted`` event, so the dead-claim release (:mod:`radtrace.worker.dead_claims`) could only ask
whether that pid ran here: a live dispatcher in another PID namespace under the same host name looked dead and its
delivery was sent twice. See :mod:`radtrace.reporting.dispatch.claims`.

Rows claimed before this migration have neither: their lease decides, as before the dead-claim release.

Revision ID: 0014
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0015"  # 0015 was committed first (771cad7): the chain is 0013 -> 0015 -> 0014
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on both stores (no table rebuild on SQLite, no rewrite on PostgreSQL).
    op.add_column("outbox", sa.Column("claimed_by", sa.String(length=512), nullable=True))
    op.add_column("outbox", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("claimed_by")
