"""The one writer of the audit log. Nothing else inserts into ``audit_events``.

Appends are serialised so that concurrent writers in many processes never fork the chain: on
PostgreSQL a transaction-scoped advisory lock, on SQLite ``BEGIN IMMEDIATE`` (the database write
lock). Under that lock the recorder reads the head (seq, hash), computes each new row's hash from it
and inserts; the lock is released at commit, so ``seq`` is gap-free and the chain linear.

An event can be recorded in its own transaction, or inside the caller's transaction so the audit
row commits atomically with the work it describes (e.g. an instance row): then the caller's
session must have been opened with ``Store.session(immediate=True)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.chain import GENESIS_HASH, row_hash
from radtrace.audit.events import Actor, AuditEvent
from radtrace.audit.recordable import column_text, payload_json
from radtrace.audit.schema import AuditEventRow
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql, is_sqlite

__all__ = ["AuditRecorder", "RecordedEvent"]

# A fixed 63-bit key for pg_advisory_xact_lock, derived from a name so it is recognisable.
AUDIT_LOCK_KEY: Final = int.from_bytes(hashlib.sha256(b"radtrace.audit_events").digest()[:8], "big") >> 1


_AUDIT_TABLE: Final = cast(sa.Table, AuditEventRow.__table__)
#: Each text column's width (None: unbounded text), which PostgreSQL enforces and SQLite does not.
_COLUMN_WIDTHS: Final[dict[str, int | None]] = {
    column.name: getattr(column.type, "length", None) for column in _AUDIT_TABLE.columns
}


@dataclass(frozen=True)
class RecordedEvent:
    """Where an event landed in the chain."""

    seq: int
    hash: str


class AuditRecorder:
    """Appends :class:`AuditEvent` values to the hash-chained audit table."""

    def __init__(self, store: Store, default_actor: Actor | None = None) -> None:
        self.store = store
        self.default_actor = default_actor or Actor()

    def record(self, event: AuditEvent, *, session: Session | None = None) -> RecordedEvent:
        """Append one event (in its own transaction, or in ``session``'s)."""
        return self.record_many([event], session=session)[0]

    def record_many(self, events: Sequence[AuditEvent], *, session: Session | None = None) -> list[RecordedEvent]:
        """Append several events in order, under one lock and one transaction."""
        if not events:
            return []
        if session is not None:
            return self._append(session, events)
        with self.store.session("recording audit events", immediate=True) as own:
            return self._append(own, events)

    def _append(self, session: Session, events: Sequence[AuditEvent]) -> list[RecordedEvent]:
        self._lock(session)
        table = _AUDIT_TABLE
        latest = sa.select(table.c.seq, table.c.hash).order_by(table.c.seq.desc()).limit(1)
        if is_sqlite(session.get_bind()):
            # SQLite keeps a seq edited into text and sorts it after every number: taken as the head, it made
            # every later append fail (seq + 1), so one edited row stopped all auditing. Verify names that row.
            latest = latest.where(sa.func.typeof(table.c.seq) == "integer")
        head = session.execute(latest).first()
        seq, previous_hash = (head[0], head[1]) if head else (0, GENESIS_HASH)
        rows: list[dict[str, Any]] = []
        for event in events:
            seq += 1
            values = self._row_values(event, seq, previous_hash)
            values["hash"] = previous_hash = row_hash(values)
            rows.append(values)
        session.execute(sa.insert(_AUDIT_TABLE), rows)  # core insert: no ORM unit of work
        return [RecordedEvent(row["seq"], row["hash"]) for row in rows]

    def _lock(self, session: Session) -> None:
        bind = session.get_bind()
        if is_postgresql(bind):
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
        elif is_sqlite(bind) and not session.connection().info.get("radtrace_write_locked"):
            raise RuntimeError("audit events on SQLite must be recorded in a Store.session(immediate=True)")

    def _row_values(self, event: AuditEvent, seq: int, previous_hash: str) -> dict[str, Any]:
        """The row as stored: any text the event carries made storable and bounded (radtrace.audit.recordable)."""
        actor = event.actor
        labels = sorted({label.strip() for label in event.labels if label.strip()})
        text = {
            "actor_ae": actor.ae_title,
            "actor_host": actor.host,
            "actor_user": actor.user,
            "actor_process": actor.process or self.default_actor.process,
            "study_uid": event.study_uid,
            "accession": event.accession,
            "patient_id": event.patient_id,
            "model_name": event.model_name,
            "model_version": event.model_version,
            "labels": f",{','.join(labels)}," if labels else None,
        }
        return {
            "seq": seq,
            "recorded_at": utc_now(),
            "event_type": event.type.value,
            "dicom_event_id": event.type.dicom.code,
            "outcome": event.outcome.value,
            **{name: column_text(value, _COLUMN_WIDTHS[name]) for name, value in text.items()},
            "payload": payload_json(event.payload),
            "prev_hash": previous_hash,
        }
