"""What ``radtrace study show`` prints: one study's revisions with their states, reasons and deliveries (held, in
flight under a claim, or the outbox row's state)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from radtrace.store.engine import Store
from radtrace.store.models import DeliveryOutcome, OutboxMessage, OutboxState, RevisionState, Study
from radtrace.worker.liveness import in_flight

__all__ = ["RevisionDetail", "StudyDetail", "study_detail"]


@dataclass(frozen=True)
class RevisionDetail:
    """One revision of a study as ``radtrace study show`` prints it."""

    number: int
    state: RevisionState
    reason: str | None
    attempts: int
    instances: int
    opened_at: datetime
    finished_at: datetime | None
    sr_sop_instance_uid: str | None
    deliveries: dict[str, str]  # "kind destination" -> state

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {
            "revision": self.number,
            "state": self.state.value,
            "reason": self.reason,
            "attempts": self.attempts,
            "instances": self.instances,
            "opened_at": self.opened_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True)
class StudyDetail:
    """A study and its revisions, oldest first."""

    study_uid: str
    study_key: str
    accession: str | None
    revisions: list[RevisionDetail]

    def as_json(self) -> dict[str, object]:
        """Plain JSON data."""
        return {
            "study_uid": self.study_uid,
            "study_key": self.study_key,
            "accession": self.accession,
            "revisions": [revision.as_json() for revision in self.revisions],
        }


def _delivery_state(row: OutboxMessage) -> str:
    """An outbox row's state as ``radtrace study show`` says it: a failed one the peer refused (it answered that it did
    not take it: fix what it said) told apart from one that failed without its answer (it may hold the payload)."""
    if row.state is OutboxState.FAILED and row.last_outcome is DeliveryOutcome.REFUSED:
        return "failed (refused by the peer)"
    return OutboxState(row.state).value


def study_detail(store: Store, study_uid: str) -> StudyDetail | None:
    """A study's revisions with their states, reasons and deliveries; None when no study has that UID."""
    from radtrace.reporting.dispatch.holds import held  # here: it imports pynetdicom

    with store.session("reading a study") as session:
        study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
        if study is None:
            return None
        on_hold = {str(name) for name in session.scalars(held())}
        flights = in_flight(session, [(row.id, study.study_uid, row.next_attempt_at) for rev in study.revisions
                                      for row in rev.outbox if row.state is OutboxState.PENDING])  # fmt: skip
        revisions = []
        for rev in sorted(study.revisions, key=lambda r: r.number):
            deliveries = {
                f"{row.kind} {row.destination}": "held"
                if row.state is OutboxState.PENDING and row.destination in on_hold
                else f"pending: {flights[row.id].describe()}"
                if row.id in flights
                else _delivery_state(row)
                for row in rev.outbox
            }
            revisions.append(
                RevisionDetail(
                    rev.number, RevisionState(rev.state), rev.reason, rev.attempts, len(rev.instances),
                    rev.opened_at, rev.finished_at, rev.sr_sop_instance_uid, deliveries,
                )
            )  # fmt: skip
        return StudyDetail(study.study_uid, study.study_key, study.accession, revisions)
