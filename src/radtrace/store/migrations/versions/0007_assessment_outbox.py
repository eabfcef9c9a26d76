"""Assessment SRs in the outbox: several documents per revision, kind and destination.

``outbox.document_uid`` names the SOP Instance UID of an assessment SR (the review console makes a new one for each
whole-draft decision, never editing an earlier one); it is empty for a revision's draft deliveries, which keep one
row per (revision, kind, destination). The unique key becomes (revision, kind, destination, document).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_OLD = ["revision_id", "kind", "destination"]
_NEW = [*_OLD, "document_uid"]
#: The name a reflected unnamed unique constraint gets in SQLite batch mode (radtrace.store.base's convention).
_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _unique_name(columns: list[str]) -> str | None:
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints("outbox"):
        if constraint["column_names"] == columns:
            return constraint["name"] or "uq_outbox_" + "_".join(columns)
    return None


def _swap(old: list[str], new: list[str]) -> None:
    name = _unique_name(old)
    with op.batch_alter_table("outbox", naming_convention=_CONVENTION) as batch:
        if name is not None:
            batch.drop_constraint(name, type_="unique")
        batch.create_unique_constraint("uq_outbox_" + "_".join(new), new)


def upgrade() -> None:
    op.add_column("outbox", sa.Column("document_uid", sa.String(64), nullable=False, server_default=""))
    _swap(_OLD, _NEW)


def downgrade() -> None:
    _swap(_NEW, _OLD)
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("document_uid")
