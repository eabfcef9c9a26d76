"""The sender a worklist row's patient header was read from: ``review_items.sender``.

A row records a digest of the character-set settings its header was read under (``names_read_as``, migration 0020).
The digest covered every ``listener.sender_character_sets`` rule, so a change to any one rule read every stored row
again (in batches of 20 a sync). A row now records the calling AE title of the image it was read from, and the
digest of that sender's rules only: a rule's change reads again only its sender's rows. NULL at the upgrade: rows
added before it keep being compared with every rule's digest, as before, and record their sender when next read.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("review_items", sa.Column("sender", sa.String(16), nullable=True))


def downgrade() -> None:
    # As 0020's: SQLite 3.35+ drops a column in place (batch mode would copy the table).
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE review_items DROP COLUMN sender")
    else:
        op.drop_column("review_items", "sender")
