"""The site sends to one destination at most ``dispatch.max_sends_per_destination`` rows at a time: a row over the
cap is not claimed (``deferred``: no attempt counted, no event, nobody's), while rows to other destinations go on;
once a send ends, it names the deferred row to ring (``wake``) and that row is delivered as usual. (Two processes on
PostgreSQL: test_dispatch_site_wide_cap.py.) (With a real dispatcher and a silent RIS:
test_dispatch_dead_ris_head_of_line.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DicomDestination, DispatchSettings, MllpDestination
from radtrace.reporting.dispatch.outbox import KIND_HL7, KIND_SR, Delivery, Outbox, planned_deliveries
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState
from reporting_support import reported_revision, typical_report_files

RIS = "127.0.0.1:2575"


def test_a_destination_at_its_cap_defers_its_rows_and_the_others_go_on(store: Store, tmp_path: Path) -> None:
    settings = DispatchSettings(
        pacs=[DicomDestination(ae_title="PACS", host="127.0.0.1", port=11112)],
        ris=MllpDestination(host="127.0.0.1", port=2575, timeout_s=30),
    )  # max_sends_per_destination: 2 by default
    entered, release = threading.Semaphore(0), threading.Event()
    sent: list[tuple[str, str]] = []

    def hanging_ris(destination: str, payload: bytes) -> str | None:  # a RIS that answers when told to
        sent.append((KIND_HL7, destination))
        entered.release()
        release.wait(10)
        return None

    def pacs(destination: str, payload: bytes) -> str | None:
        sent.append((KIND_SR, destination))
        return None

    outbox = Outbox(store, AuditRecorder(store), settings, tmp_path / "payloads",
                    senders={KIND_HL7: hanging_ris, KIND_SR: pacs})  # fmt: skip
    first, _ = reported_revision(store, "capstudy00000001", "RTACC-CAP")
    with store.session() as session:
        study_id = session.get(Revision, first).study_id  # type: ignore[union-attr]
        later = [Revision(study_id=study_id, number=n, state=RevisionState.REPORTED) for n in (2, 3)]
        session.add_all(later)
        session.flush()
        revisions = [first, *(revision.id for revision in later)]
    rows = {}
    for revision_id in revisions:
        ids = outbox.enqueue(revision_id, planned_deliveries(settings, typical_report_files()))
        with store.session() as session:
            rows[revision_id] = dict(
                session.execute(sa.select(OutboxMessage.kind, OutboxMessage.id).where(OutboxMessage.id.in_(ids))).all()
            )
    orus = [rows[revision_id][KIND_HL7] for revision_id in revisions]

    ended: list[Delivery] = []
    hanging = [threading.Thread(target=lambda oru=oru: ended.append(outbox.deliver(oru))) for oru in orus[:2]]
    for thread in hanging:
        thread.start()
    try:
        assert entered.acquire(timeout=10)
        assert entered.acquire(timeout=10)
        deferred = outbox.deliver(orus[2])  # the third send to the RIS: over the cap
        assert not deferred.attempted
        assert deferred.deferred
        with store.session() as session:
            row = session.get(OutboxMessage, orus[2])
            assert row is not None
            assert (row.state, row.attempts, row.claimed_by) == (OutboxState.PENDING, 0, None)
        assert outbox.sends_in_flight(RIS) == 2
        # the PACS is not held up by the RIS
        for revision_id in revisions:
            delivered = outbox.deliver(rows[revision_id][KIND_SR])
            assert delivered.state is OutboxState.DELIVERED, delivered
    finally:
        release.set()
        for thread in hanging:
            thread.join(10)
    assert outbox.sends_in_flight(RIS) == 0
    assert orus[2] in {woken for delivery in ended for woken in delivery.wake}  # rung once a send ends
    after = outbox.deliver(orus[2])
    assert after.attempted
    assert after.state is OutboxState.DELIVERED
    assert sent == [(KIND_HL7, RIS)] * 2 + [(KIND_SR, "PACS@127.0.0.1:11112")] * 3 + [(KIND_HL7, RIS)]
