"""The audit table: one append-only, hash-chained row per event.

``seq`` is gap-free (assigned under a lock as head + 1), ``prev_hash`` is the previous row's
``hash``, and ``hash`` is the SHA-256 of the row's canonical form (see :mod:`radtrace.audit.chain`).
Database triggers (created by the migration) refuse UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from radtrace.store.base import Base, UtcDateTime

__all__ = ["AuditEventRow"]


class AuditEventRow(Base):
    """A recorded audit event. Written only by :class:`radtrace.audit.recorder.AuditRecorder`."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # The QA dashboard's readings per day by label and model: an index-only scan (radtrace.console.dashboard).
        sa.Index("ix_audit_events_type_time", "event_type", "recorded_at", "labels", "model_name", "model_version"),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    event_type: Mapped[str] = mapped_column(sa.String(40), index=True)
    dicom_event_id: Mapped[str] = mapped_column(sa.String(16))
    outcome: Mapped[str] = mapped_column(sa.String(16), index=True)
    actor_ae: Mapped[str | None] = mapped_column(sa.String(16))
    actor_host: Mapped[str | None] = mapped_column(sa.String(255))
    actor_user: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    actor_process: Mapped[str] = mapped_column(sa.String(255))
    study_uid: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    accession: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    patient_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    model_name: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    model_version: Mapped[str | None] = mapped_column(sa.String(255))
    labels: Mapped[str | None] = mapped_column(sa.Text, doc="',A,B,' so that LIKE '%,A,%' matches one label")
    payload: Mapped[str] = mapped_column(sa.Text, doc="canonical JSON, exactly as hashed")
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
