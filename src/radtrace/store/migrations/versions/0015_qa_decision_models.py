"""QA dashboard: each decision in ``qa_decisions`` keeps the model (name and version) of the reading it was about.

The dashboard's agreement per model version looked the reading up at every request: for each study revision decided
in the window, the last ``inference_completed`` of that study and revision (its payload decoded to match the
revision), once a second model version had ever read anything (1.7 s at 2 versions x 50,000 decisions on
PostgreSQL). The model of the reading is now copied with the decision
(:func:`radtrace.console.dashboard_agreement.sync_decisions`), backfilled here for the decisions copied so far, and
``ix_qa_decisions_recorded_at`` carries the two columns so agreement per model is an index-only count, as agreement
per label is.

Each decision counts under the last reading of its study and revision recorded before it (a reading whose payload
cannot be read, an edited row, is passed over, as radtrace.store.migration_payloads explains).

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from radtrace.store.migration_payloads import copyable_assessment_sql

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

# The guard is evaluated first (CASE), so an unreadable reading's payload is never decoded.
_BACKFILL = """
UPDATE qa_decisions SET (model_name, model_version) = (
    SELECT reading.model_name, reading.model_version FROM audit_events reading
    WHERE reading.study_uid = qa_decisions.study_uid AND reading.event_type = 'inference_completed'
      AND reading.seq < qa_decisions.seq
      AND CAST(CASE WHEN {copyable} THEN {revision} END AS INTEGER) = qa_decisions.revision
    ORDER BY reading.seq DESC LIMIT 1)
"""
_REVISION_SQLITE = "json_extract(reading.payload, '$.revision')"
_REVISION_POSTGRESQL = "(reading.payload::json ->> 'revision')"

_OLD_INDEX = ["recorded_at", "superseded", "label", "decision"]
_NEW_INDEX = [*_OLD_INDEX, "model_name", "model_version"]


def upgrade() -> None:
    op.add_column("qa_decisions", sa.Column("model_name", sa.String(length=255), nullable=True))
    op.add_column("qa_decisions", sa.Column("model_version", sa.String(length=255), nullable=True))
    revision_sql = _REVISION_POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _REVISION_SQLITE
    op.execute(_BACKFILL.format(copyable=copyable_assessment_sql("reading.payload"), revision=revision_sql))
    op.drop_index("ix_qa_decisions_recorded_at", table_name="qa_decisions")
    op.create_index("ix_qa_decisions_recorded_at", "qa_decisions", _NEW_INDEX)


def downgrade() -> None:
    op.drop_index("ix_qa_decisions_recorded_at", table_name="qa_decisions")
    op.create_index("ix_qa_decisions_recorded_at", "qa_decisions", _OLD_INDEX)
    with op.batch_alter_table("qa_decisions") as batch:
        batch.drop_column("model_version")
        batch.drop_column("model_name")
