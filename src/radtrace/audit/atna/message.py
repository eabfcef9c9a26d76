"""One audit row as a DICOM audit message: the XML of PS3.15 Annex A.5, validated against A.5.1.1.

Pure: an :class:`~radtrace.audit.queries.AuditRecord` and the :class:`AuditSource` in, XML bytes out. The
message's shape follows the event's DICOM type (:attr:`radtrace.audit.events.EventType.dicom`):

* Event Identification (A.5.2, A.5.3): the Event ID (CID 400), the Event Action Code, the time the row was
  recorded, the outcome (0/4/8/12) and, for failures, the recorded reason. Every message also carries the exact
  radtrace event type as an Event Type Code in the local scheme ``99RADTRACE``; the standard Event Type Codes
  are added where the event has one (Application Start/Stop, CID 401; Login/Logout, CID 425; Security Alert
  types, CID 403).
* Active Participants (A.5.2.1): the person or peer that caused the event (user name, or the peer's AE title in
  ``AlternativeUserID`` as ``AETITLES=...`` with its network access point), and the radtrace process that
  recorded it. Roles (CID 402): Application, Source, Destination where the event type implies them.
* Audit Source (A.5.2.2): the configured source ID and enterprise site, type 4 (application server process).
* Participant Objects (A.5.2.4): the study (Study Instance UID, 110180, with its accession number), the patient
  (Patient ID, where the row or its payload carries one), the query (for audit-log queries: the filters,
  base64), the alert subject of a Security Alert about a node (a refused peer, a destination on hold: Node ID,
  110182, with its Alert Description), and the audit log record itself (its ``seq`` and hash), so a repository can
  recognise a duplicate.

The schema text we carry (A.5.1.1) requires a Participant Object Name or Query on every participant object.
radtrace does not hold patient names, so the name repeats the object's identifier.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Final

from lxml import etree

from radtrace.audit.events import (
    APPLICATION_ACTIVITY,
    AUDIT_LOG_USED,
    EXPORT,
    INSTANCES_ACCESSED,
    INSTANCES_TRANSFERRED,
    QUERY,
    SECURITY_ALERT,
    USER_AUTHENTICATION,
    EventType,
    Outcome,
    canonical_json,
)
from radtrace.audit.queries import AuditRecord
from radtrace.errors import PermanentError

__all__ = [
    "NO_PATIENT",
    "AuditMessageInvalidError",
    "AuditSource",
    "audit_message_xml",
    "build_audit_message",
    "event_time",
    "validate_audit_message",
]

LOCAL_SCHEME: Final = "99RADTRACE"
MAX_DESCRIPTION_CHARS: Final = 1024
MAX_VALUE_CHARS: Final = 1024  # any one value from the row (see _clean)
MAX_QUERY_BYTES: Final = 8192  # the recorded filters of an audit-log query (radtrace's own are far smaller)
#: To fit a size limit, values are cut to these many characters in turn (see :func:`audit_message_xml`).
CUT_STEPS: Final = (256, 64, 16)
_CUT: Final = "\u2026"

# A.5.1: the Event Action Code by DICOM event type, with radtrace-specific overrides below.
_ACTION_BY_DICOM: Final = {
    APPLICATION_ACTIVITY.code: "E",
    AUDIT_LOG_USED.code: "R",
    INSTANCES_ACCESSED.code: "R",
    INSTANCES_TRANSFERRED.code: "R",
    EXPORT.code: "R",
    QUERY.code: "E",
    SECURITY_ALERT.code: "E",
    USER_AUTHENTICATION.code: "E",
}
_ACTION_OVERRIDE: Final = {
    EventType.INSTANCE_RECEIVED: "C",  # stored: created here
    EventType.INSTANCE_NEW_VERSION: "U",
    EventType.INSTANCE_REJECTED: "C",
    EventType.INSTANCE_QUARANTINED: "C",
    EventType.REPORT_CREATED: "C",
    EventType.FINDING_ASSESSED: "C",
    EventType.DRAFT_ASSESSED: "C",
}
# Event Type Codes from the standard where radtrace's event has a unique one: (code, scheme, meaning).
_STANDARD_TYPE_CODE: Final = {
    EventType.APPLICATION_STARTED: ("110120", "DCM", "Application Start"),
    EventType.APPLICATION_STOPPED: ("110121", "DCM", "Application Stop"),
    EventType.CONSOLE_LOGIN: ("110122", "DCM", "Login"),
    EventType.CONSOLE_LOGIN_FAILED: ("110122", "DCM", "Login"),
    EventType.API_AUTHENTICATION_FAILED: ("110122", "DCM", "Login"),
    EventType.CONSOLE_LOGOUT: ("110123", "DCM", "Logout"),
    # Security Alert type codes (CID 403): a refused association failed node authentication; who may use the
    # API or the console changed. Identity conflicts and tamper findings have no fitting CID 403 code: local only.
    EventType.ASSOCIATION_REJECTED: ("110126", "DCM", "Node Authentication"),
    EventType.API_TOKEN_CREATED: ("110137", "DCM", "User Security Attributes Changed"),
    EventType.API_TOKEN_REVOKED: ("110137", "DCM", "User Security Attributes Changed"),
    EventType.CONSOLE_USER_CREATED: ("110137", "DCM", "User Security Attributes Changed"),
    EventType.CONSOLE_USER_LOCKED: ("110137", "DCM", "User Security Attributes Changed"),
    # A destination put on hold and its hold lifted (radtrace.reporting.dispatch.holds): a PACS refused our association
    # for good (its node authentication refused us: an AE title it does not know) and this node stops sending to it,
    # or an operator lets it send again. Not Application Activity (A.5.3.1: only Application Start/Stop, CID 401: the
    # application neither started nor stopped) nor Network Entry (A.5.3.9: a system, such as a mobile device, itself
    # entering or leaving the network: the PACS did not leave it, and that message has no participant object to name
    # it): a Security Alert (A.5.3.11) of type Network Configuration (CID 403), its subject the destination as a Node
    # ID with the reason as its Alert Description.
    EventType.DISPATCH_HELD: ("110128", "DCM", "Network Configuration"),
    EventType.DISPATCH_HOLD_RELEASED: ("110128", "DCM", "Network Configuration"),
}
_NODE_ALERTS: Final = frozenset({EventType.DISPATCH_HELD, EventType.DISPATCH_HOLD_RELEASED})
# Events about no patient: a patient ID in such a row (an edit in the database) is not sent. Every other event concerns
# a study or a search of the log, and names the patient where its row holds one (instances received, queries by
# patient); a new event type is one of the two by decision (tests/unit/test_atna_event_types.py lists each).
NO_PATIENT: Final = frozenset(
    {
        EventType.APPLICATION_STARTED,
        EventType.APPLICATION_STOPPED,
        EventType.ASSOCIATION_REJECTED,
        EventType.DISPATCH_HELD,
        EventType.DISPATCH_HOLD_RELEASED,
        EventType.AUDIT_VERIFIED,
        EventType.AUDIT_CHECKPOINTED,
        EventType.TAMPER_DETECTED,
        EventType.API_AUTHENTICATION_FAILED,
        EventType.API_TOKEN_CREATED,
        EventType.API_TOKEN_REVOKED,
        EventType.API_TOKEN_BOUND,
        EventType.CONSOLE_LOGIN,
        EventType.CONSOLE_LOGIN_FAILED,
        EventType.CONSOLE_LOGOUT,
        EventType.CONSOLE_USER_CREATED,
        EventType.CONSOLE_USER_LOCKED,
        EventType.CONSOLE_USER_BOUND,
    }
)
_INCOMING: Final = frozenset(
    {
        EventType.INSTANCE_RECEIVED,
        EventType.INSTANCE_DUPLICATE,
        EventType.INSTANCE_NEW_VERSION,
        EventType.INSTANCE_REJECTED,
        EventType.INSTANCE_QUARANTINED,
    }
)
_OUTGOING: Final = frozenset(
    {
        EventType.DISPATCH_ATTEMPTED,
        EventType.DISPATCH_DELIVERED,
        EventType.DISPATCH_FAILED,
        EventType.DISPATCH_RETRY_SCHEDULED,
    }
)
_ROLE_APPLICATION: Final = ("110150", "DCM", "Application")
_ROLE_LAUNCHER: Final = ("110151", "DCM", "Application Launcher")
_ROLE_DESTINATION: Final = ("110152", "DCM", "Destination Role ID")
_ROLE_SOURCE: Final = ("110153", "DCM", "Source Role ID")
# XML 1.0 forbids these code points; peer-supplied strings (AE titles, reasons) may contain them.
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class AuditMessageInvalidError(PermanentError):
    """A built audit message failed the PS3.15 A.5.1 schema: a defect in the builder, never retried."""


@dataclass(frozen=True)
class AuditSource:
    """Who reports the events (A.5.2.2): the Audit Source ID and the optional Enterprise Site ID."""

    source_id: str
    enterprise_site_id: str | None = None
    host: str | None = None  # the network access point of the radtrace process (default: source_id)


def _clean(text: str) -> str:
    # Cut: radtrace writes no value this long, but a row edited in the database may hold megabytes, and a
    # message larger than a UDP datagram (or than a repository takes) would stop forwarding at that row.
    return _NOT_XML.sub("\ufffd", text[:MAX_VALUE_CHARS])


def _token(text: str) -> str:
    return " ".join(_clean(text).split())


def _coded(parent: etree._Element, tag: str, code: tuple[str, str, str]) -> etree._Element:
    # Codes come from the row too (event type, DICOM event ID): an edited row may hold characters XML forbids.
    return etree.SubElement(
        parent, tag, {"csd-code": _clean(code[0]), "codeSystemName": _clean(code[1]), "originalText": _clean(code[2])}
    )


def _access_point(host: str) -> tuple[str, str]:
    """(NetworkAccessPointID, NetworkAccessPointTypeCode): 2 for an IP address, 1 for a machine name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _token(host), "1"
    return host, "2"


def _event_type(record: AuditRecord) -> EventType | None:
    try:
        return EventType(record.event_type)
    except ValueError:  # a row written by a newer radtrace: still forwarded, with the stored DICOM event ID
        return None


def _participant(
    root: etree._Element,
    user_id: str,
    *,
    requestor: bool,
    alternative: str | None = None,
    host: str | None = None,
    role: tuple[str, str, str] | None = None,
) -> None:
    element = etree.SubElement(
        root, "ActiveParticipant", {"UserID": _clean(user_id), "UserIsRequestor": "true" if requestor else "false"}
    )
    if alternative:
        element.set("AlternativeUserID", _clean(alternative))
    if host:
        point, kind = _access_point(host)
        element.set("NetworkAccessPointID", point)
        element.set("NetworkAccessPointTypeCode", kind)
    if role is not None:
        _coded(element, "RoleIDCode", role)


def _object(
    root: etree._Element,
    object_id: str,
    id_type: tuple[str, str, str],
    *,
    type_code: str,
    role: str,
    name: str | None = None,
    query: bytes | None = None,
    details: dict[str, str] | None = None,
    accession: str | None = None,
) -> None:
    element = etree.SubElement(
        root,
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": _token(object_id),
            "ParticipantObjectTypeCode": type_code,
            "ParticipantObjectTypeCodeRole": role,
        },
    )
    _coded(element, "ParticipantObjectIDTypeCode", id_type)
    if query is not None:
        etree.SubElement(element, "ParticipantObjectQuery").text = base64.b64encode(query).decode("ascii")
    else:
        etree.SubElement(element, "ParticipantObjectName").text = _token(name or object_id)
    for key, value in (details or {}).items():
        etree.SubElement(
            element,
            "ParticipantObjectDetail",
            {"type": key, "value": base64.b64encode(value[:MAX_VALUE_CHARS].encode("utf-8")).decode("ascii")},
        )
    if accession:
        description = etree.SubElement(element, "ParticipantObjectDescription")
        etree.SubElement(description, "Accession", {"Number": _token(accession)})


def _patient_id(record: AuditRecord) -> str | None:
    if record.patient_id:
        return record.patient_id
    filters = record.payload.get("filters")
    for holder in (record.payload, filters if isinstance(filters, dict) else {}):
        value = holder.get("patient_id")
        if isinstance(value, str) and value.strip():
            return value
    return None


def _tampered(record: AuditRecord) -> list[str]:
    """What in the row is no longer a value radtrace writes (an edit in the database), said plainly."""
    problems = []
    if record.recorded_at is None:
        problems.append(f"recorded_at is not a time ({record.recorded_at_unreadable!r}): EventDateTime is when the "
                        "row was read")  # fmt: skip
    if record.outcome not in {outcome.value for outcome in Outcome}:
        problems.append(f"outcome {record.outcome!r} is not an outcome: sent as major failure")
    return [f"row edited in the database (run radtrace audit verify): {problem}" for problem in problems]


def _outcome_code(record: AuditRecord) -> int:
    try:
        return Outcome(record.outcome).dicom_code
    except ValueError:  # an edited row: reported, as a major failure, rather than stopping the forwarder
        return Outcome.MAJOR_FAILURE.dicom_code


def _description(record: AuditRecord) -> str | None:
    tampered = _tampered(record)
    if tampered:
        return _clean("; ".join(tampered))[:MAX_DESCRIPTION_CHARS]
    if record.outcome == Outcome.SUCCESS.value:
        return None
    for key in ("reason", "error", "problem", "status"):
        value: Any = record.payload.get(key)
        if isinstance(value, str | int) and str(value).strip():
            return _clean(str(value))[:MAX_DESCRIPTION_CHARS]
    return None


def _refusal_description(payload: dict[str, Any]) -> str:
    """A refusal's alert description: its reason, and why (the first of an interval) or how many (the count of the
    others: :mod:`radtrace.dicom_listener.refusals` aggregates them per source), e.g. ``TLS handshake failed: the peer
    sent no client certificate (…)``, or ``TLS handshake failed (12 more from this source)``."""
    reason, detail, count = payload.get("reason"), payload.get("detail"), payload.get("count")
    text = str(reason) if isinstance(reason, str) and reason.strip() else "association refused"
    if payload.get("aggregated") is True and isinstance(count, int):
        return f"{text} ({count} more from this source)"
    return f"{text}: {detail}" if isinstance(detail, str) and detail.strip() else text


def build_audit_message(record: AuditRecord, source: AuditSource) -> etree._Element:
    """The PS3.15 A.5 ``AuditMessage`` element for one recorded audit event (not yet validated)."""
    event_type = _event_type(record)
    dicom = event_type.dicom if event_type is not None else None
    event_code = (dicom.code, "DCM", dicom.meaning) if dicom else (record.dicom_event_id, "DCM", record.dicom_event_id)
    root = etree.Element("AuditMessage")

    identification = etree.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": _ACTION_OVERRIDE.get(event_type, _ACTION_BY_DICOM.get(event_code[0], "E"))
            if event_type is not None
            else _ACTION_BY_DICOM.get(event_code[0], "E"),
            "EventDateTime": event_time(record).isoformat(),
            "EventOutcomeIndicator": str(_outcome_code(record)),
        },
    )
    _coded(identification, "EventID", event_code)
    if event_type in _STANDARD_TYPE_CODE:
        _coded(identification, "EventTypeCode", _STANDARD_TYPE_CODE[event_type])
    _coded(identification, "EventTypeCode", (record.event_type, LOCAL_SCHEME, record.event_type.replace("_", " ")))
    description = _description(record)
    if description:
        etree.SubElement(identification, "EventOutcomeDescription").text = description

    # Active participants: who caused it (if anyone outside radtrace), and the radtrace process.
    external = record.actor_user or record.actor_ae or None
    peer_role = _ROLE_SOURCE if event_type in _INCOMING else _ROLE_DESTINATION if event_type in _OUTGOING else None
    if record.actor_user and event_type in (EventType.APPLICATION_STARTED, EventType.APPLICATION_STOPPED):
        peer_role = _ROLE_LAUNCHER
    if external:
        _participant(
            root,
            record.actor_user or record.actor_ae or "",
            requestor=True,
            alternative=f"AETITLES={record.actor_ae}" if record.actor_ae else None,
            host=record.actor_host,
            role=peer_role,
        )
    elif record.actor_host:  # a peer known only by its address (e.g. an association refused before its AE title)
        _participant(root, record.actor_host, requestor=True, host=record.actor_host, role=peer_role)
    own_role = _ROLE_DESTINATION if event_type in _INCOMING else _ROLE_SOURCE if event_type in _OUTGOING else None
    if dicom is APPLICATION_ACTIVITY:
        own_role = _ROLE_APPLICATION
    _participant(
        root,
        record.actor_process,
        requestor=not (external or record.actor_host),
        host=source.host or source.source_id,
        role=own_role,
    )

    audit_source = etree.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": _token(source.source_id)})
    if source.enterprise_site_id:
        audit_source.set("AuditEnterpriseSiteID", _token(source.enterprise_site_id))
    etree.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": "4"})

    if record.study_uid:
        _object(
            root,
            record.study_uid,
            ("110180", "DCM", "Study Instance UID"),
            type_code="2",
            role="3",
            accession=record.accession,
        )
    patient_id = _patient_id(record) if event_type not in NO_PATIENT else None
    if patient_id:
        _object(root, patient_id, ("2", "RFC-3881", "Patient Number"), type_code="1", role="1")
    if dicom in (AUDIT_LOG_USED, EXPORT) and event_type in (
        EventType.AUDIT_QUERIED,
        EventType.AUDIT_EXPORTED,
        EventType.AUDIT_VERIFIED,
        EventType.AUDIT_CHECKPOINTED,
    ):
        filters = record.payload.get("filters")
        _object(
            root,
            "radtrace audit log",
            ("12", "RFC-3881", "URI"),
            type_code="2",
            role="24" if filters is not None else "13",
            name="Security Audit Log",
            query=canonical_json(filters).encode("utf-8")[:MAX_QUERY_BYTES] if filters is not None else None,
        )
    if event_type is EventType.ASSOCIATION_REJECTED and record.actor_host:
        # Security Alert (A.5.3.11), Node Authentication: its alert subject is the refused node, by its address
        _object(root, record.actor_host, ("110182", "DCM", "Node ID"), type_code="2", role="13",
                details={"Alert Description": _refusal_description(record.payload)})  # fmt: skip
    destination = record.payload.get("destination")
    if event_type in _NODE_ALERTS and isinstance(destination, str) and destination.strip():
        reason = record.payload.get("hold_reason") or record.payload.get("reason")
        _object(root, destination, ("110182", "DCM", "Node ID"), type_code="2", role="13",
                details={"Alert Description": str(reason)} if reason else None)  # fmt: skip
    # The audit record itself: its place in the hash chain, so that a repeat is recognisable as one.
    _object(
        root,
        f"urn:radtrace:audit:{record.seq}",
        ("12", "RFC-3881", "URI"),
        type_code="2",
        role="13",
        name="radtrace audit record",
        details={"seq": str(record.seq), "hash": record.hash},
    )
    return root


def event_time(record: AuditRecord) -> datetime:
    """When the event was recorded, in UTC; for a row whose time was edited into a non-time, now (the message
    says so in its outcome description)."""
    return (record.recorded_at or datetime.now(UTC)).astimezone(UTC)


@cache
def _schema() -> etree.RelaxNG:
    text = resources.files("radtrace.audit.atna").joinpath("audit-message.rng").read_bytes()
    return etree.RelaxNG(etree.fromstring(text))


def validate_audit_message(message: etree._Element | bytes) -> None:
    """Raise :class:`AuditMessageInvalidError` unless ``message`` is valid against PS3.15 A.5.1.1."""
    element = etree.fromstring(message) if isinstance(message, bytes) else message
    schema = _schema()
    if not schema.validate(element):
        error = schema.error_log.last_error
        raise AuditMessageInvalidError(f"audit message fails the DICOM audit schema: {error.message if error else '?'}")


def _cut_values(element: etree._Element, chars: int) -> None:
    """Cut every value longer than ``chars`` characters to that many, ending in an ellipsis (base64 values: their
    decoded text). EventDateTime is never cut (a dateTime); codes and flags are far shorter than the least cut."""
    for node in element.iter():
        for name, value in node.attrib.items():
            if name == "value" and node.tag == "ParticipantObjectDetail":
                node.set(name, _cut_base64(value, chars))
            elif name != "EventDateTime" and len(value) > chars:
                node.set(name, value[: chars - 1] + _CUT)
        if node.text and len(node.text) > chars:
            node.text = (
                _cut_base64(node.text, chars) if node.tag == "ParticipantObjectQuery" else node.text[: chars - 1] + _CUT
            )


def _cut_base64(value: str, chars: int) -> str:
    text = base64.b64decode(value).decode("utf-8", "replace")
    return value if len(text) <= chars else base64.b64encode((text[: chars - 1] + _CUT).encode("utf-8")).decode()


def audit_message_xml(record: AuditRecord, source: AuditSource, *, max_bytes: int | None = None) -> bytes:
    """The validated A.5 audit message for ``record``, as UTF-8 XML on one line, without a declaration.

    ``max_bytes``: the most the message may take (what the syslog receiver accepts, less the syslog header). A
    message over it has its longest values cut, each to :data:`CUT_STEPS` characters in turn, until it fits; only
    text from an edited row or a peer is ever that long. :class:`AuditMessageInvalidError` if even the last step
    does not fit (the forwarder then sends a short tamper alert in its place).
    """
    element = build_audit_message(record, source)
    xml = etree.tostring(element, encoding="utf-8")
    for chars in CUT_STEPS:
        if max_bytes is None or len(xml) <= max_bytes:
            break
        _cut_values(element, chars)
        xml = etree.tostring(element, encoding="utf-8")
    if max_bytes is not None and len(xml) > max_bytes:
        raise AuditMessageInvalidError(f"audit message of {len(xml)} bytes does not fit {max_bytes} bytes")
    validate_audit_message(element)
    return xml
