"""Every event type radtrace records has a decided DICOM PS3.15 audit message: a new type without a line here fails.

Each line is the decision for one type: its Event ID (CID 400), Event Action Code, the standard Event Type Code
where one fits (else only the local ``99RADTRACE`` code), and whether it may name a patient as a Participant Object
(only events about a study or a search of the log; never logins, tokens, node alerts, application start/stop).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from radtrace.audit.atna.message import AuditSource, audit_message_xml
from radtrace.audit.events import EventType, Outcome
from radtrace.audit.queries import AuditRecord

pytestmark = pytest.mark.unit


def _row(event_type: EventType) -> AuditRecord:
    """A row of ``event_type`` from a peer, about a study, holding a patient ID."""
    return AuditRecord(
        seq=1, recorded_at=datetime(2026, 12, 5, tzinfo=UTC), event_type=event_type.value,
        dicom_event_id=event_type.dicom.code, outcome=Outcome.SUCCESS.value, actor_ae="MODALITY1",
        actor_host="192.168.1.20", actor_user=None, actor_process="radtrace@host:1", study_uid="1.2.3",
        accession="ACC1", patient_id="PAT-7", model_name=None, model_version=None, labels=(), payload={},
        prev_hash="0" * 64, hash="ab" * 32, recorded_at_unreadable=None,
    )  # fmt: skip


# EventType: (EventID, EventActionCode, standard EventTypeCode or None, may name the patient)
DECIDED: dict[EventType, tuple[str, str, str | None, bool]] = {
    EventType.APPLICATION_STARTED: ("110100", "E", "110120", False),
    EventType.APPLICATION_STOPPED: ("110100", "E", "110121", False),
    EventType.ASSOCIATION_REJECTED: ("110113", "E", "110126", False),  # listener refusals, DIMSE ones included
    EventType.INSTANCE_RECEIVED: ("110104", "C", None, True),  # character-set labels ride in the payload only
    EventType.INSTANCE_DUPLICATE: ("110104", "R", None, True),
    EventType.INSTANCE_NEW_VERSION: ("110104", "U", None, True),
    EventType.INSTANCE_REJECTED: ("110104", "C", None, True),  # also a refused DIMSE request (C-FIND, wrong class)
    EventType.INSTANCE_QUARANTINED: ("110104", "C", None, True),
    EventType.INSTANCE_REASSIGNED: ("110113", "E", None, True),  # on the old study, with the patient it was filed under
    EventType.INSTANCE_REJECTION_NOTED: ("110113", "E", None, True),  # IOCM rejection note: on the rejected's study
    EventType.STUDY_QUEUED: ("110103", "R", None, True),
    EventType.STUDY_SKIPPED: ("110103", "R", None, True),
    EventType.STUDY_FAILED: ("110103", "R", None, True),
    EventType.PATIENT_IDENTITY_CONFLICT: ("110113", "E", None, True),  # recorded with a count, never the IDs
    EventType.INFERENCE_STARTED: ("110103", "R", None, True),
    EventType.INFERENCE_COMPLETED: ("110103", "R", None, True),
    EventType.INFERENCE_FAILED: ("110103", "R", None, True),  # model outages: each study's attempt fails so
    EventType.REPORT_CREATED: ("110103", "C", None, True),
    EventType.REPORT_FAILED: ("110103", "R", None, True),  # reading_kept rides in the payload
    EventType.REPORT_WITHDRAWN: ("110113", "E", None, True),  # a sent draft withdrawn from the PACS/RIS: its study
    EventType.DRAFT_ACCESSED: ("110103", "R", None, True),
    EventType.DRAFT_EXPORTED: ("110106", "R", None, True),
    EventType.STUDY_RETRIED: ("110103", "R", None, True),
    EventType.DISPATCH_ATTEMPTED: ("110104", "R", None, True),
    EventType.DISPATCH_DELIVERED: ("110104", "R", None, True),
    EventType.DISPATCH_FAILED: ("110104", "R", None, True),
    EventType.DISPATCH_RETRY_SCHEDULED: ("110104", "R", None, True),
    EventType.DISPATCH_HELD: ("110113", "E", "110128", False),
    EventType.DISPATCH_HOLD_RELEASED: ("110113", "E", "110128", False),
    EventType.AUDIT_QUERIED: ("110101", "R", None, True),
    EventType.AUDIT_VERIFIED: ("110101", "R", None, False),
    EventType.AUDIT_EXPORTED: ("110106", "R", None, True),
    EventType.AUDIT_CHECKPOINTED: ("110101", "R", None, False),
    EventType.TAMPER_DETECTED: ("110113", "E", None, False),
    EventType.API_AUTHENTICATION_FAILED: ("110114", "E", "110122", False),
    EventType.API_TOKEN_CREATED: ("110113", "E", "110137", False),
    EventType.API_TOKEN_REVOKED: ("110113", "E", "110137", False),
    EventType.API_TOKEN_BOUND: ("110113", "E", None, False),
    EventType.CONSOLE_LOGIN: ("110114", "E", "110122", False),
    EventType.CONSOLE_LOGIN_FAILED: ("110114", "E", "110122", False),
    EventType.CONSOLE_LOGOUT: ("110114", "E", "110123", False),
    EventType.CONSOLE_USER_CREATED: ("110113", "E", "110137", False),
    EventType.CONSOLE_USER_LOCKED: ("110113", "E", "110137", False),
    EventType.CONSOLE_USER_BOUND: ("110113", "E", None, False),
    EventType.STUDY_OPENED: ("110103", "R", None, True),
    EventType.IMAGE_VIEWED: ("110103", "R", None, True),
    EventType.FINDING_ASSESSED: ("110103", "C", None, True),
    EventType.DRAFT_ASSESSED: ("110103", "C", None, True),
    EventType.IMAGE_FLAGS_CHECKED: ("110103", "R", None, True),  # a radiologist checked a moved/rejected image's draft
}


def test_every_event_type_has_a_decided_audit_message() -> None:
    assert sorted(set(EventType) - set(DECIDED)) == []  # a new type: decide its message above


@pytest.mark.parametrize("event_type", list(EventType), ids=str)
def test_the_message_is_the_one_decided(event_type: EventType) -> None:
    event_id, action, standard, names_patient = DECIDED[event_type]
    # the row holds a patient ID even where the event is about none (an edit in the database): it is not sent
    message = etree.fromstring(audit_message_xml(_row(event_type), AuditSource("radtrace-test")))
    identification = message.find("EventIdentification")
    assert identification.find("EventID").get("csd-code") == event_id
    assert identification.get("EventActionCode") == action
    codes = [(c.get("csd-code"), c.get("codeSystemName")) for c in identification.iterfind("EventTypeCode")]
    assert codes == [*([(standard, "DCM")] if standard else []), (event_type.value, "99RADTRACE")]
    patients = message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']/@ParticipantObjectID")
    assert patients == (["PAT-7"] if names_patient else [])
    assert ("PAT-7" in etree.tostring(message).decode()) is names_patient
