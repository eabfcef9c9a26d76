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
it is). Every pynetdicom error leaves as a radtrace error. A failure status, an association rejected (for good or
for now), our SOP class or a PDU size refused is the PACS's answer that it stored nothing: a
:class:`.outcomes.PeerRefusedError` (or ``PeerRefusedForNowError``/``PeerBusyError``, retried), recorded ``refused``
by the outbox; a pending or unknown status, no answer or an answer cut off may have left the SR stored
(``failed``). A refused association is said with its A-ASSOCIATE-RJ codes and PS3.8 table 9-21's words, as
``radtrace send`` says it; a peer that closes without a word, or answers in
something other than DICOM (an HTTP server's ``400``), is said so at once with its first line quoted safely
(:meth:`radtrace.dicom_listener.scu.PeerAnswer.no_answer`), not left to the ACSE timeout.

Bounded whatever the PACS sends (:class:`radtrace.dicom_listener.scu.PduGuard`, as ``radtrace send`` is): a PDU
claiming more than :data:`MAX_PEER_PDU` bytes is not read (pynetdicom would buffer all it claims: up to 4 GiB for one
A-ASSOCIATE-AC), a PACS that accepts PDUs of fewer than :data:`MIN_PACS_PDU` bytes is not sent to (pynetdicom queues
every P-DATA of a message at once: a 1 MB SR in 8-byte PDUs is half a million queued primitives, sent one by one long
past any timeout), and one that never answers the A-RELEASE-RQ is aborted within the timeout
(:func:`radtrace.dicom_listener.scu.release`, which closes the socket whatever became of the association: pynetdicom
leaves it open when the PACS reset the connection).

Over TLS (``dispatch.pacs[].tls``; PS3.15 B.1/B.9, BCP 195) the PACS's certificate is verified against
``ca_bundle`` (unset: this machine's CA store) for ``server_name`` (default: ``host``), and ``certificate`` /
``private_key`` are our client certificate for a PACS that asks for one (:func:`pacs_tls_context`; the dispatcher
takes renewed files from the next association, :mod:`radtrace.reporting.dispatch.senders`). A handshake that fails
says why and which setting to check (the PACS's certificate refused, ours refused or none sent, a port that does
not speak TLS), in the delivery's reason and the log: pynetdicom only logged "unable to connect to remote".
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final, cast

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
from radtrace.dicom_listener.scu_reads import ReadDeadline
from radtrace.errors import DispatchError, DispatchRejectedError, PeerUnavailableError
from radtrace.reporting.dispatch.outcomes import PeerBusyError, PeerRefusedError, PeerRefusedForNowError
from radtrace.tls_keys import tls_context

__all__ = [
    "LONGEST_STORE_S",
    "MAX_PEER_BYTES",
    "MAX_PEER_PDU",
    "STORE_TIMEOUT_S",
    "AssociationRejectedError",
    "StoreResult",
    "describe_destination",
    "pacs_tls_context",
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


def _not_accepted(where: str, sop_class: str) -> PeerRefusedError:
    hint = " (try reporting.sr_flavour=comprehensive)" if sop_class == _COMPREHENSIVE_3D_SR else ""
    return PeerRefusedError(f"{where} does not accept SOP class {sop_class}{hint}", destination=where,
                            code="context", refused=f"SOP class {sop_class}")  # fmt: skip


def _classify(status: int, comment: str, where: str) -> StoreResult:
    detail = f"status 0x{status:04X}" + (f" ({_quoted_comment(comment)})" if comment else "")
    if status == 0x0000:
        return StoreResult(status)
    if status in _WARNINGS or 0xB000 <= status <= 0xBFFF:
        # the status only: the Error Comment is the PACS's text (it may echo the patient); the reason keeps it, quoted
        log.warning("PACS %s stored the SR with a warning: status 0x%04X", where, status)
        return StoreResult(status, warning=detail)
    # a failure status (PS3.7 C.4): the PACS answered, and stored nothing (outcomes.PeerRefusalError)
    if status in _PERMANENT or 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        raise PeerRefusedError(f"{where} refused the SR: {detail}", destination=where, code=f"0x{status:04X}",
                               refused="the instance")  # fmt: skip
    if _failure_for_now(status):
        raise PeerRefusedForNowError(f"{where} did not store the SR: {detail}", destination=where,
                                     code=f"0x{status:04X}", refused="the instance")  # fmt: skip
    # a status no C-STORE may answer (a pending one, an unknown one): what the PACS did is not known
    raise DispatchError(f"{where} did not store the SR: {detail}")


def _failure_for_now(status: int) -> bool:
    """A failure status that a later attempt may not meet (PS3.7 C.4): ``A7xx`` out of resources, a ``01xx``/``02xx``
    general failure (0110 processing failure, 0211 unrecognised operation…), ``FE00`` cancelled."""
    return 0xA700 <= status <= 0xA7FF or 0x0100 <= status <= 0x02FF or status == 0xFE00


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


class _UndecodableAnswer:
    """An answer pynetdicom cannot decode ends the association at once, saying so. pynetdicom decodes a DIMSE message
    in its reader thread and handles only some failures (an invalid message: A-ABORT): a command set without a Command
    Field raised there and killed the thread (its traceback on stderr, outside the log's escaping), and the store
    waited out the DIMSE timeout to say 'no C-STORE response (timeout or abort)'. Such an error is now answered as
    pynetdicom answers an invalid PDU (Evt19: A-ABORT) and named in the reason."""

    def __init__(self) -> None:
        self.error: str | None = None

    def watch(self, assoc: Any) -> None:
        """Wrap ``assoc``'s DIMSE receiver (the reader thread calls it for each P-DATA): before anything is sent."""
        dimse = assoc.dimse
        receive = dimse.receive_primitive

        def receive_primitive(primitive: Any) -> None:
            try:
                receive(primitive)
            except Exception as exc:  # whatever the PACS's bytes made pynetdicom raise
                self.error = type(exc).__name__
                dimse.message = None
                assoc.dul.event_queue.put("Evt19")  # an invalid PDU: pynetdicom's own answer (A-ABORT)

        dimse.receive_primitive = receive_primitive

    def reason(self, where: str) -> str | None:
        """Why there was no response, once an answer could not be decoded; else None."""
        if self.error is None:
            return None
        return f"{where} answered with a DIMSE message that cannot be decoded ({self.error}): aborted"


class AssociationRejectedError(PeerRefusedError):
    """The PACS rejected the association *permanently* (A-ASSOCIATE-RJ result 1, PS3.8 9.3.4): asking again unchanged
    cannot help, so the delivery is not retried; it waits, failed with this reason, until someone changes the
    configuration (ours or the PACS's) and asks again (``radtrace dispatch retry DESTINATION``). Nothing was sent:
    a refusal (:mod:`.outcomes`)."""

    def __init__(self, reason: str, rejection: Rejection, destination: str) -> None:
        super().__init__(reason, destination=destination, code=rejection.codes, refused="the association")
        self.rejection = rejection

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
        return PeerBusyError(said, destination=where, code=rejection.codes, refused="the association")
    no_answer = answer.no_answer(where)  # closed without a word, or answered in something else (HTTP's 400)
    if no_answer is not None:
        return PeerUnavailableError(no_answer)
    if any(cx.abstract_syntax == sop_class for cx in assoc.rejected_contexts):
        # the PACS accepted the association but not our only context: pynetdicom aborts it; no retry can help
        return _not_accepted(where, sop_class)
    silence = answer.silence(where, waited_s)  # no connection, or no answer to the A-ASSOCIATE-RQ in time
    return PeerUnavailableError(silence or f"no association with {where} (aborted)")


class _PacsTlsSocket(ssl.SSLSocket):
    """The TLS socket of an association with a PACS: keeps the error of its handshake, or of a read (TLS 1.3 says a
    refused client certificate after the client's handshake), which pynetdicom only logs before closing."""

    tls_error: OSError | None = None

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except OSError as exc:
            self.tls_error = exc
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            self.tls_error = self.tls_error or exc
            raise


class _Wrapping:
    """What pynetdicom is given as the TLS context of one association: wraps with ``context`` and keeps the socket,
    whose TLS error then says why there is no association."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.wrapped: ssl.SSLSocket | None = None

    def wrap_socket(self, sock: socket.socket, server_side: bool = False, server_hostname: str | None = None) -> Any:
        self.wrapped = self.context.wrap_socket(sock, server_side=server_side, server_hostname=server_hostname)
        return self.wrapped

    @property
    def error(self) -> OSError | None:
        return getattr(self.wrapped, "tls_error", None)


def pacs_tls_context(destination: DicomDestination, setting: str = "dispatch.pacs[]") -> ssl.SSLContext | None:
    """The client context of a PACS destination (None: not over TLS): TLS 1.2+, its certificate verified against
    ``ca_bundle`` (unset: this machine's CA store), our client certificate if given. It never asks for a passphrase:
    a key with one, or a file it cannot load, is a :class:`~radtrace.errors.ConfigError` naming ``setting``."""
    if not destination.tls:
        return None
    context = tls_context(
        destination.ca_bundle, destination.certificate, destination.private_key, setting=f"{setting}."
    )
    context.sslsocket_class = _PacsTlsSocket
    return context


def _tls_why(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc)
    return str(exc.strerror or exc)


def _tls_refused(exc: OSError, where: str, setting: str, server_name: str) -> PeerUnavailableError:
    """Why the TLS session with the PACS failed, and which setting to check (retryable: a PACS's certificate or
    trust list may be corrected on its side)."""
    why = _tls_why(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        said = (
            f"{where}: the PACS's TLS certificate was refused ({why}): {setting}.ca_bundle (in "
            f"RADTRACE_DISPATCH__PACS; unset: this machine's CA store) must hold the CA that signed it, and "
            f"{setting}.server_name (now {server_name!r}) a name in it; nothing is sent until it verifies"
        )
    elif any(word in str(getattr(exc, "reason", "") or "") for word in ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE")):
        said = (
            f"{where} refused our TLS client certificate, or asked for one and got none ({why}): "
            f"{setting}.certificate and private_key (in RADTRACE_DISPATCH__PACS) must be a certificate issued by a "
            "CA the PACS trusts, and valid now; nothing was sent"
        )
    elif isinstance(exc, TimeoutError):
        said = f"{where} did not complete a TLS handshake in time: a PACS port that takes plain DICOM never answers TLS"
    else:
        said = (
            f"{where} did not complete a TLS handshake ({why}): {setting}.tls is on; a PACS that takes plain DICOM on "
            "that port, or one that refuses our client certificate (it may just close), fails so: check the PACS's "
            f"TLS port and {setting}.certificate; nothing was sent"
        )
    log.warning("no TLS association: %s", said)  # the setting and the TLS alert only: no patient data
    return PeerUnavailableError(said)


def store_instance(
    payload: bytes,
    destination: DicomDestination,
    *,
    calling_ae_title: str,
    timeout_s: float = STORE_TIMEOUT_S,
    tls: ssl.SSLContext | None = None,
    setting: str = "dispatch.pacs[]",
) -> StoreResult:
    """Send one Part 10 file by C-STORE and return the peer's (success or warning) status. ``tls``: the context of
    a TLS destination (default: :func:`pacs_tls_context` built now); ``setting`` names it in reasons."""
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
    wrapping = None
    if destination.tls:
        context = tls if tls is not None else pacs_tls_context(destination, setting)
        assert context is not None
        context.sslsocket_class = _PacsTlsSocket  # a context not from pacs_tls_context: its errors kept too
        wrapping = _Wrapping(context)
        server_name = destination.server_name or destination.host
        options["tls_args"] = (cast("ssl.SSLContext", wrapping), server_name)
    # The RJ as the PACS sent it (scu.PeerAnswer): one with a reason the standard reserves (1/1/5, say) no
    # longer kills pynetdicom's reader thread and leaves the store to the ACSE timeout.
    answer, guard, answers = PeerAnswer(), PduGuard(), DimseAnswers()
    deadline = ReadDeadline(timeout_s)  # first: it replaces pynetdicom's read; the others wrap it, in this order
    options["evt_handlers"] = deadline.handlers() + answer.handlers() + guard.handlers() + answers.handlers()
    started = time.monotonic()
    try:
        assoc = ae.associate(destination.host, destination.port, **options)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PeerUnavailableError(f"cannot associate with {where}: {exc}") from exc
    if not assoc.is_established:
        close_socket(assoc)
        waited_s = time.monotonic() - started
        if wrapping is not None and (tls_error := wrapping.error) is not None:
            raise _tls_refused(tls_error, where, setting, destination.server_name or destination.host)
        if (too_long := guard.reason(where) or deadline.reason(where)) is not None:
            raise PeerUnavailableError(too_long)
        raise _not_established(assoc, answer, destination, calling_ae_title, str(dataset.SOPClassUID), waited_s)
    _tune_socket(assoc, timeout_s)
    undecodable = _UndecodableAnswer()
    undecodable.watch(assoc)
    try:
        if not any(cx.abstract_syntax == dataset.SOPClassUID for cx in assoc.accepted_contexts):
            raise _not_accepted(where, str(dataset.SOPClassUID))
        accepts = assoc.acceptor.maximum_length
        if accepts is not None and 0 < accepts < MIN_PACS_PDU:
            assoc.abort()  # nothing was sent: no release to wait for
            raise PeerRefusedError(
                f"{where} accepts PDUs of at most {accepts} bytes (fewer than {MIN_PACS_PDU}): not sent; set the "
                f"PACS's maximum PDU length to {MIN_PACS_PDU} or more (0: no limit), then: radtrace dispatch retry "
                f"{where}",
                destination=where,
                code="pdu",
                refused=f"PDUs over {accepts} bytes",
            )
        try:
            response = assoc.send_c_store(dataset, msg_id=_MESSAGE_ID)
        except (OSError, RuntimeError, ValueError, AttributeError) as exc:
            raise DispatchError(f"C-STORE to {where} failed: {exc}") from exc
        if "Status" not in response:
            if (too_long := guard.reason(where) or deadline.reason(where) or undecodable.reason(where)) is not None:
                raise DispatchError(too_long)
            if wrapping is not None and (tls_error := wrapping.error) is not None:
                raise _tls_refused(tls_error, where, setting, destination.server_name or destination.host)
            raise DispatchError(f"no C-STORE response from {where} (timeout or abort)")
        if (not_ours := answers.not_ours(_MESSAGE_ID, str(dataset.SOPInstanceUID), where)) is not None:
            raise DispatchError(not_ours)
        return _classify(int(response.Status), str(response.get("ErrorComment", "") or ""), where)
    finally:
        release(assoc, where, timeout_s)  # and closes its socket: a PACS that resets left it open (one fd per store)
