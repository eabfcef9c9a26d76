"""Revisions an image of which the PACS re-sent under another patient or study: ``revisions.reassigned_at``.

A wrong-patient correction at the PACS re-sends the same SOP Instance UID under another Study Instance UID and
Patient ID. The listener keeps the corrected copy with its new study and marks the revisions of the old study that
read the image (:mod:`radtrace.dicom_listener.reassigned`): ``radtrace status``, ``radtrace study show`` and the
review console warn that the old study's draft was read from an image that now belongs elsewhere. Empty at the
upgrade: a correction received before it is in the audit log as ``instance_new_version`` only.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("revisions", sa.Column("reassigned_at", sa.DateTime(timezone=True), nullable=True))
    # the console's sync looks for marked revisions on every page: an index, not a scan of every revision
    op.create_index("ix_revisions_reassigned_at", "revisions", ["reassigned_at"])


def downgrade() -> None:
    op.drop_index("ix_revisions_reassigned_at", table_name="revisions")
    # Not batch mode: on SQLite it copies the table and drops the old one, which the outbox's and the instances'
    # foreign keys refuse while they hold rows (PRAGMA foreign_keys is on and cannot change inside the migration's
    # transaction). SQLite 3.35+ drops a column in place.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE revisions DROP COLUMN reassigned_at")
    else:
        op.drop_column("revisions", "reassigned_at")
