"""QA dashboard: indexes for its per-day aggregates, and ``qa_decisions``, a projection of the assessment events.

The dashboard (radtrace.console.dashboard) counts a million audit events by UTC day in SQL. Readings per day by label
and model become an index-only scan of ``ix_audit_events_type_time``; revisions, images, deliveries and worklist rows
get an index on the time each figure is dated by. ``qa_decisions`` holds each ``finding_assessed`` and
``draft_assessed`` event's label, revision and decision (from its payload), backfilled here and kept in step by the
dashboard, so agreement per label is counted without decoding payloads.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from radtrace.store.migration_payloads import copyable_assessment_sql, log_rows_left_out

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_audit_events_type_time", "audit_events", ["event_type", "recorded_at", "labels", "model_name",
                                                   "model_version"]),
    ("ix_revisions_opened_at", "revisions", ["opened_at"]),
    ("ix_revisions_reported_at", "revisions", ["reported_at"]),
    ("ix_revisions_state_finished_at", "revisions", ["state", "finished_at"]),
    ("ix_instances_revision_received", "instances", ["revision_id", "received_at"]),
    ("ix_instances_received_mix", "instances", ["received_at", "transfer_syntax_uid", "modality", "body_part",
                                                "sop_class_uid", "calling_ae"]),
    ("ix_outbox_revision_delivered", "outbox", ["revision_id", "kind", "state", "delivered_at"]),
    ("ix_outbox_kind_delivered", "outbox", ["kind", "state", "delivered_at", "revision_id"]),
    ("ix_review_items_reported_at", "review_items", ["reported_at", "view", "flags"]),
)  # fmt: skip


# The assessment events recorded so far (later ones are copied by radtrace.console.dashboard_agreement.sync_decisions).
# A row whose payload cannot be read is left out, as the console leaves it out (radtrace.store.migration_payloads).
_BACKFILL = """
INSERT INTO qa_decisions (seq, recorded_at, study_uid, revision, label, decision)
SELECT seq, recorded_at, COALESCE(study_uid, ''), CAST(COALESCE({revision}, '0') AS INTEGER),
       CASE WHEN event_type = 'draft_assessed' THEN '' ELSE SUBSTR(COALESCE({finding}, ''), 1, 255) END,
       SUBSTR(COALESCE({decision}, ''), 1, 16)
FROM audit_events WHERE event_type IN ('finding_assessed', 'draft_assessed') AND {copyable}
"""
_BACKFILL_SQLITE = _BACKFILL.format(
    revision="json_extract(payload, '$.revision')", finding="json_extract(payload, '$.finding')",
    decision="json_extract(payload, '$.decision')", copyable="{copyable}",
)  # fmt: skip
_BACKFILL_POSTGRESQL = _BACKFILL.format(
    revision="(payload::json ->> 'revision')", finding="(payload::json ->> 'finding')",
    decision="(payload::json ->> 'decision')", copyable="{copyable}",
)  # fmt: skip

# A decision with a later one on the same study, revision and label no longer counts.
_SUPERSEDE = """
UPDATE qa_decisions SET superseded = TRUE
WHERE seq < (SELECT MAX(later.seq) FROM qa_decisions later WHERE later.study_uid = qa_decisions.study_uid
             AND later.revision = qa_decisions.revision AND later.label = qa_decisions.label)
"""


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)
    op.create_table(
        "qa_decisions",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("superseded", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_qa_decisions")),
    )
    op.create_index("ix_qa_decisions_recorded_at", "qa_decisions", ["recorded_at", "superseded", "label", "decision"])
    op.create_index("ix_qa_decisions_key", "qa_decisions", ["study_uid", "revision", "label", "seq"])
    backfill = _BACKFILL_POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _BACKFILL_SQLITE
    op.execute(backfill.format(copyable=copyable_assessment_sql()))
    log_rows_left_out(("finding_assessed", "draft_assessed"))
    op.execute(_SUPERSEDE)


def downgrade() -> None:
    op.drop_index("ix_qa_decisions_key", table_name="qa_decisions")
    op.drop_index("ix_qa_decisions_recorded_at", table_name="qa_decisions")
    op.drop_table("qa_decisions")
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
