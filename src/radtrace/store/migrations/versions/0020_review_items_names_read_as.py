"""The character-set settings a worklist row's patient header was read under: ``review_items.names_read_as``.

A worklist row keeps the patient's name as read when the row was added. A site that then sets a
``listener.sender_character_sets`` rule (or changes ``listener.assumed_character_set``) had its existing rows keep
the old reading (``اردن`` on the list, ``اردو`` in the draft) until the projection was rebuilt by hand. The console
now reads again the header of each row read under other settings (:func:`radtrace.console.worklist.sync_review_items`).
NULL at the upgrade: rows added before it are read again once.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("review_items", sa.Column("names_read_as", sa.String(16), nullable=True))


def downgrade() -> None:
    # As 0019's: SQLite 3.35+ drops a column in place (batch mode would copy the table).
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE review_items DROP COLUMN names_read_as")
    else:
        op.drop_column("review_items", "names_read_as")
