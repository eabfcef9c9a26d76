"""Checks of a flagged revision's marks, and the instances a rejection note named.

``revisions.flags_checked_at/by/reason``: a radiologist checked, on the study page, a revision read from an image the
PACS moved to another patient/study or rejected (:mod:`radtrace.console.flag_checks`); until then its draft cannot be
accepted. ``instances.rejected_at``: the versions an IHE IOCM rejection note named, which no later reading reads
(:mod:`radtrace.worker.read_instances`). Filled from the ``instance_rejection_noted`` events already in the log:
the versions in the study whose copy the note rejected (:func:`_rejected_in`), never another study's copy.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_COLUMNS = (("revisions", "flags_checked_at"), ("revisions", "flags_checked_by"), ("revisions", "flags_checked_reason"),
            ("instances", "rejected_at"))  # fmt: skip


def upgrade() -> None:
    op.add_column("revisions", sa.Column("flags_checked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("revisions", sa.Column("flags_checked_by", sa.String(255), nullable=True))
    op.add_column("revisions", sa.Column("flags_checked_reason", sa.Text(), nullable=True))
    op.add_column("instances", sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=True))
    bind = op.get_bind()
    notes = bind.execute(
        sa.text(
            "SELECT recorded_at, study_uid, payload FROM audit_events WHERE event_type = 'instance_rejection_noted'"
        )
    ).all()
    for recorded_at, flagged_study, payload in notes:
        try:
            noted = json.loads(payload)
            uids = noted.get("sop_instance_uids") or []
            note_study = noted.get("rejection_note_study_uid")
        except (ValueError, AttributeError):
            continue
        for uid in uids:
            bind.execute(
                sa.text(
                    "UPDATE instances SET rejected_at = :at WHERE sop_instance_uid = :uid AND rejected_at IS NULL "
                    "AND study_id IN (SELECT id FROM studies WHERE study_uid = :study)"
                ),
                {"at": recorded_at, "uid": str(uid), "study": _rejected_in(bind, str(uid), note_study, flagged_study)},
            )


def _rejected_in(bind: sa.Connection, uid: str, note_study: object, flagged_study: str | None) -> str | None:
    """The study whose copy of ``uid`` a logged note rejected: the note's own study where it holds the instance (an
    IOCM rejection note is filed in the rejected instances' study), else the study the event flagged. Before 0021
    the listener flagged the newest copy anywhere: for an image the PACS had moved to another study, the note
    rejecting the old study's copy named the new study, and every version was marked; the new study's own copy
    must stay read."""
    if isinstance(note_study, str) and note_study:
        held = bind.execute(
            sa.text(
                "SELECT 1 FROM instances JOIN studies ON studies.id = instances.study_id "
                "WHERE studies.study_uid = :study AND instances.sop_instance_uid = :uid"
            ),
            {"study": note_study, "uid": uid},
        ).first()
        if held is not None:
            return note_study
    return flagged_study


def downgrade() -> None:
    # Not batch mode (see 0019): SQLite 3.35+ drops a column in place.
    for table, column in reversed(_COLUMNS):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)
