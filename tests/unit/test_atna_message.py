"""Every radtrace event type becomes a DICOM PS3.15 A.5 audit message that validates against A.5.1.1."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from lxml import etree

from radtrace.audit.atna.message import (
    NO_PATIENT,
    AuditMessageInvalidError,
    AuditSource,
    audit_message_xml,
    build_audit_message,
    validate_audit_message,
)
from radtrace.audit.events import EventType, Outcome
from radtrace.audit.queries import AuditRecord

pytestmark = pytest.mark.unit

SOURCE = AuditSource("radtrace-test", enterprise_site_id="General Hospital", host="10.0.0.5")
STUDY = "1.2.826.0.1.3680043.8.498.1"


def record(event_type: EventType, **overrides: object) -> AuditRecord:
    values: dict[str, object] = {
        "seq": 42,
        "recorded_at": datetime(2026, 12, 4, 14, 30, 5, 123456, tzinfo=UTC),
        "event_type": event_type.value,
        "dicom_event_id": event_type.dicom.code,
        "outcome": Outcome.SUCCESS.value,
        "actor_ae": "MODALITY1",
        "actor_host": "192.168.1.20",
        "actor_user": None,
        "actor_process": "radtrace@host:123",
        "study_uid": STUDY,
        "accession": "ACC123",
        "patient_id": "PAT-7",
        "model_name": None,
        "model_version": None,
        "labels": (),
        "payload": {},
        "prev_hash": "0" * 64,
        "hash": "ab" * 32,
    }
    values.update(overrides)
    return AuditRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("event_type", list(EventType), ids=str)
def test_every_event_type_builds_a_valid_message_with_its_dicom_event(event_type: EventType) -> None:
    xml = audit_message_xml(record(event_type), SOURCE)
    message = etree.fromstring(xml)
    validate_audit_message(xml)
    event_id = message.find("EventIdentification/EventID")
    assert event_id is not None
    assert (event_id.get("csd-code"), event_id.get("codeSystemName")) == (event_type.dicom.code, "DCM")
    assert event_id.get("originalText") == event_type.dicom.meaning
    local = [c.get("csd-code") for c in message.iterfind("EventIdentification/EventTypeCode")]
    assert event_type.value in local
    study = message.xpath("ParticipantObjectIdentification[ParticipantObjectIDTypeCode/@csd-code='110180']")
    assert [s.get("ParticipantObjectID") for s in study] == [STUDY]
    assert study[0].find("ParticipantObjectDescription/Accession").get("Number") == "ACC123"
    patient = message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert [p.get("ParticipantObjectID") for p in patient] == ([] if event_type in NO_PATIENT else ["PAT-7"])
    seq = message.xpath("ParticipantObjectIdentification[@ParticipantObjectID='urn:radtrace:audit:42']")
    details = {
        d.get("type"): base64.b64decode(d.get("value")).decode() for d in seq[0].iterfind("ParticipantObjectDetail")
    }
    assert details == {"seq": "42", "hash": "ab" * 32}
    assert message.find("AuditSourceIdentification").get("AuditSourceID") == "radtrace-test"


def test_participants_carry_requestor_roles_and_network_access_points() -> None:
    message = build_audit_message(record(EventType.INSTANCE_RECEIVED), SOURCE)
    peer, own = message.findall("ActiveParticipant")
    assert (peer.get("UserID"), peer.get("AlternativeUserID"), peer.get("UserIsRequestor")) == (
        "MODALITY1",
        "AETITLES=MODALITY1",
        "true",
    )
    assert (peer.get("NetworkAccessPointID"), peer.get("NetworkAccessPointTypeCode")) == ("192.168.1.20", "2")
    assert peer.find("RoleIDCode").get("csd-code") == "110153"  # the modality is the source
    assert (own.get("UserID"), own.get("UserIsRequestor")) == ("radtrace@host:123", "false")
    assert own.find("RoleIDCode").get("csd-code") == "110152"  # radtrace is the destination
    assert message.find("EventIdentification").get("EventActionCode") == "C"


def test_a_user_without_a_peer_and_a_process_alone_are_requestors() -> None:
    by_user = build_audit_message(
        record(EventType.CONSOLE_LOGIN, actor_ae=None, actor_host="radiologist-pc.example.org", actor_user="dr.who"),
        SOURCE,
    )
    user = by_user.find("ActiveParticipant")
    assert (user.get("UserID"), user.get("NetworkAccessPointTypeCode")) == ("dr.who", "1")
    assert by_user.find("EventIdentification/EventTypeCode").get("csd-code") == "110122"  # Login
    alone = build_audit_message(
        record(EventType.APPLICATION_STARTED, actor_ae=None, actor_host=None, study_uid=None, patient_id=None),
        SOURCE,
    )
    (process,) = alone.findall("ActiveParticipant")
    assert process.get("UserIsRequestor") == "true"
    assert process.find("RoleIDCode").get("csd-code") == "110150"  # Application
    assert alone.find("EventIdentification/EventTypeCode").get("csd-code") == "110120"  # Application Start


def test_failures_carry_outcome_and_reason_and_hostile_text_stays_valid_xml() -> None:
    failed = record(
        EventType.INSTANCE_REJECTED,
        outcome=Outcome.SERIOUS_FAILURE.value,
        actor_ae="EVIL\x00\x1bAE",
        payload={"reason": "bad header <script>\x07 & more"},
    )
    xml = audit_message_xml(failed, SOURCE)
    message = etree.fromstring(xml)
    assert message.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert "bad header <script>" in message.findtext("EventIdentification/EventOutcomeDescription")
    assert message.find("ActiveParticipant").get("UserID") == "EVIL\ufffd\ufffdAE"


def test_audit_query_carries_its_filters_as_the_query_object() -> None:
    queried = record(
        EventType.AUDIT_QUERIED,
        actor_ae=None,
        actor_user="qa-token",
        study_uid=None,
        patient_id=None,
        payload={"view": "events", "filters": {"patient_id": "PAT-9"}, "returned": 3},
    )
    message = etree.fromstring(audit_message_xml(queried, SOURCE))
    query = message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
    assert base64.b64decode(query[0].findtext("ParticipantObjectQuery")) == b'{"patient_id":"PAT-9"}'
    patient = message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert [p.get("ParticipantObjectID") for p in patient] == ["PAT-9"]  # the payload's patient ID


def test_the_schema_rejects_a_message_missing_what_a5_requires() -> None:
    message = build_audit_message(record(EventType.STUDY_QUEUED), SOURCE)
    for participant in message.findall("ActiveParticipant"):
        message.remove(participant)
    with pytest.raises(AuditMessageInvalidError, match="schema"):
        validate_audit_message(message)
    broken = build_audit_message(record(EventType.STUDY_QUEUED), SOURCE)
    broken.find("EventIdentification").set("EventOutcomeIndicator", "3")
    with pytest.raises(AuditMessageInvalidError):
        validate_audit_message(etree.tostring(broken))


@pytest.mark.parametrize(
    ("event_type", "code"),
    [
        (EventType.ASSOCIATION_REJECTED, "110126"),
        (EventType.API_TOKEN_CREATED, "110137"),
        (EventType.CONSOLE_USER_LOCKED, "110137"),
        (EventType.CONSOLE_LOGOUT, "110123"),
        (EventType.APPLICATION_STOPPED, "110121"),
        (EventType.DISPATCH_HELD, "110128"),
        (EventType.DISPATCH_HOLD_RELEASED, "110128"),
    ],
)
def test_standard_event_type_codes_come_before_the_local_one(event_type: EventType, code: str) -> None:
    message = build_audit_message(record(event_type), SOURCE)
    codes = [
        (c.get("csd-code"), c.get("codeSystemName")) for c in message.iterfind("EventIdentification/EventTypeCode")
    ]
    assert codes == [(code, "DCM"), (event_type.value, "99RADTRACE")]


@pytest.mark.parametrize(
    ("event_type", "actor_user", "payload", "outcome"),
    [
        (EventType.DISPATCH_HELD, None,
         {"destination": "PACS@10.0.0.9:104", "reason": "PACS@10.0.0.9:104 rejected the association (A-ASSOCIATE-RJ "
          "1/1/3)", "codes": "1/1/3", "outbox_id": 7}, Outcome.SERIOUS_FAILURE),
        (EventType.DISPATCH_HOLD_RELEASED, "nightshift",
         {"destination": "PACS@10.0.0.9:104", "hold_reason": "PACS@10.0.0.9:104 rejected the association "
          "(A-ASSOCIATE-RJ 1/1/3)", "lifted_by": "operator", "released": 3}, Outcome.SUCCESS),
    ],
)  # fmt: skip
def test_a_destination_held_and_released_is_a_network_configuration_security_alert_naming_the_node(
    event_type: EventType, actor_user: str | None, payload: dict[str, object], outcome: Outcome
) -> None:
    """PS3.15 A.5.3.11: Security Alert (110113), type Network Configuration (110128, CID 403), Event Action E, its
    subject the destination as a Node ID (110182) with the reason as the Alert Description; the operator who lifted it
    the requestor."""
    held = record(event_type, study_uid=None, accession=None, patient_id=None, actor_ae=None,
                  actor_host="pacs1" if actor_user else None, actor_user=actor_user, outcome=outcome.value,
                  payload=payload)  # fmt: skip
    xml = audit_message_xml(held, SOURCE)
    message = etree.fromstring(xml)
    identification = message.find("EventIdentification")
    assert identification is not None
    assert (identification.get("EventActionCode"), identification.get("EventOutcomeIndicator")) == (
        "E", str(outcome.dicom_code)
    )  # fmt: skip
    assert identification.find("EventID").get("csd-code") == "110113"
    [node] = message.xpath("ParticipantObjectIdentification[ParticipantObjectIDTypeCode/@csd-code='110182']")
    assert node.get("ParticipantObjectID") == "PACS@10.0.0.9:104"
    [alert] = node.iterfind("ParticipantObjectDetail")
    assert alert.get("type") == "Alert Description"
    assert "A-ASSOCIATE-RJ 1/1/3" in base64.b64decode(alert.get("value")).decode()
    requestors = [p.get("UserID") for p in message.iterfind("ActiveParticipant") if p.get("UserIsRequestor") == "true"]
    assert requestors == [actor_user or "radtrace@host:123"]
