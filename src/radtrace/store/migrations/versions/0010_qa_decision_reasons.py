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

from radtrace.store.migration_payloads import copyable_assessment_sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Only the rows migration 0008 and the console copy are in qa_decisions, so every payload read here is readable; the
# guard keeps it so for a row edited since (radtrace.store.migration_payloads).
_BACKFILL_SQLITE = """
UPDATE qa_decisions SET reason_code = (
    SELECT SUBSTR(json_extract(payload, '$.reason_code'), 1, 16)
    FROM audit_events WHERE audit_events.seq = qa_decisions.seq AND {copyable})
WHERE label = ''
"""
_BACKFILL_POSTGRESQL = """
UPDATE qa_decisions SET reason_code = SUBSTR(json_extract_path_text(audit_events.payload::json, 'reason_code'), 1, 16)
FROM audit_events WHERE audit_events.seq = qa_decisions.seq AND qa_decisions.label = '' AND {copyable}
"""


def upgrade() -> None:
    op.add_column("qa_decisions", sa.Column("reason_code", sa.String(length=16), nullable=True))
    backfill = _BACKFILL_POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _BACKFILL_SQLITE
    op.execute(backfill.format(copyable=copyable_assessment_sql("audit_events.payload")))
    op.create_index("ix_qa_decisions_current", "qa_decisions", ["superseded", "label", "decision", "reason_code"])


def downgrade() -> None:
    op.drop_index("ix_qa_decisions_current", table_name="qa_decisions")
    with op.batch_alter_table("qa_decisions") as batch:
        batch.drop_column("reason_code")
