"""The reconciler and a hold's lifting judge claims and leases on the database's clock, never on their node's.

A revision's ``claim_expires_at`` and a claimed delivery's lease (``next_attempt_at`` while ``claimed_by`` is set) are
written on the database's clock (claims.database_now). Here the node judging them has a clock 10 minutes off (an
injected clock), on SQLite and on PostgreSQL. Before: a reconciler behind left a dead worker's study and a dead
dispatcher's delivery unrung for 10 minutes more, one ahead rang live claims; ``radtrace dispatch retry`` run on a
host ahead took a delivery being sent for one whose lease had run out and made it due again (sent twice)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DicomDestination, DispatchSettings, Settings, load_settings
from radtrace.reporting.dispatch import claims
from radtrace.reporting.dispatch.holds import DestinationHold
from radtrace.reporting.dispatch.outbox import KIND_SR, Outbox, planned_deliveries
from radtrace.reporting.dispatch.redelivery import redeliver_failed
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Priority, Revision, RevisionState, Study
from radtrace.worker.attempts import RevisionAttempts
from radtrace.worker.claims import Claim
from radtrace.worker.reconciler import Reconciler
from reporting_support import reported_revision, typical_report_files
from worker_support import Unobserved

pytestmark = pytest.mark.integration

TEN_MINUTES = timedelta(minutes=10)
CLAIM_TIMEOUT_S = 1.5
STUDY_UID = "1.2.826.0.1.3680043.8.498.4712"


def skewed(offset: timedelta) -> Callable[[], datetime]:
    """A node's wall clock, ``offset`` off the true time."""
    return lambda: datetime.now(UTC) + offset


def _settings(tmp_path: Path, store: Store) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    return load_settings(data_dir=tmp_path / "radtrace", store={"url": url},
                         broker={"claim_timeout_s": CLAIM_TIMEOUT_S})  # fmt: skip


def _claimed_delivery(store: Store, tmp_path: Path, settings: DispatchSettings, lease_s: float) -> int:
    """A delivery claimed by another host's dispatcher (no heartbeat seen), its lease ending ``lease_s`` from now by
    the database's clock."""
    outbox = Outbox(store, AuditRecorder(store), settings, tmp_path / "payloads")
    planned = [d for d in planned_deliveries(settings, typical_report_files()) if d.kind == KIND_SR]
    [outbox_id] = outbox.enqueue(reported_revision(store, "e" * 16, "RTACC000473")[0], planned)
    with store.session() as session:
        lease = claims.database_now(session) + timedelta(seconds=lease_s)
        session.execute(
            sa.update(OutboxMessage).where(OutboxMessage.id == outbox_id)
            .values(attempts=1, next_attempt_at=lease, heartbeat_at=None,
                    claimed_by="radtrace@other-node:4242 pidns=1 boot=b start=1 claim=0123456789ab")
        )  # fmt: skip
    return outbox_id


@pytest.mark.parametrize("offset", [TEN_MINUTES, -TEN_MINUTES], ids=["reconciler-ahead", "reconciler-behind"])
def test_the_reconciler_rings_a_claimed_read_once_it_expired_by_the_databases_clock(
    tmp_path: Path, store: Store, offset: timedelta
) -> None:
    settings = _settings(tmp_path, store)
    with store.session() as session:
        study = Study(study_uid=STUDY_UID, study_key="r" * 16, accession="RTACC000474")
        session.add_all([study, Revision(study=study, number=1, state=RevisionState.QUEUED)])
    worker = RevisionAttempts(settings, store, AuditRecorder(store), actor=Actor(), worker="gpu-1:101",
                              clock=skewed(timedelta(0)), observer=Unobserved())  # fmt: skip
    assert isinstance(worker.claim(STUDY_UID, 1), Claim)
    rang: list[str] = []

    def ring_process(study_uid: str, number: int, priority: Priority) -> bool:
        rang.append(study_uid)
        return True

    reconciler = Reconciler(settings, store, ring_process=ring_process, ring_dispatch=lambda _: True,
                            clock=skewed(offset))  # fmt: skip
    reconciler.run_once(overdue_after_s=0)
    assert rang == []  # live: its worker is reading it (before, ahead: rung)
    time.sleep(CLAIM_TIMEOUT_S + 0.3)  # gpu-1 died: no renewal
    reconciler.run_once(overdue_after_s=0)
    assert rang == [STUDY_UID]  # before, behind: not for 10 minutes more


@pytest.mark.parametrize(
    ("offset", "lease_s", "rung"),
    [(TEN_MINUTES, 60.0, False), (-TEN_MINUTES, -1.0, True)],
    ids=["ahead-live-lease", "behind-lease-over"],
)
def test_the_reconciler_judges_a_deliverys_lease_on_the_databases_clock(
    tmp_path: Path, store: Store, offset: timedelta, lease_s: float, rung: bool
) -> None:
    settings = _settings(tmp_path, store)
    dispatch = DispatchSettings(pacs=[DicomDestination(ae_title="PACS", host="127.0.0.1", port=11112)])
    outbox_id = _claimed_delivery(store, tmp_path, dispatch, lease_s)
    rang: list[int] = []

    def ring_dispatch(outbox_id: int) -> bool:
        rang.append(outbox_id)
        return True

    Reconciler(settings, store, ring_process=lambda *_: True, ring_dispatch=ring_dispatch,
               clock=skewed(offset)).run_once(overdue_after_s=0)  # fmt: skip
    assert rang == ([outbox_id] if rung else [])


def test_lifting_a_hold_on_a_host_whose_clock_is_ahead_leaves_a_delivery_being_sent_to_its_holder(
    tmp_path: Path, store: Store
) -> None:
    dispatch = DispatchSettings(pacs=[DicomDestination(ae_title="PACS", host="127.0.0.1", port=11112)])
    outbox_id = _claimed_delivery(store, tmp_path, dispatch, 300.0)  # being sent: a 300 s lease, 5 minutes left
    destination = "PACS@127.0.0.1:11112"
    with store.session() as session:
        session.add(DestinationHold(destination=destination, reason="refused 1/1/3", codes="1/1/3",
                                    held_since=datetime.now(UTC), outbox_id=outbox_id, calling_ae_title="RADTRACE",
                                    ae_title="PACS", host="127.0.0.1", port=11112))  # fmt: skip
    done = redeliver_failed(store, dispatch, destination, Actor(), clock=skewed(TEN_MINUTES))
    assert done.lifted is not None
    assert done.lifted.released == []  # before: [outbox_id], due again while its holder still sent it
    with store.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        assert (row.state, row.attempts) == (OutboxState.PENDING, 1)
        assert row.claimed_by is not None
        assert session.scalar(sa.select(sa.func.count()).select_from(DestinationHold)) == 0


def test_a_hold_lifted_and_failed_deliveries_asked_again_on_a_host_ahead_are_due_at_once(
    tmp_path: Path, store: Store
) -> None:
    """``radtrace dispatch retry`` on a host 10 minutes ahead: the held and the failed deliveries are due at once for a
    dispatcher whose clock is right (before: 10 minutes later, 'due now' by the requester's clock)."""
    dispatch = DispatchSettings(pacs=[DicomDestination(ae_title="PACS", host="127.0.0.1", port=11112)])
    outbox = Outbox(store, AuditRecorder(store), dispatch, tmp_path / "payloads")
    held_id = _claimed_delivery(store, tmp_path, dispatch, 60.0)
    with store.session() as session:
        revision_id = session.get(OutboxMessage, held_id).revision_id  # type: ignore[union-attr]
        session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == held_id)
                        .values(claimed_by=None, last_error="refused 1/1/3"))  # fmt: skip
        failed = OutboxMessage(revision_id=revision_id, kind="sr", destination="PACS@127.0.0.1:11112",
                               document_uid="1.2.826.0.1.3680043.8.498.99", payload_path="x.dcm",
                               payload_sha256="0" * 64, state=OutboxState.FAILED,
                               attempts=8, next_attempt_at=datetime.now(UTC), last_error="gave up")  # fmt: skip
        session.add(failed)
        session.add(DestinationHold(destination="PACS@127.0.0.1:11112", reason="refused 1/1/3", codes="1/1/3",
                                    held_since=datetime.now(UTC), outbox_id=held_id, calling_ae_title="RADTRACE",
                                    ae_title="PACS", host="127.0.0.1", port=11112))  # fmt: skip
        session.flush()
        failed_id = failed.id
    done = redeliver_failed(store, dispatch, "PACS@127.0.0.1:11112", Actor(), clock=skewed(TEN_MINUTES))
    assert done.lifted is not None
    assert done.lifted.released == [held_id]
    assert done.outbox_ids == [failed_id]
    assert sorted(outbox.due()) == sorted([held_id, failed_id])  # the dispatcher's clock is right
