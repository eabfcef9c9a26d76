"""Model servers whose reading is held now: ``model_outages``, one row per server with an open outage (down, or
stopped for unparseable output), kept in the transaction that appends the outage's audit entry. Before, every worker
scanned the audit log's ``application_*`` entries for it before each batch (1.4 s a look at 1,000,000 events with
another server's 5,000 outage entries). See :mod:`radtrace.worker.outage_table`.

The table is filled here from the audit log: each server whose latest ``model reading`` entry is
``application_stopped`` gets its row, so an outage or a stop open at the upgrade stays open.

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
import re

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None

_STOPPED_MARK = "model output unparseable for"  # radtrace.worker.output_guard.STOPPED_MARK when this was written


def upgrade() -> None:
    op.create_table(
        "model_outages",
        sa.Column("server", sa.String(length=512), nullable=False),
        sa.Column("opened_seq", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("stop", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("down_since", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("server", name=op.f("pk_model_outages")),
    )
    _fill_from_the_audit_log()
    config = op.get_context().config
    app_role = config.attributes.get("app_role") if config is not None else None
    if app_role and op.get_bind().dialect.name == "postgresql":
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", str(app_role)):
            raise ValueError(f"app role name {app_role!r} must be a lower-case SQL identifier")
        op.execute(f"GRANT SELECT, INSERT, DELETE ON model_outages TO {app_role}")


def _fill_from_the_audit_log() -> None:
    """One row per server whose latest outage entry opens one (newest first: the first seen of a server is its
    latest); the row's time copied from the entry in SQL, so each database keeps its own form of it."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT seq, event_type, payload FROM audit_events WHERE event_type IN ('application_stopped', "
            "'application_started') AND payload LIKE '%\"component\":\"model reading\"%' ORDER BY seq DESC"
        )
    )
    seen: set[str] = set()
    for seq, event_type, text in rows:
        try:
            payload = json.loads(text)
        except ValueError:
            continue
        server = payload.get("server") if isinstance(payload, dict) else None
        if not isinstance(server, str) or server in seen:
            continue
        seen.add(server)
        if event_type != "application_stopped":
            continue
        reason = str(payload.get("reason", ""))
        worker, since = payload.get("worker"), payload.get("since")
        bind.execute(
            sa.text(
                "INSERT INTO model_outages (server, opened_seq, recorded_at, reason, stop, worker, down_since) "
                "SELECT :server, seq, recorded_at, :reason, :stop, :worker, :since FROM audit_events WHERE seq = :seq"
            ),
            {"server": server, "seq": seq, "reason": reason, "stop": _STOPPED_MARK in reason,
             "worker": worker if isinstance(worker, str) else None,
             "since": since if isinstance(since, str) else None},
        )  # fmt: skip


def downgrade() -> None:
    op.drop_table("model_outages")
