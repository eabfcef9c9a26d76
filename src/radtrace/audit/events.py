"""What an audit event is: a fixed set of event types mapped to DICOM PS3.15 A.5, and the event value.

Audit events are data, never log lines (DESIGN.md, principle 4). Each radtrace event type maps to the
DICOM audit message it corresponds to (PS3.15 Annex A.5.3, Event ID codes from CID 400 / DCM), so
the log can be exported to a hospital's audit repository in its terms.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "Actor",
    "AuditEvent",
    "DicomAuditEvent",
    "EventType",
    "Outcome",
    "canonical_json",
]


@dataclass(frozen=True)
class DicomAuditEvent:
    """A DICOM PS3.15 A.5 audit message type: its Event ID code (scheme DCM) and meaning."""

    code: str
    meaning: str


APPLICATION_ACTIVITY: Final = DicomAuditEvent("110100", "Application Activity")
AUDIT_LOG_USED: Final = DicomAuditEvent("110101", "Audit Log Used")
INSTANCES_ACCESSED: Final = DicomAuditEvent("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED: Final = DicomAuditEvent("110104", "DICOM Instances Transferred")
EXPORT: Final = DicomAuditEvent("110106", "Export")
QUERY: Final = DicomAuditEvent("110112", "Query")
SECURITY_ALERT: Final = DicomAuditEvent("110113", "Security Alert")
USER_AUTHENTICATION: Final = DicomAuditEvent("110114", "User Authentication")


class EventType(enum.StrEnum):
    """Every kind of event radtrace records. Adding one is a code change, never free text."""

    APPLICATION_STARTED = "application_started"
    APPLICATION_STOPPED = "application_stopped"
    ASSOCIATION_REJECTED = "association_rejected"
    INSTANCE_RECEIVED = "instance_received"
    INSTANCE_DUPLICATE = "instance_duplicate"
    INSTANCE_NEW_VERSION = "instance_new_version"
    INSTANCE_REJECTED = "instance_rejected"
    INSTANCE_QUARANTINED = "instance_quarantined"
    INSTANCE_REASSIGNED = "instance_reassigned"
    INSTANCE_REJECTION_NOTED = "instance_rejection_noted"
    STUDY_QUEUED = "study_queued"
    STUDY_SKIPPED = "study_skipped"
    STUDY_FAILED = "study_failed"
    PATIENT_IDENTITY_CONFLICT = "patient_identity_conflict"
    INFERENCE_STARTED = "inference_started"
    INFERENCE_COMPLETED = "inference_completed"
    INFERENCE_FAILED = "inference_failed"
    REPORT_CREATED = "report_created"
    REPORT_FAILED = "report_failed"
    REPORT_WITHDRAWN = "report_withdrawn"
    DRAFT_ACCESSED = "draft_accessed"
    DRAFT_EXPORTED = "draft_exported"
    STUDY_RETRIED = "study_retried"
    DISPATCH_ATTEMPTED = "dispatch_attempted"
    DISPATCH_DELIVERED = "dispatch_delivered"
    DISPATCH_FAILED = "dispatch_failed"
    DISPATCH_RETRY_SCHEDULED = "dispatch_retry_scheduled"
    DISPATCH_HELD = "dispatch_held"
    DISPATCH_HOLD_RELEASED = "dispatch_hold_released"
    AUDIT_QUERIED = "audit_queried"
    AUDIT_VERIFIED = "audit_verified"
    AUDIT_EXPORTED = "audit_exported"
    AUDIT_CHECKPOINTED = "audit_checkpointed"
    TAMPER_DETECTED = "tamper_detected"
    API_AUTHENTICATION_FAILED = "api_authentication_failed"
    API_TOKEN_CREATED = "api_token_created"
    API_TOKEN_REVOKED = "api_token_revoked"
    API_TOKEN_BOUND = "api_token_bound"
    CONSOLE_LOGIN = "console_login"
    CONSOLE_LOGIN_FAILED = "console_login_failed"
    CONSOLE_LOGOUT = "console_logout"
    CONSOLE_USER_CREATED = "console_user_created"
    CONSOLE_USER_LOCKED = "console_user_locked"
    CONSOLE_USER_BOUND = "console_user_bound"
    STUDY_OPENED = "study_opened"
    IMAGE_VIEWED = "image_viewed"
    FINDING_ASSESSED = "finding_assessed"
    DRAFT_ASSESSED = "draft_assessed"
    IMAGE_FLAGS_CHECKED = "image_flags_checked"

    @property
    def dicom(self) -> DicomAuditEvent:
        """The DICOM PS3.15 A.5 audit message this event is reported as."""
        return _DICOM_EVENT[self]


_DICOM_EVENT: Final[Mapping[EventType, DicomAuditEvent]] = {
    EventType.APPLICATION_STARTED: APPLICATION_ACTIVITY,
    EventType.APPLICATION_STOPPED: APPLICATION_ACTIVITY,
    EventType.ASSOCIATION_REJECTED: SECURITY_ALERT,
    EventType.INSTANCE_RECEIVED: INSTANCES_TRANSFERRED,
    EventType.INSTANCE_DUPLICATE: INSTANCES_TRANSFERRED,
    EventType.INSTANCE_NEW_VERSION: INSTANCES_TRANSFERRED,
    EventType.INSTANCE_REJECTED: INSTANCES_TRANSFERRED,
    EventType.INSTANCE_QUARANTINED: INSTANCES_TRANSFERRED,
    # Security Alert: an image a draft was read from was re-sent by the PACS under another patient or study.
    EventType.INSTANCE_REASSIGNED: SECURITY_ALERT,
    # Security Alert: the PACS rejected (IHE IOCM rejection note) an image a draft was read from.
    EventType.INSTANCE_REJECTION_NOTED: SECURITY_ALERT,
    EventType.STUDY_QUEUED: INSTANCES_ACCESSED,
    EventType.STUDY_SKIPPED: INSTANCES_ACCESSED,
    EventType.STUDY_FAILED: INSTANCES_ACCESSED,
    # Security Alert: images of more than one patient under one study, never read together.
    EventType.PATIENT_IDENTITY_CONFLICT: SECURITY_ALERT,
    EventType.INFERENCE_STARTED: INSTANCES_ACCESSED,
    EventType.INFERENCE_COMPLETED: INSTANCES_ACCESSED,
    EventType.INFERENCE_FAILED: INSTANCES_ACCESSED,
    EventType.REPORT_CREATED: INSTANCES_ACCESSED,
    EventType.REPORT_FAILED: INSTANCES_ACCESSED,
    # Security Alert: a draft already sent, read from an image the PACS moved or rejected, is withdrawn from the
    # PACS and the RIS (radtrace.reporting.dispatch.withdrawals); its unsent deliveries are cancelled.
    EventType.REPORT_WITHDRAWN: SECURITY_ALERT,
    EventType.DRAFT_ACCESSED: INSTANCES_ACCESSED,
    EventType.DRAFT_EXPORTED: EXPORT,
    EventType.STUDY_RETRIED: INSTANCES_ACCESSED,
    EventType.DISPATCH_ATTEMPTED: INSTANCES_TRANSFERRED,
    EventType.DISPATCH_DELIVERED: INSTANCES_TRANSFERRED,
    EventType.DISPATCH_FAILED: INSTANCES_TRANSFERRED,
    EventType.DISPATCH_RETRY_SCHEDULED: INSTANCES_TRANSFERRED,
    # A destination on hold (radtrace.reporting.dispatch.holds), and its hold lifted: Security Alert, type Network
    # Configuration (see radtrace.audit.atna.message for why not Application Activity or Network Entry).
    EventType.DISPATCH_HELD: SECURITY_ALERT,
    EventType.DISPATCH_HOLD_RELEASED: SECURITY_ALERT,
    EventType.AUDIT_QUERIED: AUDIT_LOG_USED,
    EventType.AUDIT_VERIFIED: AUDIT_LOG_USED,
    EventType.AUDIT_EXPORTED: EXPORT,
    EventType.AUDIT_CHECKPOINTED: AUDIT_LOG_USED,
    EventType.TAMPER_DETECTED: SECURITY_ALERT,
    EventType.API_AUTHENTICATION_FAILED: USER_AUTHENTICATION,
    # Security Alert, type "User Security Attributes Changed" (DCM 110136): who may use the API changed.
    EventType.API_TOKEN_CREATED: SECURITY_ALERT,
    EventType.API_TOKEN_REVOKED: SECURITY_ALERT,
    # A token or account from before credentials were bound to the log, recorded with its binding
    # (radtrace audit rebind), or an account whose password hash was upgraded.
    EventType.API_TOKEN_BOUND: SECURITY_ALERT,
    EventType.CONSOLE_USER_BOUND: SECURITY_ALERT,
    # The review console: User Authentication (DCM 110114) for logins, failed logins and logouts; Security
    # Alert for account changes and lockouts; DICOM Instances Accessed (DCM 110103) when a person sees a
    # study's data or images, and when they record an assessment of its draft (Event Action Code C).
    EventType.CONSOLE_LOGIN: USER_AUTHENTICATION,
    EventType.CONSOLE_LOGIN_FAILED: USER_AUTHENTICATION,
    EventType.CONSOLE_LOGOUT: USER_AUTHENTICATION,
    EventType.CONSOLE_USER_CREATED: SECURITY_ALERT,
    EventType.CONSOLE_USER_LOCKED: SECURITY_ALERT,
    EventType.STUDY_OPENED: INSTANCES_ACCESSED,
    EventType.IMAGE_VIEWED: INSTANCES_ACCESSED,
    EventType.FINDING_ASSESSED: INSTANCES_ACCESSED,
    EventType.DRAFT_ASSESSED: INSTANCES_ACCESSED,
    # A radiologist checked a draft read from an image the PACS moved or rejected (radtrace.console.reassigned_flags).
    EventType.IMAGE_FLAGS_CHECKED: INSTANCES_ACCESSED,
}


class Outcome(enum.StrEnum):
    """Event Outcome Indicator (PS3.15 A.5.3.1): success, minor, serious or major failure."""

    SUCCESS = "success"
    MINOR_FAILURE = "minor_failure"
    SERIOUS_FAILURE = "serious_failure"
    MAJOR_FAILURE = "major_failure"

    @property
    def dicom_code(self) -> int:
        """The numeric indicator DICOM uses: 0, 4, 8 or 12."""
        return {"success": 0, "minor_failure": 4, "serious_failure": 8, "major_failure": 12}[self.value]


def _default_process() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return f"{program}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Actor:
    """Who or what caused the event: a DICOM peer (AE title, host), an API user, a radtrace process."""

    ae_title: str | None = None
    host: str | None = None
    user: str | None = None
    process: str = field(default_factory=_default_process)


@dataclass(frozen=True)
class AuditEvent:
    """One event to append. ``payload`` should be JSON data (str, int, float, bool, None, lists, dicts); whatever
    it holds, and whatever text any field holds, the event is recorded (:mod:`radtrace.audit.recordable` says how).

    Patient identifiers go in ``patient_id`` only when the event needs them (e.g. a query by patient
    ID); inference events carry the model identity, prompt, input hashes and the full raw output in
    ``payload``, with ``model_name``/``model_version``/``labels`` lifted out so QA can filter on them.
    """

    type: EventType
    actor: Actor
    outcome: Outcome = Outcome.SUCCESS
    study_uid: str | None = None
    accession: str | None = None
    patient_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    labels: Sequence[str] = ()
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, EventType):
            raise TypeError(f"audit event type must be an EventType, not {self.type!r}")
        if not isinstance(self.outcome, Outcome):
            raise TypeError(f"audit outcome must be an Outcome, not {self.outcome!r}")
        if any("," in label for label in self.labels):
            raise ValueError("audit labels must not contain commas")


def canonical_json(value: Any) -> str:
    """The one serialisation hashed into the chain: sorted keys, no spaces, UTF-8, no NaN.

    Raises ``ValueError`` for anything that is not plain JSON data, so a payload cannot hash
    differently on another machine (no ``default=str`` fallbacks).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except TypeError as exc:
        raise ValueError(f"audit payload is not plain JSON data: {exc}") from exc
