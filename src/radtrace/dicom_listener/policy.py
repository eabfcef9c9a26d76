"""Who may associate, and when the listener must refuse work: pure decisions over plain values.

Association rejections follow PS3.8 9.3.4 (A-ASSOCIATE-RJ): *result* 1 permanent / 2 transient,
*source* 1 service user / 3 service provider (presentation related), and the diagnostic. The
pynetdicom handler in :mod:`radtrace.dicom_listener.handlers` only gathers the request's facts,
asks :func:`check_association` and sends what it returns.

C-STORE statuses are from PS3.4 B.2.3 (Storage Service Class) and PS3.7 C.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from radtrace.config import CallerRule, ListenerSettings, ae_title_problem

__all__ = [
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_IMAGE_TOO_LARGE",
    "STATUS_MISSING_IDENTIFIERS",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_PIXEL_MISMATCH",
    "STATUS_PROCESSING_FAILURE",
    "STATUS_SOP_CLASS_MISMATCH",
    "STATUS_SUCCESS",
    "AssociationRequest",
    "Rejection",
    "caller_allowed",
    "caller_rules",
    "check_association",
    "has_room",
]

STATUS_SUCCESS: Final = 0x0000
#: Refused: Out of Resources (PS3.4 B.2.3): low disk; the sender should retry later.
STATUS_OUT_OF_RESOURCES: Final = 0xA700
#: Error: Cannot Understand (0xCxxx): the dataset could not be parsed; it is quarantined.
STATUS_CANNOT_UNDERSTAND: Final = 0xC210
#: Error: Cannot Understand: a type 1 identifier (Study/SOP Instance UID) is missing or does not match.
STATUS_MISSING_IDENTIFIERS: Final = 0xC211
#: Failure: Processing Failure (PS3.7 C.4.2): radtrace could not record the instance (e.g. database down).
STATUS_PROCESSING_FAILURE: Final = 0x0110
#: Error: Data Set Does Not Match SOP Class (PS3.4 B.2.3): its SOP Class UID is not the context's abstract syntax.
STATUS_SOP_CLASS_MISMATCH: Final = 0xA900
#: Error: Cannot Understand: the image is larger than ``listener.max_image_pixels`` (header or codestream).
STATUS_IMAGE_TOO_LARGE: Final = 0xC212
#: Error: Cannot Understand: the compressed codestream declares another size than the header, or none.
STATUS_PIXEL_MISMATCH: Final = 0xC213

# (result, source, diagnostic) triples, PS3.8 Table 9-21
PERMANENT: Final = 1
TRANSIENT: Final = 2
SERVICE_USER: Final = 1
SERVICE_PROVIDER_ACSE: Final = 2
SERVICE_PROVIDER_PRESENTATION: Final = 3
NO_REASON_GIVEN: Final = 1
#: The smallest P-DATA-TF body that holds a PDV: item length (4), context ID, control header, one byte.
MIN_PEER_PDU: Final = 7
CALLING_AE_NOT_RECOGNIZED: Final = 3
CALLED_AE_NOT_RECOGNIZED: Final = 7
TEMPORARY_CONGESTION: Final = 1
LOCAL_LIMIT_EXCEEDED: Final = 2


#: Longest allow list written out whole in a log line (the log cuts messages at 8,000 characters).
MAX_PASTED_LIST: Final = 4000
TOO_SMALL_PDU: Final = "maximum PDU length missing or too small for any answer"


@dataclass(frozen=True)
class AssociationRequest:
    """The facts of an A-ASSOCIATE-RQ that the policy looks at."""

    calling_ae: str
    called_ae: str
    peer_host: str
    active_associations: int
    """Associations this listener holds as acceptor, this one included."""
    free_bytes: int
    active_from_source: int = 1
    """Associations this listener holds from the request's source address, this one included."""
    peer_max_pdu: int | None = 0
    """The largest P-DATA-TF the requestor takes (its maximum length; 0: no limit; ``None``: not given,
    though the user information item must carry it, PS3.8 D.1)."""
    plain_port: bool = False
    """Whether it came in on ``listener.plain_port`` (without TLS, beside a TLS ``listener.port``)."""


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send, with a short reason for the audit log."""

    result: int
    source: int
    diagnostic: int
    reason: str


def caller_allowed(calling_ae: str, peer_host: str, rules: Sequence[CallerRule]) -> bool:
    """Whether a rule admits this calling AE from this address (a rule without ``host`` admits any)."""
    title = calling_ae.strip()
    for rule in rules:
        if rule.ae_title != title:
            continue
        if rule.host is None:
            return True
        try:
            if ipaddress.ip_address(peer_host) in ipaddress.ip_network(rule.host, strict=False):
                return True
        except ValueError:  # the peer address is not an IP address (should not happen over TCP)
            continue
    return False


def caller_rules(request: AssociationRequest, settings: ListenerSettings) -> tuple[list[CallerRule], str] | None:
    """The caller rules that judge this request and the setting that holds them, or None when any caller is admitted.

    On ``listener.plain_port`` a ``plain_allowed_callers`` list, once set, is the only rule: ``accept_unknown_callers``
    does not widen it (an AE kept to TLS stays so). Unset, the plain port judges as ``listener.port`` does.
    """
    if request.plain_port and settings.plain_allowed_callers is not None:
        return settings.plain_allowed_callers, "plain_allowed_callers"
    if settings.accept_unknown_callers:
        return None
    return settings.allowed_callers, "allowed_callers"


def how_to_allow(rejection: Rejection, request: AssociationRequest, settings: ListenerSettings) -> str:
    """The setting that would have admitted this request, for the refusal's log line (no patient data in it)."""
    if rejection.diagnostic == CALLING_AE_NOT_RECOGNIZED:
        judged = caller_rules(request, settings)
        rules, name = judged if judged is not None else (settings.allowed_callers, "allowed_callers")
        allow = _allow_list_with(request.calling_ae.strip(), request.peer_host, rules, name)
        if name == "plain_allowed_callers" and caller_allowed(
            request.calling_ae, request.peer_host, settings.allowed_callers
        ):
            return f"it is admitted over TLS on listener.port {settings.port}, not without TLS on this port; {allow}"
        return allow
    if rejection.reason == TOO_SMALL_PDU:
        offered = "none" if request.peer_max_pdu is None else f"{request.peer_max_pdu} bytes"
        return f"the sender offered a maximum PDU length of {offered}; it must offer 0 (no limit) or {MIN_PEER_PDU}+"
    if rejection.diagnostic == CALLED_AE_NOT_RECOGNIZED:
        called = settings.ae_title
        return f"the caller must address listener.ae_title {called!r} (or set listener.check_called_ae = false)"
    if rejection.reason == "too many concurrent associations from this source":
        return (
            f"one source may hold {settings.per_source_associations} associations at once "
            f"(listener.max_associations_per_source, of listener.max_associations {settings.max_associations})"
        )
    if rejection.diagnostic == LOCAL_LIMIT_EXCEEDED:
        return f"listener.max_associations is {settings.max_associations}"
    return f"listener.min_free_bytes is {settings.min_free_bytes}"


def _allow_list_with(calling_ae: str, peer_host: str, in_force: Sequence[CallerRule], name: str) -> str:
    """The whole allow list, the rules in force plus one for this caller, as a value to paste into a shell.

    Pasting only the new rule would replace the list and lock out every other modality. The JSON is
    ASCII with ``'`` written ``\\u0027``: whatever the title, it stays one single-quoted shell word.
    """
    problem = ae_title_problem(calling_ae)
    if problem is not None:  # no setting can admit it: say so rather than print a value that fails to load
        return f"the calling AE title is not a valid AE title ({problem}); the sender must use another"
    rules = [rule.model_dump(exclude_none=True) for rule in in_force]
    rules.append({"ae_title": calling_ae, "host": peer_host})
    value = json.dumps(rules, ensure_ascii=True, separators=(",", ":")).replace("'", "\\u0027")
    if len(value) > MAX_PASTED_LIST:  # the log would cut it: a value that fails to load helps no one
        title, host = (json.dumps(text, ensure_ascii=True) for text in (calling_ae, peer_host))
        return (
            f"to allow it, add one more [[listener.{name}]] to the config file, with ae_title = {title} "
            f"and host = {host} (the {len(rules) - 1} rules in force are too many to repeat here)"
        )
    return (
        f"to allow it, add the caller to listener.{name}, keeping the {len(rules) - 1} rule(s) in force "
        f"(RADTRACE_LISTENER__{name.upper()}='{value}', or one more [[listener.{name}]] in the config file)"
    )


def has_room(free_bytes: int, settings: ListenerSettings) -> bool:
    """Whether the spool's file system has more than ``min_free_bytes`` free."""
    return free_bytes >= settings.min_free_bytes


def check_association(request: AssociationRequest, settings: ListenerSettings) -> Rejection | None:
    """The rejection to send for this request, or ``None`` to go on with negotiation.

    Checked in order: calling AE (and its source address; on ``listener.plain_port`` against
    :func:`caller_rules`), called AE, the requestor's maximum PDU
    length, concurrent associations from all sources, then from the request's own, disk.
    """
    judged = caller_rules(request, settings)
    if judged is not None and not caller_allowed(request.calling_ae, request.peer_host, judged[0]):
        return Rejection(PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED, "calling AE title not allowed")
    if settings.check_called_ae and request.called_ae.strip() != settings.ae_title:
        return Rejection(PERMANENT, SERVICE_USER, CALLED_AE_NOT_RECOGNIZED, "called AE title is not ours")
    if request.peer_max_pdu is None or 0 < request.peer_max_pdu < MIN_PEER_PDU:
        return Rejection(PERMANENT, SERVICE_PROVIDER_ACSE, NO_REASON_GIVEN, TOO_SMALL_PDU)
    if request.active_associations > settings.max_associations:
        return Rejection(
            TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED, "too many concurrent associations"
        )
    if request.active_from_source > settings.per_source_associations:
        return Rejection(
            TRANSIENT,
            SERVICE_PROVIDER_PRESENTATION,
            LOCAL_LIMIT_EXCEEDED,
            "too many concurrent associations from this source",
        )
    if not has_room(request.free_bytes, settings):
        return Rejection(TRANSIENT, SERVICE_PROVIDER_PRESENTATION, TEMPORARY_CONGESTION, "spool disk nearly full")
    return None
