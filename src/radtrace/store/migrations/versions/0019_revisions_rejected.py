"""Revisions an image of which the PACS rejected (an IHE IOCM rejection note): ``revisions.rejected_at``.

A PACS rejects an image (wrong patient, patient safety, a wrong worklist entry, retention expired) by sending a Key
Object Selection Document titled with a DCM rejection code that names it. The listener marks the revisions that read
it (:mod:`radtrace.dicom_listener.rejection_note`); ``radtrace status``, ``radtrace study show`` and the review
console warn that the draft was read from a rejected image. Empty at the upgrade: a note received before it is kept
as an instance only.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("revisions", sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_revisions_rejected_at", "revisions", ["rejected_at"])  # as 0018's, for the console's sync


def downgrade() -> None:
    op.drop_index("ix_revisions_rejected_at", table_name="revisions")
    # Not batch mode: on SQLite it copies the table and drops the old one, which the outbox's and the instances'
    # foreign keys refuse while they hold rows (PRAGMA foreign_keys is on and cannot change inside the migration's
    # transaction). SQLite 3.35+ drops a column in place.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE revisions DROP COLUMN rejected_at")
    else:
        op.drop_column("revisions", "rejected_at")
