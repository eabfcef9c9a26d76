"""C-STORE SCU: send the SR to a PACS, and count it delivered only on a success or warning status.

Status classes (PS3.4 B.2.3, PS3.7 C): ``0000`` success; the warning class (PS3.7 C.4: ``0001``, ``Bxxx``, ``0107``
and ``0116``; C-STORE's own are ``B000``/``B006``/``B007``) stored (the warning is returned so it can be recorded);
``A7xx`` out of resources, retryable; ``A9xx``
data set does not match the SOP class, ``Cxxx`` cannot understand, ``0122`` SOP class not supported
and ``0124`` not authorised are permanent, and so is an association the PACS rejects permanently (A-ASSOCIATE-RJ
result 1, PS3.8 9.3.4: an AE title it does not know; :class:`AssociationRejectedError`, whose reason says what to
change); any other failure, a missing response, an association rejected transiently, aborted or that cannot be
opened are retryable, and so is an answer that is not the C-STORE-RSP to our request (a C-ECHO-RSP, a C-STORE-RSP
to another message ID or about another instance: pynetdicom takes the first DIMSE message as the answer, whatever
it is). Every pynetdicom error leaves as a radtrace error. A refused association is said with its A-ASSOCIATE-RJ
codes and PS3.8 table 9-21's words, as ``radtrace send`` says it; a peer that closes without a word, or answers in
something other than DICOM (an HTTP server's ``400``), is said so at once with its first line quoted safely
(:meth:`radtrace.dicom_listener.scu.PeerAnswer.no_answer`), not left to the ACSE timeout.

Bounded whatever the PACS sends (:class:`radtrace.dicom_listener.scu.PduGuard`, as ``radtrace send`` is): a PDU
claiming more than :data:`MAX_PEER_PDU` bytes is not read (pynetdicom would buffer all it claims: up to 4 GiB for one
A-ASSOCIATE-AC), a PACS that accepts PDUs of fewer than :data:`MIN_PACS_PDU` bytes is not sent to (pynetdicom queues
every P-DATA of a message at once: a 1 MB SR in 8-byte PDUs is half a million queued primitives, sent one by one long
past any timeout), and one that never answers the A-RELEASE-RQ is aborted within the timeout
(:func:`radtrace.dicom_listener.scu.release`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from radtrace.config import DicomDestination
from radtrace.dicom_listener.scu import (
    MAX_PEER_BYTES,
    MAX_PEER_PDU,
    DimseAnswers,
    PduGuard,
    PeerAnswer,
    Rejection,
    close_socket,
    release,
)
from radtrace.errors import DispatchError, DispatchRejectedError, PeerUnavailableError

__all__ = [
    "LONGEST_STORE_S",
    "MAX_PEER_BYTES",
    "MAX_PEER_PDU",
    "STORE_TIMEOUT_S",
    "AssociationRejectedError",
    "StoreResult",
    "describe_destination",
    "store_instance",
]

log = logging.getLogger(__name__)

STORE_TIMEOUT_S: Final = 30.0
#: The longest one store may take: connect, association, the C-STORE's response and the release, each timed apart.
LONGEST_STORE_S: Final = 4 * STORE_TIMEOUT_S
#: PS3.7 C.4, the warning status class: the instance was stored (``Bxxx`` is the range).
_WARNINGS: Final = frozenset({0x0001, 0x0107, 0x0116})
_PERMANENT: Final = {0x0122, 0x0124}
_COMMENT_CHARS: Final = 64  # an Error Comment is an LO; a PACS may send kilobytes
_COMPREHENSIVE_3D_SR: Final = "1.2.840.10008.5.1.4.1.1.88.34"
#: The Message ID of our one C-STORE on an association; the PACS's answer must name it.
_MESSAGE_ID: Final = 1
#: The smallest maximum PDU length a PACS may accept (dcmtk's ASC_MINIMUMPDUSIZE); 0 is no limit.
MIN_PACS_PDU: Final = 4096


@dataclass(frozen=True)
class StoreResult:
    """A stored instance: the status the peer answered, and its warning if it was one."""

    status: int
    warning: str | None = None


def describe_destination(destination: DicomDestination) -> str:
    """``AE@host:port``: how a PACS destination is named in the outbox, audit and errors."""
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


def _quoted_comment(comment: str) -> str:
    """The PACS's Error Comment for a reason: at most an LO's 64 characters, quoted (repr escapes controls)."""
    return repr(comment[:_COMMENT_CHARS] + ("…" if len(comment) > _COMMENT_CHARS else ""))


def _not_accepted(where: str, sop_class: str) -> DispatchRejectedError:
    hint = " (try reporting.sr_flavour=comprehensive)" if sop_class == _COMPREHENSIVE_3D_SR else ""
    return DispatchRejectedError(f"{where} does not accept SOP class {sop_class}{hint}")


def _classify(status: int, comment: str, where: str) -> StoreResult:
    detail = f"status 0x{status:04X}" + (f" ({_quoted_comment(comment)})" if comment else "")
    if status == 0x0000:
        return StoreResult(status)
    if status in _WARNINGS or 0xB000 <= status <= 0xBFFF:
        # the status only: the Error Comment is the PACS's text (it may echo the patient); the reason keeps it, quoted
        log.warning("PACS %s stored the SR with a warning: status 0x%04X", where, status)
        return StoreResult(status, warning=detail)
    if status in _PERMANENT or 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        raise DispatchRejectedError(f"{where} refused the SR: {detail}")
    raise DispatchError(f"{where} did not store the SR: {detail}")


def _tune_socket(assoc: Any, timeout_s: float) -> None:
    """Turn Nagle off on the association's socket: the C-STORE's last PDU must not wait for a delayed ACK
    (about 33 ms per SR against dcmtk's storescp; pynetdicom leaves it on). And give it a timeout: pynetdicom
    clears it after connecting, so a PACS that stops reading mid-transfer (a full TCP window) blocked its send
    for ever, and its abort after the DIMSE timeout waited for that send: the store never returned."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout_s)


class AssociationRejectedError(DispatchRejectedError):
    """The PACS rejected the association *permanently* (A-ASSOCIATE-RJ result 1, PS3.8 9.3.4): asking again unchanged
    cannot help, so the delivery is not retried; it waits, failed with this reason, until someone changes the
    configuration (ours or the PACS's) and asks again (``radtrace dispatch retry DESTINATION``)."""

    def __init__(self, reason: str, rejection: Rejection, destination: str) -> None:
        super().__init__(reason)
        self.rejection = rejection
        self.destination = destination

    def __reduce__(self) -> tuple[type[AssociationRejectedError], tuple[str, Rejection, str]]:
        return type(self), (self.reason, self.rejection, self.destination)


def _remedy(rejection: Rejection, destination: DicomDestination, calling_ae_title: str) -> str:
    """What to change for a permanent rejection, by its source and reason (PS3.8 table 9-21)."""
    match (rejection.source, rejection.reason):
        case (1, 3):
            what = (
                f"the PACS does not admit calling AE {calling_ae_title!r} from this host: add it to the PACS's "
                "known AEs, or set dispatch.calling_ae_title to one it admits"
            )
        case (1, 7):
            what = (
                f"the PACS does not answer to AE title {destination.ae_title!r}: set dispatch.pacs' ae_title to "
                f"its own (some PACS say this of a calling AE {calling_ae_title!r} they do not know, too)"
            )
        case _:
            what = (
                f"check dispatch.pacs' ae_title {destination.ae_title!r} and that the PACS admits calling AE "
                f"{calling_ae_title!r} from this host"
            )
    return f"{what}; then: radtrace dispatch retry {describe_destination(destination)}"


def _not_established(
    assoc: Any,
    answer: PeerAnswer,
    destination: DicomDestination,
    calling_ae_title: str,
    sop_class: str,
    waited_s: float,
) -> Exception:
    """Why no association: the PACS's A-ASSOCIATE-RJ with its codes and PS3.8 table 9-21's words (e.g. '1/1/7:
    rejected permanent by the service user: called AE title not recognised' says which setting to change). A
    permanent one (result 1) is :class:`AssociationRejectedError`, not retried; a transient one (2) is retried."""
    where = describe_destination(destination)
    rejection = answer.rejection(assoc)
    if rejection is not None:
        said = f"{where} rejected the association (A-ASSOCIATE-RJ {rejection.codes}: {rejection.words()})"
        if rejection.permanent:
            return AssociationRejectedError(
                f"{said}: not retried; {_remedy(rejection, destination, calling_ae_title)}", rejection, where
            )
        return PeerUnavailableError(said)
    no_answer = answer.no_answer(where)  # closed without a word, or answered in something else (HTTP's 400)
    if no_answer is not None:
        return PeerUnavailableError(no_answer)
    if any(cx.abstract_syntax == sop_class for cx in assoc.rejected_contexts):
        # the PACS accepted the association but not our only context: pynetdicom aborts it; no retry can help
        return _not_accepted(where, sop_class)
    silence = answer.silence(where, waited_s)  # no connection, or no answer to the A-ASSOCIATE-RQ in time
    return PeerUnavailableError(silence or f"no association with {where} (aborted)")


def store_instance(
    payload: bytes,
    destination: DicomDestination,
    *,
    calling_ae_title: str,
    timeout_s: float = STORE_TIMEOUT_S,
) -> StoreResult:
    """Send one Part 10 file by C-STORE and return the peer's (success or warning) status."""
    # Never log identifiers (patient names, IDs) from DIMSE messages.
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    where = describe_destination(destination)
    try:
        dataset = pydicom.dcmread(io.BytesIO(payload))
    except (InvalidDicomError, ValueError, EOFError) as exc:
        raise DispatchRejectedError(f"the payload for {where} is not a readable DICOM file: {exc}") from exc

    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    ae.add_requested_context(dataset.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    options: dict[str, Any] = {"ae_title": destination.ae_title}
    if destination.tls:
        options["tls_args"] = (ssl.create_default_context(ssl.Purpose.SERVER_AUTH), destination.host)
    # The RJ as the PACS sent it (scu.PeerAnswer): one with a reason the standard reserves (1/1/5, say) no
    # longer kills pynetdicom's reader thread and leaves the store to the ACSE timeout.
    answer, guard, answers = PeerAnswer(), PduGuard(), DimseAnswers()
    options["evt_handlers"] = answer.handlers() + guard.handlers() + answers.handlers()
    started = time.monotonic()
    try:
        assoc = ae.associate(destination.host, destination.port, **options)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PeerUnavailableError(f"cannot associate with {where}: {exc}") from exc
    if not assoc.is_established:
        close_socket(assoc)
        waited_s = time.monotonic() - started
        if (too_long := guard.reason(where)) is not None:
            raise PeerUnavailableError(too_long)
        raise _not_established(assoc, answer, destination, calling_ae_title, str(dataset.SOPClassUID), waited_s)
    _tune_socket(assoc, timeout_s)
    try:
        if not any(cx.abstract_syntax == dataset.SOPClassUID for cx in assoc.accepted_contexts):
            raise _not_accepted(where, str(dataset.SOPClassUID))
        accepts = assoc.acceptor.maximum_length
        if accepts is not None and 0 < accepts < MIN_PACS_PDU:
            assoc.abort()  # nothing was sent: no release to wait for
            raise DispatchRejectedError(
                f"{where} accepts PDUs of at most {accepts} bytes (fewer than {MIN_PACS_PDU}): not sent; set the "
                f"PACS's maximum PDU length to {MIN_PACS_PDU} or more (0: no limit), then: radtrace dispatch retry "
                f"{where}"
            )
        try:
            response = assoc.send_c_store(dataset, msg_id=_MESSAGE_ID)
        except (OSError, RuntimeError, ValueError, AttributeError) as exc:
            raise DispatchError(f"C-STORE to {where} failed: {exc}") from exc
        if "Status" not in response:
            if (too_long := guard.reason(where)) is not None:
                raise DispatchError(too_long)
            raise DispatchError(f"no C-STORE response from {where} (timeout or abort)")
        if (not_ours := answers.not_ours(_MESSAGE_ID, str(dataset.SOPInstanceUID), where)) is not None:
            raise DispatchError(not_ours)
        return _classify(int(response.Status), str(response.get("ErrorComment", "") or ""), where)
    finally:
        release(assoc, where, timeout_s)
