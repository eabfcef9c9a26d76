"""``model_outages``: one row per model server whose reading is held now, down or stopped for unparseable output.

The audit log stays the record: each outage is an ``application_stopped`` entry when it opens and an
``application_started`` when it ends (:mod:`radtrace.worker.outage`). This table is where the *current* state is
looked up: the row is inserted in the transaction that appends the opening entry, under the audit log's append lock,
and deleted in the one that appends the closing entry, so a transaction cut short (kill -9, a database that goes away)
leaves both as they were, and the row and the log never disagree.

Before (migration 0016) the state was found by scanning the audit log's ``application_*`` entries newest first for
the server's latest, parsing each payload; every worker did so before each batch and at each probe. With another
model server's 5,000 outage entries among 1,000,000 audit events it took 1.4 s a look (``bench/model_stop_state.py``);
a primary-key lookup now. Migration 0016 fills the table from the audit log once.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from radtrace.store.base import Base, UtcDateTime

__all__ = ["ModelOutageRow"]


class ModelOutageRow(Base):
    """A model server's open outage: the audit entry that opened it and what it said."""

    __tablename__ = "model_outages"

    server: Mapped[str] = mapped_column(sa.String(512), primary_key=True, doc="as the audit payload names it")
    opened_seq: Mapped[int] = mapped_column(sa.BigInteger, doc="the application_stopped entry's seq")
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, doc="that entry's recorded_at")
    reason: Mapped[str] = mapped_column(sa.Text, doc="that entry's reason")
    stop: Mapped[bool] = mapped_column(doc="a stop for unparseable output (radtrace model resume lifts it)")
    worker: Mapped[str | None] = mapped_column(sa.String(255), doc="who told it")
    down_since: Mapped[str | None] = mapped_column(sa.String(64), doc="the entry's since: when its worker saw it")
