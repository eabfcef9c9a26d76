"""The outbox delivers each report exactly once when it can, retries with backoff, and fails loudly when not.

Real peers throughout: python-hl7's MLLP server as the RIS, a pynetdicom SCP as a PACS that answers
chosen statuses, a folder as the file drop; the store on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from dicom_peer_support import answering_scp
from mllp_support import mllp_receiver
from orthanc_support import running_orthanc
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import DicomDestination, DispatchSettings, MllpDestination, ReportingSettings
from radtrace.reporting.dispatch.outbox import (
    KIND_COMPANION,
    KIND_FILE,
    KIND_GSPS,
    KIND_HL7,
    KIND_SR,
    Outbox,
    PlannedDelivery,
    ReportFiles,
    planned_deliveries,
)
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.hl7 import build_oru, control_id_for
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.testing.services import free_port
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def reports() -> ReportFiles:
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    oru = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=str(sr.SOPInstanceUID))
    return ReportFiles(
        str(sr.SOPInstanceUID), sr_bytes(sr), oru.encode(), json.dumps({"resourceType": "Bundle"}).encode()
    )


@pytest.fixture
def revision_id(store: Store, reports: ReportFiles) -> int:
    _, sources = sr_cases()["typical"]
    with store.session() as session:
        study = Study(study_uid=str(sources[0].StudyInstanceUID), study_key="k" * 16, accession="RTACC000001")
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        return revision.id


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _outbox(store: Store, tmp_path: Path, clock: Clock, settings: DispatchSettings) -> Outbox:
    return Outbox(store, AuditRecorder(store), settings, tmp_path / "payloads", clock=clock)


def _events(store: Store) -> list[tuple[str, str, dict[str, object]]]:
    with store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.event_type, AuditEventRow.outcome, AuditEventRow.payload).order_by(
                AuditEventRow.seq
            )
        )
        return [(kind, outcome, json.loads(payload)) for kind, outcome, payload in rows]


def _row(store: Store, outbox_id: int) -> OutboxMessage:
    with store.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        return row


def test_enqueue_plans_every_destination_once_and_audits_the_report(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    settings = DispatchSettings(
        pacs=[DicomDestination(ae_title="PACS1", host="10.0.0.1", port=104)],
        ris=MllpDestination(host="10.0.0.2", port=2575),
        file_drop_dir=tmp_path / "drop",
    )
    outbox = _outbox(store, tmp_path, clock, settings)
    planned = planned_deliveries(settings, reports)
    first = outbox.enqueue(revision_id, planned, sr_sop_instance_uid=reports.sr_sop_instance_uid)
    again = outbox.enqueue(revision_id, planned, sr_sop_instance_uid=reports.sr_sop_instance_uid)
    assert first == again
    rows = sorted((_row(store, i).kind, _row(store, i).destination) for i in first)
    stem = str(tmp_path / "drop" / reports.sr_sop_instance_uid)
    assert rows == [
        (KIND_FILE, f"{stem}.dcm"),
        (KIND_FILE, f"{stem}.fhir.json"),
        (KIND_FILE, f"{stem}.hl7"),
        (KIND_HL7, "10.0.0.2:2575"),
        (KIND_SR, "PACS1@10.0.0.1:104"),
    ]
    for outbox_id, delivery in zip(first, planned, strict=True):
        row = _row(store, outbox_id)
        assert (row.state, row.attempts) == (OutboxState.PENDING, 0)
        assert (tmp_path / "payloads" / row.payload_path).read_bytes() == delivery.payload
    created = [e for e in _events(store) if e[0] == "report_created"]
    assert len(created) == 2  # one per enqueue call; the rows were not duplicated
    assert created[0][2]["sr_sop_instance_uid"] == reports.sr_sop_instance_uid


def test_ris_down_for_a_while_then_up_gets_the_message_exactly_once(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    port = free_port()
    settings = DispatchSettings(ris=MllpDestination(host="127.0.0.1", port=port, timeout_s=5), backoff_initial_s=10)
    outbox = _outbox(store, tmp_path, clock, settings)
    [outbox_id] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))

    first = outbox.deliver(outbox_id)  # nobody listening yet
    assert (first.state, first.attempts, first.attempted) == (OutboxState.PENDING, 1, True)
    assert first.error is not None
    assert "refused" in first.error
    assert outbox.deliver_due() == []  # not due before the backoff has passed
    clock.advance(10)
    second = outbox.deliver(outbox_id)
    assert (second.state, second.attempts) == (OutboxState.PENDING, 2)
    assert _row(store, outbox_id).next_attempt_at == clock.now + timedelta(seconds=20)  # doubled

    clock.advance(20)
    with mllp_receiver(["AA"], port=port) as receiver:
        [third] = outbox.deliver_due()
        assert outbox.deliver_due() == []
        assert outbox.deliver(outbox_id).attempted is False
    assert receiver.control_ids == [control_id_for(reports.sr_sop_instance_uid)]
    assert (third.state, third.attempts) == (OutboxState.DELIVERED, 3)
    row = _row(store, outbox_id)
    assert row.delivered_at == clock.now
    assert [(e[0], e[1]) for e in _events(store)][1:] == [
        ("dispatch_attempted", "success"),
        ("dispatch_retry_scheduled", "minor_failure"),
        ("dispatch_attempted", "success"),
        ("dispatch_retry_scheduled", "minor_failure"),
        ("dispatch_attempted", "success"),
        ("dispatch_delivered", "success"),
    ]


def test_after_max_attempts_the_row_fails_with_its_reason(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    settings = DispatchSettings(
        ris=MllpDestination(host="127.0.0.1", port=free_port(), timeout_s=2), max_attempts=3, backoff_initial_s=1
    )
    outbox = _outbox(store, tmp_path, clock, settings)
    [outbox_id] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))
    results = []
    for _ in range(5):
        results += outbox.deliver_due()
        clock.advance(3600)
    assert [(r.state, r.attempts) for r in results] == [
        (OutboxState.PENDING, 1),
        (OutboxState.PENDING, 2),
        (OutboxState.FAILED, 3),
    ]
    row = _row(store, outbox_id)
    assert row.state is OutboxState.FAILED
    assert row.last_error is not None
    assert row.last_error.startswith("gave up after 3 attempts: MLLP connection")
    [failed] = [e for e in _events(store) if e[0] == "dispatch_failed"]
    assert failed[1] == "serious_failure"
    assert failed[2]["error"] == row.last_error
    assert failed[2]["attempt"] == 3


def test_rejection_fails_at_once(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    with mllp_receiver(["AR"]) as receiver:
        settings = DispatchSettings(ris=MllpDestination(host=receiver.host, port=receiver.port, timeout_s=5))
        outbox = _outbox(store, tmp_path, clock, settings)
        [outbox_id] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))
        result = outbox.deliver(outbox_id)
    assert (result.state, result.attempts) == (OutboxState.FAILED, 1)
    assert result.error is not None
    assert "rejected" in result.error


def test_pacs_failure_status_is_retried_and_only_success_counts(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    with answering_scp() as pacs:
        pacs.statuses += [0xA700]  # out of resources, then success
        settings = DispatchSettings(pacs=[DicomDestination(ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.port)])
        outbox = _outbox(store, tmp_path, clock, settings)
        [outbox_id] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))
        first = outbox.deliver(outbox_id)
        assert first.state is OutboxState.PENDING
        assert first.error is not None
        assert "0xA700" in first.error
        clock.advance(settings.backoff_initial_s)
        second = outbox.deliver(outbox_id)
    assert second.state is OutboxState.DELIVERED
    assert pacs.stored == [reports.sr_sop_instance_uid]
    assert len(pacs.received) == 2


def test_file_drop_writes_each_report_readable(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    settings = DispatchSettings(file_drop_dir=drop)
    outbox = _outbox(store, tmp_path, clock, settings)
    outbox.enqueue(revision_id, planned_deliveries(settings, reports))
    results = outbox.deliver_due()
    assert {r.state for r in results} == {OutboxState.DELIVERED}
    names = sorted(p.name for p in drop.iterdir())
    uid = reports.sr_sop_instance_uid
    assert names == [f"{uid}.dcm", f"{uid}.fhir.json", f"{uid}.hl7"]
    assert pydicom.dcmread(drop / f"{uid}.dcm").SOPInstanceUID == uid
    assert (drop / f"{uid}.hl7").read_bytes() == reports.hl7


def test_file_drop_folder_missing_is_retried_not_created(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    settings = DispatchSettings(file_drop_dir=tmp_path / "not-mounted")
    outbox = _outbox(store, tmp_path, clock, settings)
    [outbox_id, *_] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))
    result = outbox.deliver(outbox_id)
    assert result.state is OutboxState.PENDING
    assert not (tmp_path / "not-mounted").exists()


def test_a_changed_payload_file_is_never_sent(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    sent: list[bytes] = []
    settings = DispatchSettings()
    outbox = Outbox(
        store,
        AuditRecorder(store),
        settings,
        tmp_path / "payloads",
        clock=clock,
        senders={KIND_SR: lambda destination, payload: sent.append(payload)},
    )
    [outbox_id] = outbox.enqueue(revision_id, [PlannedDelivery(KIND_SR, "X@h:1", reports.sr)])
    path = tmp_path / "payloads" / _row(store, outbox_id).payload_path
    path.write_bytes(reports.sr + b"tampered")
    result = outbox.deliver(outbox_id)
    assert result.state is OutboxState.FAILED
    assert sent == []
    assert result.error is not None
    assert "SHA-256" in result.error


def test_backoff_doubles_up_to_the_cap(store: Store, tmp_path: Path, clock: Clock) -> None:
    outbox = _outbox(store, tmp_path, clock, DispatchSettings(backoff_initial_s=5, backoff_max_s=30))
    assert [outbox.backoff(n).total_seconds() for n in range(1, 6)] == [5, 10, 20, 30, 30]


def test_two_dispatchers_racing_on_one_row_send_it_once(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    sent: list[str] = []
    started = threading.Event()

    def slow_sender(destination: str, payload: bytes) -> None:
        started.set()
        time.sleep(0.5)
        sent.append(destination)

    def outbox() -> Outbox:
        return Outbox(
            store,
            AuditRecorder(store),
            DispatchSettings(),
            tmp_path / "payloads",
            clock=clock,
            senders={KIND_SR: slow_sender},
        )

    [outbox_id] = outbox().enqueue(revision_id, [PlannedDelivery(KIND_SR, "X@h:1", reports.sr)])
    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(outbox().deliver(outbox_id)))
    first.start()
    assert started.wait(5)
    second = outbox().deliver(outbox_id)  # while the first is still sending
    first.join(10)
    assert second.attempted is False
    assert sent == ["X@h:1"]
    assert _row(store, outbox_id).state is OutboxState.DELIVERED


def test_default_senders_deliver_to_a_real_orthanc_and_an_independent_ris(
    store: Store, tmp_path: Path, clock: Clock, revision_id: int
) -> None:
    reading, sources = sr_cases()["typical"]
    drafts = build_drafts(reading, sources, settings=ReportingSettings(gsps=True), revision=1)
    assert drafts.gsps is not None
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc") as orthanc, mllp_receiver(["AA"]) as ris:
        settings = DispatchSettings(
            pacs=[DicomDestination(ae_title=orthanc.ae_title, host="127.0.0.1", port=orthanc.dicom_port)],
            ris=MllpDestination(host=ris.host, port=ris.port, timeout_s=5),
        )
        outbox = _outbox(store, tmp_path, clock, settings)  # default senders: C-STORE SCU and MLLP client
        outbox.enqueue(revision_id, planned_deliveries(settings, drafts))
        results = outbox.deliver_due()
        assert {(r.state, r.attempts) for r in results} == {(OutboxState.DELIVERED, 1)}
        [instance_id] = orthanc.find_instance(drafts.sr_sop_instance_uid)
        study = orthanc.get(f"/instances/{instance_id}/study")
        assert isinstance(study, dict)
        assert study["MainDicomTags"]["StudyInstanceUID"] == sources[0].StudyInstanceUID
        gsps_uid = pydicom.dcmread(io.BytesIO(drafts.gsps)).SOPInstanceUID
        [gsps_id] = orthanc.find_instance(str(gsps_uid))
        gsps_study = orthanc.get(f"/instances/{gsps_id}/study")
        assert isinstance(gsps_study, dict)
        assert gsps_study["ID"] == study["ID"]
        assert drafts.companion is not None  # the Basic Text SR every viewer shows, on by default
        companion_uid = pydicom.dcmread(io.BytesIO(drafts.companion)).SOPInstanceUID
        [companion_id] = orthanc.find_instance(str(companion_uid))
        companion_study = orthanc.get(f"/instances/{companion_id}/study")
        assert isinstance(companion_study, dict)
        assert companion_study["ID"] == study["ID"]
    assert ris.control_ids == [control_id_for(drafts.sr_sop_instance_uid)]
    delivered = [e for e in _events(store) if e[0] == "dispatch_delivered"]
    assert sorted(e[2]["kind"] for e in delivered) == [KIND_COMPANION, KIND_GSPS, KIND_HL7, KIND_SR]


def test_a_later_revision_finds_the_earlier_sr_as_its_predecessor(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    settings = DispatchSettings(
        pacs=[DicomDestination(ae_title="PACS1", host="10.0.0.1", port=104)], file_drop_dir=tmp_path / "drop"
    )
    outbox = _outbox(store, tmp_path, clock, settings)
    outbox.enqueue(revision_id, planned_deliveries(settings, reports), sr_sop_instance_uid=reports.sr_sop_instance_uid)
    with store.session() as session:
        first = session.get(Revision, revision_id)
        assert first is not None
        assert first.sr_sop_instance_uid == reports.sr_sop_instance_uid
        second = Revision(study_id=first.study_id, number=2, state=RevisionState.PROCESSING)
        session.add(second)
        session.flush()
        second_id = second.id
    assert outbox.earlier_srs(revision_id) == []
    [predecessor] = outbox.earlier_srs(second_id)
    assert predecessor.SOPInstanceUID == reports.sr_sop_instance_uid
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=2, predecessors=[predecessor])
    listed = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert listed.ReferencedSOPInstanceUID == reports.sr_sop_instance_uid


def test_a_timed_out_message_is_sent_again_with_the_same_control_id(
    store: Store, tmp_path: Path, clock: Clock, reports: ReportFiles, revision_id: int
) -> None:
    with mllp_receiver(["silent", "AA"]) as ris:
        settings = DispatchSettings(ris=MllpDestination(host=ris.host, port=ris.port, timeout_s=0.5))
        outbox = _outbox(store, tmp_path, clock, settings)
        [outbox_id] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))
        first = outbox.deliver(outbox_id)
        clock.advance(settings.backoff_initial_s)
        second = outbox.deliver(outbox_id)
    assert first.state is OutboxState.PENDING
    assert first.error is not None
    assert "no ACK" in first.error
    assert (second.state, second.attempts) == (OutboxState.DELIVERED, 2)
    assert ris.control_ids == [control_id_for(reports.sr_sop_instance_uid)] * 2
