"""A draft written into the file drop is withdrawn there too: a rejection note and a corrected ORU beside its files.

The drop folder is a destination like the PACS and the RIS (an interface engine picks the files up): a draft read from
an image the PACS rejected (``rejected_at``) gets ``<SR UID>.withdrawal.dcm`` (the IHE IOCM rejection note naming the
SR and companion dropped) and ``<SR UID>.withdrawal.hl7`` (the ORU with OBR-25 C, OBX-11 W), and where the draft's
FHIR Bundle was dropped ``<SR UID>.withdrawal.fhir.json`` (its DiagnosticReport ``entered-in-error``), once. Drafts
built from the real-film reporting cases (tests/reporting_support.py), the store on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from fhir.resources.R4B.bundle import Bundle
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from file_drop_support import dropped_drafts, oru_withdrawal_unbuildable
from radtrace.config import ReportingSettings
from radtrace.reporting.companion import build_companion
from radtrace.reporting.dispatch import withdrawals
from radtrace.reporting.dispatch.outbox import ReportFiles
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.hl7 import build_oru
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision
from reporting_support import sr_cases
from tests_support import DICOMDIR_WARNING, dciodvfy_lines

pytestmark = pytest.mark.integration


def test_a_dropped_draft_of_a_rejected_image_gets_its_withdrawal_files_once(store: Store, tmp_path: Path) -> None:
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    uid = str(sr.SOPInstanceUID)
    companion = build_companion(reading, sr, settings=ReportingSettings(), revision=1)
    oru = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=uid)
    reports = ReportFiles(uid, sr_bytes(sr), oru.encode(), companion=sr_bytes(companion))
    outbox, drop, revision_id, _ = dropped_drafts(
        store, tmp_path, reports, sources[0], study_key="w" * 16, accession="RTACC000001"
    )
    assert withdrawals.sweep(outbox) == []  # not marked: nothing withdrawn
    with store.session() as session:
        session.execute(sa.update(Revision).where(Revision.id == revision_id).values(rejected_at=utc_now()))

    [done] = withdrawals.sweep(outbox)
    assert (done.cancelled, len(done.queued)) == ((), 2)
    assert {d.state for d in outbox.deliver_due()} == {OutboxState.DELIVERED}
    assert withdrawals.sweep(outbox) == []
    assert outbox.deliver_due() == []

    note = pydicom.dcmread(drop / f"{uid}.withdrawal.dcm")
    assert note.ConceptNameCodeSequence[0].CodeValue == "113037"
    [evidence] = note.CurrentRequestedProcedureEvidenceSequence
    named = [
        str(r.ReferencedSOPInstanceUID) for s in evidence.ReferencedSeriesSequence for r in s.ReferencedSOPSequence
    ]
    assert named == [uid, str(companion.SOPInstanceUID)]  # the SR first
    checked = dciodvfy_lines(drop / f"{uid}.withdrawal.dcm")
    assert "KeyObjectSelectionDocument" in checked
    assert [line for line in checked if "Error" in line or ("Warning" in line and DICOMDIR_WARNING not in line)] == []
    text = (drop / f"{uid}.withdrawal.hl7").read_bytes().decode("utf-8")  # CR-separated: not read_text
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()
    segments = [segment.split("|") for segment in text.split("\r") if segment]
    assert [fields[25] for fields in segments if fields[0] == "OBR"] == ["C"]
    assert {fields[11] for fields in segments if fields[0] == "OBX"} == {"W"}
    with store.session() as session:
        kinds = session.execute(sa.text("SELECT event_type, payload FROM audit_events")).all()
    [event] = [json.loads(payload) for kind, payload in kinds if kind == "report_withdrawn"]
    assert sorted(w["destination"] for w in event["withdrawals"]) == [
        f"{drop / uid}.withdrawal.dcm",
        f"{drop / uid}.withdrawal.hl7",
    ]


def test_a_withdrawal_that_cannot_be_built_is_queued_failed_and_audited_once_not_retried_silently(
    store: Store, tmp_path: Path
) -> None:
    """The dropped ORU's payload file is gone (a disk replaced, a bad restore): its withdrawal cannot be built. It is
    a failed withdrawal row saying why, in ``report_withdrawn`` (a serious failure), once; the rejection note that can
    be built is still sent."""
    uid, dropped = oru_withdrawal_unbuildable(store, tmp_path, study_key="v" * 16, accession="RTACC000002")
    outbox, drop = dropped.outbox, dropped.drop

    [done] = withdrawals.sweep(outbox)
    assert len(done.queued) == 1
    assert withdrawals.sweep(outbox) == []  # not tried again every pass
    assert {d.state for d in outbox.deliver_due()} == {OutboxState.DELIVERED}
    assert (drop / f"{uid}.withdrawal.dcm").is_file()
    assert not (drop / f"{uid}.withdrawal.hl7").exists()
    with store.session() as session:
        failed = session.execute(
            sa.select(OutboxMessage.destination, OutboxMessage.last_error)
            .where(OutboxMessage.kind == "withdrawal-file", OutboxMessage.state == OutboxState.FAILED)
        ).all()  # fmt: skip
        events = session.execute(
            sa.text("SELECT outcome, payload FROM audit_events WHERE event_type = 'report_withdrawn'")
        ).all()
    [(destination, error)] = failed
    assert destination == f"{drop / uid}.withdrawal.hl7"
    assert error.startswith(withdrawals.NOT_BUILT_PREFIX)
    [(outcome, payload)] = events
    assert outcome == "serious_failure"
    assert [item["destination"] for item in json.loads(payload)["not_built"]] == [destination]


def test_a_dropped_fhir_draft_gets_its_diagnostic_report_entered_in_error_beside_it(
    store: Store, tmp_path: Path
) -> None:
    """Found in review: the draft's ``<SR UID>.fhir.json`` got no withdrawal, so a FHIR consumer of the drop kept the
    preliminary DiagnosticReport of the wrong patient. Now ``<SR UID>.withdrawal.fhir.json`` is the same Bundle (the
    same ids and identifiers: it replaces it), the report and its observations ``entered-in-error``, saying why."""
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    uid = str(sr.SOPInstanceUID)
    fhir = build_fhir_bundle(reading, sources[0], settings=ReportingSettings(), revision=1)
    reports = ReportFiles(uid, sr_bytes(sr), fhir=fhir.encode())
    outbox, drop, revision_id, _ = dropped_drafts(
        store, tmp_path, reports, sources[0], study_key="f" * 16, accession="RTACC000002"
    )
    with store.session() as session:
        session.execute(sa.update(Revision).where(Revision.id == revision_id).values(reassigned_at=utc_now()))

    [done] = withdrawals.sweep(outbox)
    assert len(done.queued) == 2  # the rejection note for the SR dropped, and the FHIR withdrawal
    assert {d.state for d in outbox.deliver_due()} == {OutboxState.DELIVERED}
    assert withdrawals.sweep(outbox) == []

    text = (drop / f"{uid}.withdrawal.fhir.json").read_text(encoding="utf-8")
    Bundle.model_validate_json(text)  # validated as the draft is, from the JSON a consumer gets
    draft, withdrawn = json.loads(fhir), json.loads(text)
    assert withdrawn["identifier"] == draft["identifier"]
    assert [e["fullUrl"] for e in withdrawn["entry"]] == [e["fullUrl"] for e in draft["entry"]]
    before = {e["fullUrl"]: e["resource"] for e in draft["entry"]}
    [report_url] = [url for url, r in before.items() if r["resourceType"] == "DiagnosticReport"]
    after = {e["fullUrl"]: e["resource"] for e in withdrawn["entry"]}
    assert (before[report_url]["status"], after[report_url]["status"]) == ("preliminary", "entered-in-error")
    assert after[report_url]["identifier"] == before[report_url]["identifier"]
    assert "withdrawn" in after[report_url]["conclusion"]
    assert "another patient" in after[report_url]["conclusion"]
    observations = [r for r in after.values() if r["resourceType"] == "Observation"]
    assert observations
    assert {r["status"] for r in observations} == {"entered-in-error"}
    assert [r["resourceType"] for r in after.values()] == [r["resourceType"] for r in before.values()]
    with store.session() as session:
        payloads = session.scalars(
            sa.text("SELECT payload FROM audit_events WHERE event_type = 'report_withdrawn'")
        ).all()
    [event] = [json.loads(payload) for payload in payloads]
    assert sorted(w["destination"] for w in event["withdrawals"]) == [
        f"{drop / uid}.withdrawal.dcm",
        f"{drop / uid}.withdrawal.fhir.json",
    ]
