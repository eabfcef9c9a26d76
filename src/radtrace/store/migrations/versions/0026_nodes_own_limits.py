"""Each node's own watch interval and staleness limit in its row: ``nodes.watch_interval_s``,
``nodes.stale_after_s``.

``radtrace db upgrade`` judged every row by its own host's ``store.node_stale_after_s``: a node set to renew its row
less often (a slow database) looked ended to it between two beats, and the migration ran under it. A row now says the
settings its process runs with, and is judged by them (:func:`radtrace.store.nodes.live_nodes`). NULL at the
upgrade: a row of a node still running older code is judged by the judging host's setting, as before, until that
node is restarted on this version.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("watch_interval_s", sa.Float(), nullable=True))
    op.add_column("nodes", sa.Column("stale_after_s", sa.Float(), nullable=True))


def downgrade() -> None:
    # As 0025's: SQLite 3.35+ drops a column in place (batch mode would copy the table).
    for column in ("stale_after_s", "watch_interval_s"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE nodes DROP COLUMN {column}")
        else:
            op.drop_column("nodes", column)
