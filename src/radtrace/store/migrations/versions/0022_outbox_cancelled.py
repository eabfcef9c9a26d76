"""Outbox state ``cancelled`` (a draft delivery withdrawn before it was sent), and the rejection notes' titles.

The withdrawal of a draft read from an image the PACS moved to another patient or rejected
(:mod:`radtrace.reporting.dispatch.withdrawals`) cancels the draft's deliveries still pending. They were stored
``failed`` (counted as failed deliveries, alerted on, asked for again by ``radtrace dispatch retry``); now
``cancelled``. The rows already cancelled (``failed``, ``last_error`` starting "withdrawn before it was sent") are
made ``cancelled``. A revision that ended ``failed`` only for them (no other draft delivery failed) is ``reported``
again, its reason saying where its draft was withdrawn before it was sent, as settlement now writes it
(:func:`radtrace.worker.settlement.withdrawn_reason`). A downgrade makes the rows ``failed`` again.

``revisions.rejection_code`` and ``instances.rejection_code``: the title (DCM code, CID 7011) of the IHE IOCM
rejection note that set their ``rejected_at`` (:mod:`radtrace.dicom_listener.rejection_note`); a draft withdrawn for
it mirrors it (:mod:`radtrace.reporting.withdrawal`). Filled from the ``instance_rejection_noted`` events in the log.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_NAME = "ck_outbox_outbox_state"  # radtrace.store.base's convention for the Enum's CHECK constraint
_CANCELLED_PREFIX = "withdrawn before it was sent"  # radtrace.reporting.dispatch.withdrawals.CANCELLED_PREFIX
_WITHDRAWN_PREFIX = "draft withdrawn, not sent to"  # radtrace.worker.settlement.WITHDRAWN_PREFIX
#: radtrace.reporting.dispatch.kinds.NOT_DRAFT_KINDS as of this migration
_NOT_DRAFT_KINDS = (
    "assessment", "assessment-hl7", "assessment-file", "withdrawal", "withdrawal-hl7", "withdrawal-file"
)  # fmt: skip


def _states(*states: str) -> str:
    return "state IN (" + ", ".join(f"'{state}'" for state in states) + ")"


def _check(*states: str) -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), _states(*states))


def upgrade() -> None:
    op.add_column("revisions", sa.Column("rejection_code", sa.String(16), nullable=True))
    op.add_column("instances", sa.Column("rejection_code", sa.String(16), nullable=True))
    _titles()
    _check("pending", "delivered", "failed", "cancelled")
    cancelled = sa.text("UPDATE outbox SET state = 'cancelled' WHERE state = 'failed' AND last_error LIKE :prefix")
    op.execute(cancelled.bindparams(prefix=f"{_CANCELLED_PREFIX}%"))
    bind = op.get_bind()
    outbox = sa.table("outbox", sa.column("revision_id"), sa.column("state"), sa.column("kind"))
    revisions = sa.table("revisions", sa.column("id"), sa.column("state"))
    mine = outbox.c.revision_id == revisions.c.id
    failed_only_for_them = bind.execute(
        sa.select(revisions.c.id).where(
            revisions.c.state == "failed",
            sa.exists().where(mine, outbox.c.state == "cancelled"),
            ~sa.exists().where(mine, outbox.c.state.in_(("failed", "pending")), outbox.c.kind.not_in(_NOT_DRAFT_KINDS)),
        )
    ).all()
    for (revision_id,) in failed_only_for_them:
        rows = bind.execute(
            sa.text("SELECT kind, destination, last_error FROM outbox WHERE revision_id = :id AND state = 'cancelled'"
                    " ORDER BY id").bindparams(id=revision_id)
        ).all()  # fmt: skip
        where = ", ".join(f"{kind} {destination}" for kind, destination, _ in rows)
        why = "; ".join(sorted({(error or "").partition(": ")[2] or (error or "") for _, _, error in rows}))
        bind.execute(
            sa.text("UPDATE revisions SET state = 'reported', reason = :reason, finished_at = NULL WHERE id = :id")
            .bindparams(reason=f"{_WITHDRAWN_PREFIX} {where}: {why}", id=revision_id)
        )  # fmt: skip


def _titles() -> None:
    """Each rejected revision and instance gets the title of the first logged note that named it."""
    bind = op.get_bind()
    notes = bind.execute(
        sa.text(
            "SELECT study_uid, payload FROM audit_events WHERE event_type = 'instance_rejection_noted' ORDER BY seq"
        )
    ).all()
    for study_uid, payload in notes:
        try:
            noted = json.loads(payload)
            code = str(noted["title"]["code"])[:16]
            uids = [str(uid) for uid in noted.get("sop_instance_uids") or []]
            numbers = [int(number) for number in noted.get("revisions") or []]
        except (ValueError, KeyError, TypeError):
            continue
        if uids:
            bind.execute(
                sa.text("UPDATE instances SET rejection_code = :code WHERE rejection_code IS NULL"
                        " AND rejected_at IS NOT NULL AND sop_instance_uid IN :uids")
                .bindparams(sa.bindparam("uids", expanding=True)), {"code": code, "uids": uids}
            )  # fmt: skip
        if numbers and study_uid:
            bind.execute(
                sa.text("UPDATE revisions SET rejection_code = :code WHERE rejection_code IS NULL"
                        " AND rejected_at IS NOT NULL AND number IN :numbers"
                        " AND study_id = (SELECT id FROM studies WHERE study_uid = :study)")
                .bindparams(sa.bindparam("numbers", expanding=True)), {"code": code, "numbers": numbers,
                                                                        "study": study_uid}
            )  # fmt: skip


def downgrade() -> None:
    op.execute("UPDATE outbox SET state = 'failed' WHERE state = 'cancelled'")
    _check("pending", "delivered", "failed")
    # Not batch mode (see 0019): its copy of revisions is refused by the outbox's and the instances' foreign keys
    # once they hold rows ('FOREIGN KEY constraint failed' on DROP TABLE revisions). SQLite 3.35+ drops a column in
    # place. (The outbox's own copy above is kept: no table refers to the outbox.)
    for table in ("instances", "revisions"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN rejection_code")
        else:
            op.drop_column(table, "rejection_code")
