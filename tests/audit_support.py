"""A realistic audit log for QA-query tests: four studies through the pipeline at known times.

Not fixtures: test modules call :func:`seed_audit_log` with their store. The recorder's clock is
replaced while seeding, so every event's ``recorded_at`` is known; afterwards it is the real clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from radtrace.audit import recorder
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store, is_postgresql

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
UID = "1.2.826.0.1.3680043.8.498."
STUDY_A, STUDY_B, STUDY_C, STUDY_D = (f"{UID}{n}" for n in (1001, 1002, 1003, 1004))
NV, NV_OLD, NV_NEW = "NV-Reason-CXR-3B", "3f2a9c1", "4b7d2e0"
DEEPMEDIX, DEEPMEDIX_VERSION = "DeepMedix-R1", "r1-2025.02"
PACS = Actor(ae_title="PACS_MAIN", host="10.0.0.5", process="radtrace-listen@node1:41")
WORKER = Actor(process="radtrace-worker@gpu1:77")
DISPATCHER = Actor(process="radtrace-dispatch@node1:52")


@dataclass(frozen=True)
class Seeded:
    """One seeded event, where it landed and when."""

    seq: int
    at: datetime
    event: AuditEvent


class Clock:
    """A settable clock standing in for ``utc_now`` in the recorder."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)


@contextlib.contextmanager
def frozen_clock(start: datetime = T0) -> Iterator[Clock]:
    """Within the block, the recorder stamps events with the returned clock's time."""
    clock = Clock(start)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recorder, "utc_now", clock)
        yield clock


def _study(
    uid: str, accession: str, patient: str, model: tuple[str, str], labels: tuple[str, ...], *, delivered: bool = True
) -> list[tuple[float, AuditEvent]]:
    """(seconds after the previous event, event) for one study through the pipeline."""
    ids = {"study_uid": uid, "accession": accession}
    name, version = model
    inference = {"model_name": name, "model_version": version}
    raw = f"<think>Frontal view reviewed.</think><answer>{', '.join(labels)}</answer>"
    last = (
        AuditEvent(EventType.DISPATCH_DELIVERED, DISPATCHER, payload={"destination": "PACS_MAIN"}, **ids)
        if delivered
        else AuditEvent(
            EventType.DISPATCH_FAILED, DISPATCHER, Outcome.SERIOUS_FAILURE, payload={"error": "rejected"}, **ids
        )
    )
    return [
        (0, AuditEvent(EventType.INSTANCE_RECEIVED, PACS, patient_id=patient, payload={"sop": f"{uid}.1.1"}, **ids)),
        (2, AuditEvent(EventType.INSTANCE_RECEIVED, PACS, patient_id=patient, payload={"sop": f"{uid}.1.2"}, **ids)),
        (12, AuditEvent(EventType.STUDY_QUEUED, WORKER, payload={"revision": 1}, **ids)),
        (3, AuditEvent(EventType.INFERENCE_STARTED, WORKER, payload={"revision": 1}, **inference, **ids)),
        (
            41.5,
            AuditEvent(
                EventType.INFERENCE_COMPLETED,
                WORKER,
                labels=labels,
                payload={"raw": raw, "tokens": 512},
                **inference,
                **ids,
            ),
        ),
        (0.8, AuditEvent(EventType.REPORT_CREATED, WORKER, payload={"sr_uid": f"{uid}.9"}, **inference, **ids)),
        (1, AuditEvent(EventType.DISPATCH_ATTEMPTED, DISPATCHER, payload={"destination": "PACS_MAIN"}, **ids)),
        (2.2, last),
    ]


def _failed_study(uid: str, accession: str, patient: str) -> list[tuple[float, AuditEvent]]:
    ids = {"study_uid": uid, "accession": accession}
    inference = {"model_name": NV, "model_version": NV_NEW}
    return [
        (0, AuditEvent(EventType.INSTANCE_RECEIVED, PACS, patient_id=patient, **ids)),
        (10, AuditEvent(EventType.STUDY_QUEUED, WORKER, **ids)),
        (4, AuditEvent(EventType.INFERENCE_STARTED, WORKER, **inference, **ids)),
        (
            30,
            AuditEvent(
                EventType.INFERENCE_FAILED,
                WORKER,
                Outcome.SERIOUS_FAILURE,
                payload={"error": "CUDA out of memory"},
                **inference,
                **ids,
            ),
        ),
        (600, AuditEvent(EventType.STUDY_FAILED, WORKER, Outcome.MAJOR_FAILURE, payload={"attempts": 3}, **ids)),
    ]


def scenario() -> list[tuple[datetime, AuditEvent]]:
    """Every seeded event with its time: studies A and B on day one, C and D the next day."""
    timed: list[tuple[datetime, AuditEvent]] = []

    def add(start: datetime, steps: list[tuple[float, AuditEvent]]) -> None:
        at = start
        for seconds, event in steps:
            at += timedelta(seconds=seconds)
            timed.append((at, event))

    add(T0 - timedelta(minutes=5), [(0, AuditEvent(EventType.APPLICATION_STARTED, WORKER))])
    add(T0, _study(STUDY_A, "ACC-1001", "PAT-0001", (NV, NV_OLD), ("Pleural Effusion", "Cardiomegaly")))
    add(
        T0 + timedelta(minutes=10),
        _study(STUDY_B, "ACC-1002", "PAT-0002", (DEEPMEDIX, DEEPMEDIX_VERSION), ("Effusion", "Support Devices"),
               delivered=False),
    )  # fmt: skip
    add(
        T0 + timedelta(minutes=20),
        [(0, AuditEvent(EventType.ASSOCIATION_REJECTED, Actor(ae_title="UNKNOWN_AE", host="10.9.9.9"),
                        Outcome.MINOR_FAILURE, payload={"reason": "calling AE not allowed"}))],
    )  # fmt: skip
    add(T0 + timedelta(days=1), _failed_study(STUDY_C, "ACC-1003", "PAT-0001"))
    add(T0 + timedelta(days=1, hours=1), _study(STUDY_D, "ACC-1004", "PAT-0003", (NV, NV_NEW), ("Nodule_%", "Mass")))
    return timed


def seed_audit_log(store: Store) -> list[Seeded]:
    """Record :func:`scenario` into ``store`` at its times; returns what landed where."""
    seeded: list[Seeded] = []
    audit = AuditRecorder(store)
    with frozen_clock() as clock:
        for at, event in scenario():
            clock.now = at
            seeded.append(Seeded(audit.record(event).seq, at, event))
    return seeded


def as_superuser(store: Store, *statements: str) -> None:
    """What an attacker with database superuser rights does: switch the audit table's guards off and edit."""
    with store.engine.connect() as connection:
        if is_postgresql(store.engine):
            connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER ALL")
        else:
            connection.exec_driver_sql("DROP TRIGGER audit_events_no_update")
            connection.exec_driver_sql("DROP TRIGGER audit_events_no_delete")
        for statement in statements:
            connection.exec_driver_sql(statement)
        connection.commit()


def rehash_from(store: Store, first_seq: int, *statements: str) -> None:
    """What an attacker with database rights who knows the hash rule does: edit (``statements``), then recompute
    ``prev_hash`` and ``hash`` from row ``first_seq`` to the head, so the in-database chain is valid again."""
    import sqlalchemy as sa

    from radtrace.audit.chain import GENESIS_HASH, row_hash
    from radtrace.audit.schema import AuditEventRow

    as_superuser(store, *statements)
    table = AuditEventRow.__table__
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(table).order_by(table.c.seq)).mappings().all()
        previous = GENESIS_HASH
        for row in rows:
            if row["seq"] >= first_seq:
                new_hash = row_hash(dict(row) | {"prev_hash": previous})
                connection.execute(
                    sa.text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s"),
                    {"p": previous, "h": new_hash, "s": row["seq"]},
                )
                previous = new_hash
            else:
                previous = row["hash"]
        connection.commit()
