"""Outbox outcomes: ``outbox.last_outcome`` (how the last recorded attempt ended: ``delivered``, ``refused`` by the
peer, ``failed``) and ``outbox.reached`` (the peer has, or may have, the payload). See
:mod:`radtrace.reporting.dispatch.outcomes`.

Before, a draft delivery the peer refused (a C-STORE failure status, an HL7 AR) was told from the wording of its
``last_error`` by the draft withdrawal (:mod:`radtrace.reporting.dispatch.withdrawals`): a reworded message changed
which peers got a withdrawal. The rows already there are filled from that wording, as the withdrawal read it:

* ``last_outcome``: ``delivered`` for a delivered row; ``refused`` for a row attempted whose ``last_error`` (after
  "gave up after N attempts: ") begins with its destination and one of the senders' refusals (a failure status, an
  ACK AE/AR/CE/CR, a SOP class or PDU size not accepted, an association rejected for good); ``failed`` for any other
  row attempted with an error; none otherwise (a cancelled row's error says only that it was withdrawn);
* ``reached``: a delivered row, and every row attempted at least once, except one ``refused`` on its one attempt
  ever (one ``dispatch_attempted`` event for it in the audit log: a retry counts attempts from 0 again), as the
  withdrawal decided it until now.

A downgrade drops both columns (the withdrawal then reads the wording again).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

from __future__ import annotations

import json
import re

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_CHECK = "ck_outbox_delivery_outcome"  # radtrace.store.base's convention for the Enum's CHECK constraint
_OUTCOMES = ("delivered", "refused", "failed")  # radtrace.store.models.DeliveryOutcome
#: How the senders worded a refusal as of this migration (each after the destination and a space)
_REFUSALS = (
    "refused the SR: status 0x",
    "did not store the SR: status 0x",
    "rejected the message (",
    "answered AE",
    "answered CE",
    "does not accept SOP class ",
    "accepts PDUs of at most ",
    "rejected the association (A-ASSOCIATE-RJ 1/",
)
_GAVE_UP = re.compile(r"gave up after \d+ attempts: ")


def _refused(destination: str, error: str) -> bool:
    gave_up = _GAVE_UP.match(error)
    said = error[gave_up.end() :] if gave_up else error
    return said.startswith(tuple(f"{destination} {refusal}" for refusal in _REFUSALS))


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("last_outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reached", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.create_check_constraint(op.f(_CHECK), "last_outcome IN (" + ", ".join(f"'{o}'" for o in _OUTCOMES) + ")")
    op.execute("UPDATE outbox SET last_outcome = 'delivered', reached = TRUE WHERE state = 'delivered'")
    op.execute("UPDATE outbox SET reached = TRUE WHERE state <> 'delivered' AND attempts > 0")
    bind = op.get_bind()
    attempted = bind.execute(
        sa.text(
            "SELECT outbox.id, outbox.destination, outbox.last_error, outbox.attempts, outbox.state, studies.study_uid "
            "FROM outbox JOIN revisions ON revisions.id = outbox.revision_id JOIN studies ON studies.id = "
            "revisions.study_id WHERE outbox.state IN ('pending', 'failed') AND outbox.attempts > 0 "
            "AND outbox.last_error IS NOT NULL ORDER BY outbox.id"
        )
    ).all()
    for outbox_id, destination, error, attempts, _state, study_uid in attempted:
        refused = _refused(str(destination), str(error))
        reached = not (refused and attempts == 1 and _attempts_logged(bind, study_uid, outbox_id) == 1)
        bind.execute(
            sa.text("UPDATE outbox SET last_outcome = :outcome, reached = :reached WHERE id = :id"),
            {"outcome": "refused" if refused else "failed", "reached": reached, "id": outbox_id},
        )


def _attempts_logged(bind: sa.Connection, study_uid: str, outbox_id: int) -> int:
    """How many ``dispatch_attempted`` events the audit log has for the row."""
    payloads = bind.execute(
        sa.text("SELECT payload FROM audit_events WHERE event_type = 'dispatch_attempted' AND study_uid = :study"),
        {"study": study_uid},
    ).scalars()
    count = 0
    for payload in payloads:
        try:
            count += json.loads(payload).get("outbox_id") == outbox_id
        except (ValueError, AttributeError):
            continue
    return count


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(op.f(_CHECK), type_="check")
        batch.drop_column("reached")
        batch.drop_column("last_outcome")
