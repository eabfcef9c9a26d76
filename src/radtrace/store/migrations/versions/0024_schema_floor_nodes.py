"""The oldest radtrace that may run against the database (``schema_floor``), and the radtrace processes working on it
now (``nodes``).

A rolling upgrade to 0022 left an older dispatcher running on the new schema: it failed on the outbox state
``cancelled`` and marked draft withdrawals ``failed`` ("no sender for outbox kind 'withdrawal-hl7'"). From here on
every radtrace process compares its code with ``schema_floor`` at start and while it runs, and stops taking work when
it is too old (:mod:`radtrace.store.floor`); each process is a row of ``nodes`` while it runs, and a migration is
refused while another is seen (``radtrace db upgrade --force`` overrides). The floor starts at 0022: code that does
not know the outbox state ``cancelled`` must not run here. A later migration older code cannot work with raises it
(:func:`radtrace.store.floor.raise_floor`).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from radtrace.store.floor import raise_floor

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_floor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("min_schema", sa.String(64), nullable=False),
        sa.Column("min_version", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_floor")),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("schema", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
    )
    op.create_index(op.f("ix_nodes_seen_at"), "nodes", ["seen_at"])
    raise_floor(op.get_bind(), "0022", "an older radtrace fails on the outbox state 'cancelled' and on withdrawals")


def downgrade() -> None:
    op.drop_index(op.f("ix_nodes_seen_at"), table_name="nodes")
    op.drop_table("nodes")
    op.drop_table("schema_floor")
