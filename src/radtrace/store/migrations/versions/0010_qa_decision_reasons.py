"""Agreement page: each whole-draft decision keeps its reason code in ``qa_decisions``, and one covering index
serves the page's counts.

The agreement page counts the current decisions per (label, decision) and the current whole drafts' reason codes.
Before, the reasons were read by joining every current whole-draft decision to its audit row and decoding the
payload, and the counts scanned the time index and grouped in a temporary B-tree: 1 to 6 s for the first request of
a process at a million decisions on SQLite. With the reason code copied here (backfilled from the audit rows;
:func:`radtrace.console.dashboard_agreement.sync_decisions` copies it for later ones) and
``ix_qa_decisions_current`` on (superseded, label, decision, reason_code), both counts are an index-only range
scan in index order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# A payload edited into something that is not JSON (SQLite lets the row be read as text) gets no reason code here
# rather than stopping the upgrade.
_BACKFILL_SQLITE = """
UPDATE qa_decisions SET reason_code = (
    SELECT SUBSTR(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.reason_code') END, 1, 16)
    FROM audit_events WHERE audit_events.seq = qa_decisions.seq)
WHERE label = ''
"""
_BACKFILL_POSTGRESQL = """
UPDATE qa_decisions SET reason_code = SUBSTR(json_extract_path_text(audit_events.payload::json, 'reason_code'), 1, 16)
FROM audit_events WHERE audit_events.seq = qa_decisions.seq AND qa_decisions.label = ''
"""


def upgrade() -> None:
    op.add_column("qa_decisions", sa.Column("reason_code", sa.String(length=16), nullable=True))
    op.execute(_BACKFILL_POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _BACKFILL_SQLITE)
    op.create_index("ix_qa_decisions_current", "qa_decisions", ["superseded", "label", "decision", "reason_code"])


def downgrade() -> None:
    op.drop_index("ix_qa_decisions_current", table_name="qa_decisions")
    with op.batch_alter_table("qa_decisions") as batch:
        batch.drop_column("reason_code")
