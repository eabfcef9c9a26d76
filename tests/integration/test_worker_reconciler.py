"""The reconciler finds, on SQLite and PostgreSQL, exactly the rows whose doorbell must ring again."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.config import Settings
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Priority, Revision, RevisionState, Study
from radtrace.worker import disk_space, doorbell
from radtrace.worker.reconciler import Reconciler
from radtrace.worker.status import collect_status
from worker_support import worker_settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
AGO = NOW - timedelta(minutes=10)


def _revision(session: sa.orm.Session, name: str, state: RevisionState, **values: object) -> Revision:
    study = Study(study_uid=f"1.2.3.{sum(map(ord, name))}.{len(name)}", study_key=name[:16].ljust(16, "k"))
    revision = Revision(study=study, number=1, state=state, **({"queued_at": AGO, "opened_at": AGO} | values))
    session.add_all([study, revision])
    session.flush()
    return revision


def _outbox(session: sa.orm.Session, revision: Revision, state: OutboxState, due: datetime, kind: str = "sr") -> int:
    row = OutboxMessage(revision_id=revision.id, kind=kind, destination="PACS@h:104", payload_path="x.dcm",
                        payload_sha256="0" * 64, state=state, next_attempt_at=due)  # fmt: skip
    session.add(row)
    session.flush()
    return row.id


def test_a_pass_rings_what_is_overdue_once_per_period(store: Store, tmp_path: Path) -> None:
    settings = worker_settings(tmp_path, "sqlite://", Path("unused"), broker={"overdue_after_s": 60})
    with store.session() as session:
        queued = _revision(session, "queued", RevisionState.QUEUED)
        fresh = _revision(session, "fresh", RevisionState.QUEUED, queued_at=NOW - timedelta(seconds=5))
        _revision(session, "backing-off", RevisionState.QUEUED, next_attempt_at=NOW + timedelta(seconds=30))
        lost = _revision(session, "lost", RevisionState.PROCESSING, claimed_by="w", claim_expires_at=NOW)
        # a claim expires on the database's clock (the real time), whatever the reconciler's clock says
        _revision(session, "busy", RevisionState.PROCESSING, claimed_by="w",
                  claim_expires_at=datetime.now(UTC) + timedelta(1))  # fmt: skip
        _revision(session, "failed", RevisionState.FAILED, reason="bad", finished_at=AGO)
        reported = _revision(session, "reported", RevisionState.REPORTED, reported_at=AGO)
        pending = _outbox(session, reported, OutboxState.PENDING, AGO)
        _outbox(session, reported, OutboxState.PENDING, NOW + timedelta(seconds=300), kind="hl7")  # leased
        settled = _revision(session, "unsettled", RevisionState.REPORTED, reported_at=AGO)
        first_row = _outbox(session, settled, OutboxState.DELIVERED, AGO)
        _outbox(session, settled, OutboxState.DELIVERED, AGO, kind="hl7")
        uids = {rev.id: rev.study.study_uid for rev in (queued, lost, fresh)}

    processes: list[tuple[str, int]] = []
    dispatches: list[int] = []

    def ring_process(uid: str, number: int, priority: Priority) -> bool:
        processes.append((uid, number))
        return True

    def ring_dispatch(outbox_id: int) -> bool:
        dispatches.append(outbox_id)
        return True

    reconciler = Reconciler(settings, store, ring_process=ring_process, ring_dispatch=ring_dispatch, clock=lambda: NOW)
    done = reconciler.run_once()
    assert sorted(processes) == sorted([(uids[queued.id], 1), (uids[lost.id], 1)])
    assert sorted(dispatches) == sorted([pending, first_row])
    assert done.settles == [first_row]

    processes.clear()
    dispatches.clear()
    reconciler.run_once()  # rung a moment ago: not again until overdue_after_s has passed
    assert processes == []

    later = Reconciler(settings, store, ring_process=ring_process, ring_dispatch=ring_dispatch,
                       clock=lambda: NOW + timedelta(seconds=61))  # fmt: skip
    later.run_once()  # now the fresh one is overdue too; the one backing off is not yet
    assert sorted(processes) == sorted([(uids[queued.id], 1), (uids[lost.id], 1), (uids[fresh.id], 1)])

    status = collect_status(settings, store, with_queues=False, now=NOW)
    assert status.studies == status.revisions  # one revision per study here
    assert status.revisions["queued"] == 3
    assert status.revisions["processing"] == 2
    assert status.outbox == {"pending": 2, "delivered": 2, "failed": 0, "cancelled": 0}
    assert status.oldest_waiting is not None
    assert status.oldest_waiting.waiting_s == 600
    assert [(f.study_key, f.reason) for f in status.failed] == [("failedkkkkkkkkkk", "bad")]


class _Broker:
    """A sender whose embedded broker cannot write ``broker.db`` (SQLITE_FULL) for the process queue, and is not
    reachable for the dispatch queue when ``dispatch_down``."""

    def __init__(self, settings: Settings, *, dispatch_down: bool) -> None:
        self.settings, self.dispatch_down = settings, dispatch_down

    def send_task(self, task: str, *, args: list[object], queue: str, eta: object) -> None:
        if queue == self.settings.broker.dispatch_queue:
            if self.dispatch_down:
                raise ConnectionRefusedError(111, "Connection refused")
            return
        full = sqlite3.OperationalError("database or disk is full")
        full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
        raise sa.exc.OperationalError("INSERT INTO kombu_message ...", {}, full)


@pytest.mark.parametrize("dispatch_down", [False, True], ids=["disk-full", "disk-full-and-down"])
def test_the_pass_says_its_doorbells_wait_for_the_brokers_disk_not_that_the_broker_is_down(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    dispatch_down: bool,
) -> None:  # fmt: skip
    """The real doorbell against an embedded broker whose disk is full: the pass's INFO line names the disk and its
    free space (before: '(2 not rung: broker down?)')."""
    settings = worker_settings(tmp_path, "sqlite://", Path("unused"), broker={"overdue_after_s": 60})
    with store.session() as session:
        _revision(session, "queued one", RevisionState.QUEUED)
        _revision(session, "queued two", RevisionState.QUEUED)
        reported = _revision(session, "reported", RevisionState.REPORTED, reported_at=AGO)
        _outbox(session, reported, OutboxState.PENDING, AGO)
    monkeypatch.setattr(doorbell, "_sender", lambda _settings: _Broker(settings, dispatch_down=dispatch_down))
    monkeypatch.setattr(disk_space, "free_bytes", lambda path, statvfs=None: 0)

    with caplog.at_level(logging.INFO, logger="radtrace.worker.reconciler"):
        done = Reconciler(settings, store, clock=lambda: NOW).run_once()

    assert (done.not_rung, done.not_rung_disk_full) == ((3, 2) if dispatch_down else (2, 2))
    [line] = [r.getMessage() for r in caplog.records if r.name == "radtrace.worker.reconciler"]
    said = f"2 not rung: disk full: {settings.data_dir}, 0 MB free"
    if dispatch_down:
        assert line == f"reconciler rang 0 revisions, 0 deliveries, 0 settles ({said}; 1 not rung: broker down?)"
    else:
        assert line == f"reconciler rang 0 revisions, 1 deliveries, 0 settles ({said})"


def test_a_pass_rings_a_destinations_waiting_rows_up_to_its_cap_oldest_first(store: Store, tmp_path: Path) -> None:
    """A backlog to a dead RIS: every pass rang every overdue row (100 dispatch tasks a pass, each deferred at once
    over the destination's cap). Now the oldest ``dispatch.max_sends_per_destination`` of each destination; a
    claimed row whose lease ran out (its dispatcher died) is always rung, and counts."""
    settings = worker_settings(tmp_path, "sqlite://", Path("unused"), broker={"overdue_after_s": 60},
                               dispatch={"max_sends_per_destination": 2})  # fmt: skip
    with store.session() as session:
        reported = _revision(session, "reported", RevisionState.REPORTED, reported_at=AGO)
        ris = [_outbox(session, reported, OutboxState.PENDING, AGO + timedelta(seconds=i), kind=f"hl7-{i}")
               for i in range(100)]  # fmt: skip
        session.execute(sa.update(OutboxMessage).where(OutboxMessage.id.in_(ris)).values(destination="RIS@r:2575"))
        pacs = [_outbox(session, reported, OutboxState.PENDING, AGO + timedelta(seconds=i), kind=f"sr-{i}")
                for i in range(3)]  # fmt: skip
        dead = _outbox(session, reported, OutboxState.PENDING, AGO - timedelta(seconds=1), kind="hl7-dead")
        session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == dead)
                        .values(destination="RIS@r:2575", claimed_by="radtrace@gone:1"))  # fmt: skip
    dispatches: list[int] = []

    def ring_dispatch(outbox_id: int) -> bool:
        dispatches.append(outbox_id)
        return True

    reconciler = Reconciler(settings, store, ring_process=lambda *_: True, ring_dispatch=ring_dispatch,
                            clock=lambda: NOW)  # fmt: skip
    done = reconciler.run_once()

    assert dispatches == [dead, ris[0], pacs[0], ris[1], pacs[1]], dispatches  # oldest first; before: all 104
    assert done.dispatches == dispatches


def test_a_pass_whose_withdrawal_sweep_fails_still_rings_what_is_overdue(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault in the withdrawal sweep (a bug, the database gone mid-sweep) must not stop the pass before its rings:
    before, every pass ended there, and no overdue study or delivery was rung again while it lasted."""
    settings = worker_settings(tmp_path, "sqlite://", Path("unused"), broker={"overdue_after_s": 60})
    with store.session() as session:
        queued = _revision(session, "queued", RevisionState.QUEUED)
        uid = queued.study.study_uid

    def broken_sweep(outbox: object) -> list[object]:
        raise RuntimeError("a withdrawal bug")

    monkeypatch.setattr("radtrace.worker.reconciler.sweep_withdrawals", broken_sweep)
    processes: list[tuple[str, int]] = []

    def ring_process(study_uid: str, number: int, priority: Priority) -> bool:
        processes.append((study_uid, number))
        return True

    for now in (NOW, NOW + timedelta(seconds=61)):  # two passes: the fault logged in full once, then one line
        Reconciler(settings, store, ring_process=ring_process, ring_dispatch=lambda outbox_id: True,
                   clock=lambda now=now: now).run_once()  # fmt: skip
    assert processes == [(uid, 1), (uid, 1)]
    faults = [record for record in caplog.records if "withdrawing drafts failed" in record.getMessage()]
    assert len(faults) == 2
