"""QA dashboard: the decisions a host clock step back kept out of ``qa_decisions`` are copied now.

Until the copy counted by sequence alone (a63465c), :func:`radtrace.console.dashboard_agreement.sync_decisions` took
only the assessment events recorded at most a minute before the last copied one's time. After the host clock was
set back further (NTP, a VM restored from a snapshot), every decision recorded until it caught up was passed over,
and the next copy's last seq moved past it: left out of the agreement figures for good. A site that lost decisions
that way keeps the gap after the fix, which copies only what comes after the last seq copied.

Here every ``finding_assessed`` and ``draft_assessed`` event before the last copied seq that is not in
``qa_decisions`` is copied as the console copies one (label, revision, decision, a whole draft's reason code, the
model of the reading it was about), except those the console leaves out on purpose: a payload it cannot read
(radtrace.store.migration_payloads) and, on SQLite, a recorded time that is not one. Then the decisions a later one
on the same study, revision and label replaces are marked, and ``qa_agreement_counts`` is counted again from the
current decisions (as migration 0011 did). Running it again finds nothing missing and changes nothing.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

from radtrace.store.migration_payloads import copyable_assessment_sql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

logger = logging.getLogger(__name__)

#: Events per INSERT (an expanding IN list of seqs).
_BATCH = 500

# Before the last copied seq only: a later event is the console's to copy (sync_decisions takes what follows it).
_MISSING = """
SELECT a.seq FROM audit_events a
WHERE a.event_type IN ('finding_assessed', 'draft_assessed')
  AND a.seq < (SELECT MAX(seq) FROM qa_decisions)
  AND NOT EXISTS (SELECT 1 FROM qa_decisions d WHERE d.seq = a.seq)
  AND {readable_time} AND {copyable}
ORDER BY a.seq
"""
# radtrace.qa.recorded_times.readable_time when this was written: a time as the SQLite driver writes one.
_READABLE_TIME_SQLITE = """(typeof(a.recorded_at) = 'text'
  AND date(substr(a.recorded_at, 1, 10), '+0 days') = substr(a.recorded_at, 1, 10)
  AND substr(a.recorded_at, 11, 1) = ' '
  AND time(substr(a.recorded_at, 12, 8), '+0 seconds') = substr(a.recorded_at, 12, 8)
  AND (length(a.recorded_at) = 19
       OR (length(a.recorded_at) = 26 AND substr(a.recorded_at, 20) GLOB '.[0-9][0-9][0-9][0-9][0-9][0-9]')))"""

_COPY = """
INSERT INTO qa_decisions (seq, recorded_at, study_uid, revision, label, decision, reason_code, superseded)
SELECT seq, recorded_at, COALESCE(study_uid, ''), CAST(COALESCE({revision}, '0') AS INTEGER),
       CASE WHEN event_type = 'draft_assessed' THEN '' ELSE SUBSTR(COALESCE({finding}, ''), 1, 255) END,
       SUBSTR(COALESCE({decision}, ''), 1, 16),
       CASE WHEN event_type = 'draft_assessed' THEN SUBSTR({reason_code}, 1, 16) END,
       FALSE
FROM audit_events WHERE seq IN :seqs
ON CONFLICT (seq) DO NOTHING
"""
_FIELDS_SQLITE = {name: f"json_extract(payload, '$.{name}')" for name in ("revision", "finding", "decision",
                                                                          "reason_code")}  # fmt: skip
_FIELDS_POSTGRESQL = {name: f"(payload::json ->> '{name}')" for name in ("revision", "finding", "decision",
                                                                         "reason_code")}  # fmt: skip

# The model of the reading each copied decision was about, as migration 0015 and the console give it.
_MODELS = """
UPDATE qa_decisions SET (model_name, model_version) = (
    SELECT reading.model_name, reading.model_version FROM audit_events reading
    WHERE reading.study_uid = qa_decisions.study_uid AND reading.event_type = 'inference_completed'
      AND reading.seq < qa_decisions.seq
      AND CAST(CASE WHEN {copyable} THEN {revision} END AS INTEGER) = qa_decisions.revision
    ORDER BY reading.seq DESC LIMIT 1)
WHERE seq IN :seqs
"""
_READING_REVISION_SQLITE = "json_extract(reading.payload, '$.revision')"
_READING_REVISION_POSTGRESQL = "(reading.payload::json ->> 'revision')"

# A decision copied can only add a later decision to a key (never take one away): marking is enough.
_SUPERSEDE = """
UPDATE qa_decisions SET superseded = TRUE
WHERE superseded = FALSE
  AND seq < (SELECT MAX(later.seq) FROM qa_decisions later WHERE later.study_uid = qa_decisions.study_uid
             AND later.revision = qa_decisions.revision AND later.label = qa_decisions.label)
"""
_RECOUNT = """
INSERT INTO qa_agreement_counts (label, decision, reason_code, count)
SELECT label, decision, COALESCE(reason_code, ''), COUNT(*) FROM qa_decisions WHERE superseded = FALSE
GROUP BY label, decision, COALESCE(reason_code, '')
"""


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    readable_time = "TRUE" if postgresql else _READABLE_TIME_SQLITE  # timestamptz holds nothing else
    missing = [
        int(seq)
        for (seq,) in bind.execute(
            sa.text(_MISSING.format(readable_time=readable_time, copyable=copyable_assessment_sql("a.payload")))
        )
    ]
    if not missing:
        return
    fields = _FIELDS_POSTGRESQL if postgresql else _FIELDS_SQLITE
    copy = sa.text(_COPY.format(**fields)).bindparams(sa.bindparam("seqs", expanding=True))
    models = sa.text(
        _MODELS.format(
            copyable=copyable_assessment_sql("reading.payload"),
            revision=_READING_REVISION_POSTGRESQL if postgresql else _READING_REVISION_SQLITE,
        )
    ).bindparams(sa.bindparam("seqs", expanding=True))
    for start in range(0, len(missing), _BATCH):
        batch = missing[start : start + _BATCH]
        bind.execute(copy, {"seqs": batch})
        bind.execute(models, {"seqs": batch})
    op.execute(_SUPERSEDE)
    op.execute("DELETE FROM qa_agreement_counts")
    op.execute(_RECOUNT)
    logger.warning(
        "%d radiologist decision(s) were missing from the QA dashboard's agreement figures (passed over after a "
        "host clock step back, by the copy before it counted by sequence); they are copied and counted now",
        len(missing),
    )


def downgrade() -> None:
    """Nothing to undo: the decisions copied are what the console copies (they stay, and stay counted)."""
