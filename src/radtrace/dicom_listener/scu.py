"""A C-STORE SCU for operators and tests: ``radtrace send PATH...``.

Files are sent as they are on disk (``STORE_SEND_CHUNKED_DATASET``: the dataset bytes after the file
meta go out unchanged, streamed, in their own transfer syntax), one association for all of them,
with one presentation context per SOP class and transfer syntax found (a compressed film is proposed in
its own syntax; a data set stored without file meta, as old CR files are, is sent in the syntax of its
encoding). Each file's DICOM status is
kept; a file refused at negotiation or unreadable is reported as such, never as a success.

No association is :class:`NoAssociationError`: an A-ASSOCIATE-RJ's result, source and reason as the peer sent them
(read from pynetdicom's A-ASSOCIATE primitive, never from its log text) and put in plain words per PS3.8 table 9-21
(:class:`Rejection`), or whether the peer answered with bytes that are no DICOM PDU.

Bounded whatever the peer sends (:class:`PduGuard`, which the dispatch C-STORE client uses too): a PDU claiming more
than :data:`MAX_PEER_PDU` bytes, or more than the association's byte budget in all, is refused before it is read
(pynetdicom would buffer all a PDU header claims: up to 4 GiB), and a PDU not sent in full within the timeout is cut
off (:class:`~radtrace.dicom_listener.scu_reads.ReadDeadline`, shared with it too). The release is bounded too
(:func:`release`): a peer that never answers the A-RELEASE-RQ is aborted after the timeout, with one log line.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import build_context

from radtrace.dicom_listener.scu_contexts import NO_CONTEXT, refused_contexts
from radtrace.dicom_listener.scu_files import (
    DICOMDIR_NOTE,
    MEDIA_STORAGE_DIRECTORY,
    NOT_DICOM_NOTE,
    bare_dataset,
    file_identity,
    says_dicom,
)
from radtrace.dicom_listener.scu_reads import ReadDeadline
from radtrace.errors import DicomInputError, PeerUnavailableError

__all__ = [
    "MAX_PEER_BYTES",
    "MAX_PEER_PDU",
    "DimseAnswers",
    "NoAssociationError",
    "PduGuard",
    "PeerAnswer",
    "Rejection",
    "SendResult",
    "answers_http",
    "close_socket",
    "quoted_answer",
    "release",
    "send_files",
    "summarise",
]

log = logging.getLogger(__name__)

MAX_REQUESTED_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1..255
#: A-ASSOCIATE-RJ PDU fields, PS3.8 table 9-21: Result, Source, and Reason/Diag. by Source.
REJECT_RESULTS = {1: "rejected permanent", 2: "rejected transient"}
REJECT_SOURCES = {
    1: "service user",
    2: "service provider (ACSE related function)",
    3: "service provider (presentation related function)",
}
REJECT_REASONS = {
    1: {
        1: "no reason given",
        2: "application context name not supported",
        3: "calling AE title not recognised",
        7: "called AE title not recognised",
    },
    2: {1: "no reason given", 2: "protocol version not supported"},
    3: {1: "temporary congestion", 2: "local limit exceeded"},
}
#: PDU types (PS3.8 table 9-11): a first byte outside them is no DICOM upper-layer answer.
PDU_TYPES = frozenset(range(0x01, 0x08))
QUOTED_CHARS = 40  # of a peer's answer, in a reason: enough for an HTTP status line
_UID_CHARS: Final = 64  # of a UID a peer names, in a reason (a UI holds 64)
#: The Message ID of each C-STORE ``radtrace send`` makes (one at a time): the peer's answer must name it.
_MESSAGE_ID: Final = 1
#: The reasons pynetdicom 3.0's A-ASSOCIATE primitive takes (its setter refuses the rest with a ValueError).
PYNETDICOM_REASONS = frozenset({1, 2, 3, 7})
#: The longest PDU read from a peer this side called: an A-ASSOCIATE-AC (as the listener bounds an RQ) or a
#: C-STORE-RSP, far above what either holds, and above the P-DATA length this side accepts (pynetdicom's 16382 bytes).
MAX_PEER_PDU: Final = 64 * 1024
#: The most read from a peer in one association that stores one instance: its A-ASSOCIATE-AC, one C-STORE-RSP and the
#: A-RELEASE-RP are a few KiB; pynetdicom keeps every fragment of a response whose last fragment never comes.
MAX_PEER_BYTES: Final = 1024 * 1024
#: What each further instance stored in the same association adds to that budget (a C-STORE-RSP with an LO Error
#: Comment is under 300 bytes).
PER_INSTANCE_BYTES: Final = 4096


class PduGuard:
    """Bounds what is read from a peer this side called, before it is read: a PDU that claims more than
    :data:`MAX_PEER_PDU` bytes (pynetdicom reads a PDU's length, then asks its socket for all of it at once) or more
    than ``max_bytes`` in all. The refusal is an OSError, which pynetdicom takes as the connection lost (the
    association ends at once); :meth:`reason` says why. Pass :meth:`handlers` to ``AE.associate``."""

    def __init__(self, max_bytes: int = MAX_PEER_BYTES) -> None:
        self.max_bytes = max_bytes
        self.read = 0
        self.refused: str | None = None

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._opened)]

    def _opened(self, event: Any) -> None:
        transport = event.assoc.dul.socket
        read = transport.recv

        def recv(nr_bytes: int) -> bytearray:
            if nr_bytes > MAX_PEER_PDU:
                self.refused = f"a PDU of {nr_bytes} bytes (more than {MAX_PEER_PDU} accepted)"
            elif self.read + nr_bytes > self.max_bytes:
                self.refused = f"more than {self.max_bytes} bytes in one association"
            if self.refused is not None:
                raise ConnectionAbortedError(self.refused)
            self.read += nr_bytes
            data: bytearray = read(nr_bytes)
            return data

        transport.recv = recv

    def reason(self, where: str) -> str | None:
        """``<where> sent <what>: not read``, once a PDU was refused; else None."""
        return None if self.refused is None else f"{where} sent {self.refused}: not read"


def release(assoc: Association, where: str, timeout_s: float) -> None:
    """Release ``assoc`` within ``timeout_s``, quietly: a peer that does not answer the A-RELEASE-RQ in half of it is
    aborted (the other half waits for it to close the connection), and one log line says so (another where the
    connection was gone at once: a peer that reset it did not leave the A-RELEASE-RQ unanswered). Its socket is closed
    in any case (:func:`close_socket`), an association already over (lost, aborted) too: every association this side
    calls ends here.

    pynetdicom alone took up to twice its timeout, and its network timeout raced the release's abort: the second
    abort (Evt15 in Sta13) killed its reader thread with an InvalidEventError traceback on stderr."""
    try:
        if not assoc.is_established:
            return
        assoc.network_timeout = None  # the idle timer's abort is what raced; the ACSE timeout below bounds the release
        assoc.acse_timeout = timeout_s / 2  # the A-RELEASE-RP, then (the ARTIM timer) the close after an A-ABORT
        started = time.monotonic()
        assoc.release()
        if assoc.is_released:
            return
        if time.monotonic() - started < timeout_s / 4:  # no wait: the connection was gone (a reset), not silent
            log.warning("%s closed or reset the connection instead of answering the A-RELEASE-RQ", where)
        else:
            log.warning(
                "%s did not answer the A-RELEASE-RQ in %.1f s: the association was aborted", where, timeout_s / 2
            )
    finally:
        close_socket(assoc)


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ's three codes as the peer sent them (PS3.8 9.3.4, table 9-21)."""

    result: int
    source: int
    reason: int

    @property
    def permanent(self) -> bool:
        """Result 1: trying again unchanged cannot help (2, transient, may pass)."""
        return self.result == 1

    @property
    def codes(self) -> str:
        """``result/source/reason``, as a conformance statement lists them (e.g. ``1/1/3``)."""
        return f"{self.result}/{self.source}/{self.reason}"

    @property
    def result_words(self) -> str:
        return REJECT_RESULTS.get(self.result, f"result {self.result} (not defined)")

    @property
    def source_words(self) -> str:
        return REJECT_SOURCES.get(self.source, f"source {self.source} (not defined)")

    @property
    def reason_words(self) -> str:
        """The reason for its source; a value the table reserves is said as such."""
        return REJECT_REASONS.get(self.source, {}).get(self.reason, f"reason {self.reason} (reserved)")

    def words(self) -> str:
        """E.g. ``rejected permanent by the service user: calling AE title not recognised``."""
        return f"{self.result_words} by the {self.source_words}: {self.reason_words}"


class NoAssociationError(PeerUnavailableError):
    """The peer did not establish the association. ``rejection``: its A-ASSOCIATE-RJ, where it sent one;
    ``not_dicom``: it answered the A-ASSOCIATE-RQ with bytes that are no DICOM PDU (an HTTP server, say)."""

    def __init__(
        self, reason: str, *, rejection: Rejection | None = None, not_dicom: bool = False, http: bool = False
    ) -> None:
        super().__init__(reason)
        self.rejection = rejection
        self.not_dicom = not_dicom
        self.http = http  # its first bytes were an HTTP status line's ("HTTP/")


class PeerAnswer:
    """What the peer first sent to an association this side requested, from pynetdicom's events: whether its
    state machine met a PDU that is no DICOM PDU (event 19, PS3.8 9.2) and the peer's first bytes (the DUL reads a
    PDU's type and length, 6 bytes, before it decodes anything: ``HTTP/1`` from an HTTP server). Pass
    :meth:`handlers` to ``AE.associate``; ``send`` and the dispatch C-STORE client (reporting.dispatch.cstore) do.

    An A-ASSOCIATE-RJ whose codes pynetdicom's primitive refuses (a reason the table reserves, an undefined
    source) kills its reader thread with a ValueError traceback and leaves the association to the ACSE timeout:
    such codes are handed to pynetdicom as "no reason given" (1) and kept here, as the peer sent them, in
    :attr:`reserved`."""

    _RJ_HEAD = 10  # type, reserved, length (4), reserved, result, source, reason
    _SAID = 64  # how much of a non-DICOM answer is kept to be quoted (its first line, at most QUOTED_CHARS of it)
    _SAID_WAIT_S = 0.2  # how long the rest of that first line is waited for, once its first bytes showed it

    def __init__(self) -> None:
        self.opened = False  # the TCP connection was made
        self.not_dicom = False
        self.closed = False  # the peer closed the connection before it sent a byte
        self.first = bytearray()
        self.said = b""  # the first bytes of an answer that is no DICOM PDU (quote them with quoted_answer)
        self.reserved: Rejection | None = None

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_FSM_TRANSITION, self._transition)]

    def _opened(self, event: Any) -> None:
        self.opened = True
        transport = event.assoc.dul.socket
        read = transport.recv

        def recv(nr_bytes: int) -> bytearray:
            if not self.first and not self.closed and not self.not_dicom:
                data = self._first_read(transport.socket, read, nr_bytes)
                if self.closed or self.not_dicom:
                    return data
            else:
                data = read(nr_bytes)
            if len(self.first) < self._RJ_HEAD:
                start = len(self.first)
                self.first += data[: self._RJ_HEAD - start]
                if len(self.first) == self._RJ_HEAD and self.first[0] == 0x03:
                    data = self._taken_by_pynetdicom(data, start)
            return data

        transport.recv = recv

    def _first_read(self, raw: socket.socket, read: Callable[[int], bytearray], nr_bytes: int) -> bytearray:
        """The peer's first bytes, looked at as they come. pynetdicom reads a PDU header's 6 bytes until it has them
        all: a peer that answered fewer and waits for more (a server waiting for the rest of a request) held the
        association until the connection's timeout. A first byte that is no PDU type (PS3.8 9.3.1: 01H-07H) ends it
        now: what arrived is handed on as it is (pynetdicom then reads an unknown PDU type, or too short a header:
        either ends the association at once), and the first line is kept in :attr:`said`."""
        data = bytearray(raw.recv(nr_bytes))  # what has arrived, up to nr_bytes; blocks as pynetdicom's read would
        if not data:
            self.closed = True
        elif data[0] not in PDU_TYPES:
            self.not_dicom = True
            self.said = bytes(data) + self._rest_of_line(raw, len(data))
        elif len(data) < nr_bytes:
            data += read(nr_bytes - len(data))
        return data

    def _rest_of_line(self, raw: socket.socket, have: int) -> bytes:
        """Up to :data:`_SAID` bytes of the answer in all, what arrives within :data:`_SAID_WAIT_S` (the association
        is over: nothing else reads them)."""
        rest = b""
        deadline = time.monotonic() + self._SAID_WAIT_S
        with contextlib.suppress(OSError, ValueError):
            while have + len(rest) < self._SAID and b"\n" not in rest:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([raw], [], [], left)[0]:
                    break
                chunk = raw.recv(self._SAID - have - len(rest))
                if not chunk:
                    break
                rest += chunk
        return rest

    def _taken_by_pynetdicom(self, data: bytearray, start: int) -> bytearray:
        result, source, reason = self.first[7:10]
        if result in REJECT_RESULTS and reason in PYNETDICOM_REASONS and source in REJECT_SOURCES:
            return data
        self.reserved = Rejection(result, source, reason)
        changed = bytearray(data)
        for offset, value in ((7, result if result in REJECT_RESULTS else 1), (8, 1), (9, 1)):
            if 0 <= offset - start < len(changed):
                changed[offset - start] = value
        return changed

    def _transition(self, event: Any) -> None:
        if event.fsm_event == "Evt19":
            self.not_dicom = True

    def rejection(self, assoc: Association) -> Rejection | None:
        """The A-ASSOCIATE-RJ of ``assoc`` (pass :meth:`handlers` to ``AE.associate``), as the peer sent it. Also
        one that pynetdicom read but did not act on: a peer that closes right after its RJ (dcmtk's storescp) is,
        now and then, seen to close first, and the association is then only "aborted"."""
        if assoc.is_established:
            return None
        if assoc.is_rejected:
            return self.reserved or _rejection(assoc) or self._sent_rejection()
        return self._sent_rejection()

    def _sent_rejection(self) -> Rejection | None:
        """The first PDU the peer sent, when it was a whole A-ASSOCIATE-RJ (type 3, length 4: PS3.8 9.3.4)."""
        head = bytes(self.first)
        if len(head) < self._RJ_HEAD or head[0] != 0x03 or head[2:6] != b"\x00\x00\x00\x04":
            return None
        return Rejection(head[7], head[8], head[9])

    @property
    def http(self) -> bool:
        """The peer answered with no DICOM PDU but an HTTP status line (``HTTP/``)."""
        return self.not_dicom and (self.said or bytes(self.first)).startswith(b"HTTP/")

    def no_answer(self, where: str) -> str | None:
        """Why there is no association when the peer did not answer in DICOM: ``where`` (who, at host:port) closed
        the connection without a word, or answered with something else, quoted (:func:`quoted_answer`); ``None``
        when it answered in DICOM or not at all."""
        if self.not_dicom:
            return f"{where} answered with something that is not DICOM: {quoted_answer(self.said or self.first)}"
        if self.closed:
            return f"{where} closed the connection without answering the A-ASSOCIATE-RQ"
        return None

    def silence(self, where: str, waited_s: float) -> str | None:
        """Why there is no association when the peer sent nothing at all: no connection, or a connection and no
        answer to the A-ASSOCIATE-RQ in ``waited_s`` (a DICOM peer answers at once; many HTTP servers wait for the
        end of a request line that never comes). ``None`` when it sent something."""
        if not self.opened:
            return f"cannot connect to {where} (connection refused, or the host does not answer)"
        if self.first or self.closed or self.not_dicom:
            return None
        return (
            f"{where} accepted the connection but did not answer the A-ASSOCIATE-RQ in {waited_s:.0f} s (a DICOM "
            "peer answers at once: is this its DICOM port?)"
        )


class DimseAnswers:
    """The first DIMSE message the peer sent since :meth:`expect` (EVT_DIMSE_RECV, before pynetdicom queues it):
    ``send_c_store`` takes the first DIMSE message that arrives, whatever it is, as its answer, so a C-ECHO-RSP or a
    C-STORE-RSP to another request would count as ours. Used by ``radtrace send`` and the PACS dispatcher
    (:mod:`radtrace.reporting.dispatch.cstore`)."""

    def __init__(self) -> None:
        self.first: tuple[str, int | None, str] | None = None

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_DIMSE_RECV, self._received)]

    def expect(self) -> None:
        """Forget what came before: the next message is the answer to the request about to be sent."""
        self.first = None

    def _received(self, event: Any) -> None:
        if self.first is not None:
            return
        command = getattr(event.message, "command_set", None)
        kind = type(event.message).__name__.replace("_", "-")  # C-STORE-RSP, C-ECHO-RSP ...
        try:
            responded_to = int(command.MessageIDBeingRespondedTo) if command is not None else None
        except (AttributeError, TypeError, ValueError):
            responded_to = None
        instance = str(getattr(command, "AffectedSOPInstanceUID", "") or "") if command is not None else ""
        self.first = (kind, responded_to, instance)

    def not_ours(self, message_id: int, sop_instance_uid: str, where: str) -> str | None:
        """Why the answer pynetdicom returned is not the C-STORE-RSP to our request (our message ID and, where the
        peer names one, our instance), or None when it is."""
        if self.first is None:
            return None
        kind, responded_to, instance = self.first
        if kind != "C-STORE-RSP":
            what = f"a {kind}"
        elif responded_to != message_id:
            what = f"a C-STORE-RSP to message {responded_to}, not {message_id}"
        elif instance and instance != sop_instance_uid:
            shown = repr(instance[:_UID_CHARS] + ("…" if len(instance) > _UID_CHARS else ""))
            what = f"a C-STORE-RSP about instance {shown}, not ours"
        else:
            return None
        return f"{where} answered the C-STORE with {what}: not counted as stored"


def quoted_answer(data: bytes | bytearray) -> str:
    """A peer's first bytes for a reason or a log line: its first line (up to CR or LF), at most
    :data:`QUOTED_CHARS` characters, quoted, every byte but printable ASCII written ``\\xNN`` (the quote and the
    backslash too): no peer can end our line, start another or put terminal controls in it."""
    line = bytes(data).split(b"\r", 1)[0].split(b"\n", 1)[0]
    shown = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b"'\\" else f"\\x{b:02x}" for b in line[:QUOTED_CHARS])
    return f"'{shown}'" + ("…" if len(line) > QUOTED_CHARS else "")


def answers_http(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether ``host:port`` answers an HTTP request as an HTTP server (its reply starts ``HTTP/``). Asked only
    of a peer that already answered in something other than DICOM."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            reply = b""
            while len(reply) < 5:
                chunk = connection.recv(5 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply == b"HTTP/"


def _rejection(assoc: Association) -> Rejection | None:
    """The A-ASSOCIATE-RJ pynetdicom received, from the acceptor's A-ASSOCIATE primitive (pynetdicom keeps the
    response it got as ``assoc.acceptor.primitive``: result, result_source, diagnostic)."""
    primitive = getattr(getattr(assoc, "acceptor", None), "primitive", None)
    codes = [getattr(primitive, name, None) for name in ("result", "result_source", "diagnostic")]
    if not all(isinstance(code, int) for code in codes) or codes[0] not in REJECT_RESULTS:
        return None
    result, source, reason = (int(code) for code in codes if isinstance(code, int))
    return Rejection(result, source, reason)


@dataclass(frozen=True)
class SendResult:
    """What happened to one file: the DICOM status (``None`` if it was never sent) and a note."""

    path: Path
    status: int | None
    note: str = ""
    #: Not meant to be sent (a DICOMDIR): listed, never proposed, not a failure of the send.
    skipped: bool = False

    @property
    def ok(self) -> bool:
        """Success (0x0000) or a warning status (0x0001, 0xBxxx)."""
        return self.status is not None and (self.status in (0x0000, 0x0001) or self.status >> 12 == 0xB)


def send_files(
    files: Sequence[Path],
    host: str,
    port: int,
    *,
    called_ae: str,
    calling_ae: str = "RADTRACE",
    timeout_s: float = 60.0,
    progress: Callable[[SendResult], None] | None = None,
    found_in_folders: Collection[Path] = (),
) -> list[SendResult]:
    """Send ``files`` over one association; returns one :class:`SendResult` per file, in order.

    A file of ``found_in_folders`` (not named itself) that is no DICOM at all (no "DICM" at byte 128, and not
    readable as a data set without file meta: a CD's README, AUTORUN.INF or viewer) is listed as skipped; a file
    that says it is DICOM and cannot be read, or any file named, is a failure.

    Raises :class:`NoAssociationError` (a :class:`PeerUnavailableError`) when the association cannot be
    established at all: with the peer's A-ASSOCIATE-RJ codes where it rejected it.
    """
    results: dict[Path, SendResult] = {}
    identities: dict[Path, tuple[str, str, str]] = {}
    for path in files:
        try:
            identity = file_identity(path)
        except DicomInputError as exc:
            foreign = path in found_in_folders and not says_dicom(path)
            results[path] = SendResult(path, None, NOT_DICOM_NOTE if foreign else exc.reason, skipped=foreign)
        else:
            if identity[0] != MEDIA_STORAGE_DIRECTORY:
                identities[path] = identity
                continue
            results[path] = SendResult(path, None, DICOMDIR_NOTE, skipped=True)
        if progress is not None:
            progress(results[path])
    pairs = sorted({identity[:2] for identity in identities.values()})[:MAX_REQUESTED_CONTEXTS]
    where = f"{called_ae} at {host}:{port}"
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.maximum_pdu_size = 0
    ae.requested_contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes on disk, unchanged, streamed
    try:
        if pairs:
            answer, guard = PeerAnswer(), PduGuard(MAX_PEER_BYTES + PER_INSTANCE_BYTES * len(identities))
            answers, deadline = DimseAnswers(), ReadDeadline(timeout_s)
            started = time.monotonic()
            # The deadline first: it replaces pynetdicom's read, which the others wrap (scu_reads.ReadDeadline).
            handlers = deadline.handlers() + answer.handlers() + guard.handlers() + answers.handlers()
            assoc = ae.associate(host, port, ae_title=called_ae, evt_handlers=handlers)
            if not assoc.is_established:
                close_socket(assoc)
                if (too_long := guard.reason(where) or deadline.reason(where)) is not None:
                    raise NoAssociationError(too_long)
                rejection = answer.rejection(assoc)
                if rejection is not None:
                    raise NoAssociationError(f"association with {where} rejected ({rejection.codes})",
                                             rejection=rejection)  # fmt: skip
                if assoc.rejected_contexts and not assoc.accepted_contexts:  # an A-ASSOCIATE-AC refusing each one
                    refused = refused_contexts(assoc)
                    for path, (sop_class, syntax, _) in identities.items():
                        results[path] = SendResult(path, None, refused.get((sop_class, syntax), NO_CONTEXT))
                        if progress is not None:
                            progress(results[path])
                    return [results[path] for path in files]
                why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
                said = answer.no_answer(where) or answer.silence(where, time.monotonic() - started)
                raise NoAssociationError(
                    said or f"association with {where} {why}",
                    not_dicom=answer.not_dicom,
                    http=answer.http,
                )
            try:
                accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
                refused = refused_contexts(assoc)
                for path, (sop_class, syntax, sop_instance) in identities.items():
                    if (sop_class, syntax) not in accepted:
                        results[path] = SendResult(path, None, refused.get((sop_class, syntax), NO_CONTEXT))
                    elif not assoc.is_established:
                        results[path] = SendResult(path, None, "association lost")
                    else:
                        with path.open("rb") as handle:  # no "DICM" at 128: sent as its data set
                            has_meta = handle.read(132)[128:] == b"DICM"
                        answers.expect()
                        try:
                            response = assoc.send_c_store(path if has_meta else bare_dataset(path), msg_id=_MESSAGE_ID)
                        except RuntimeError:  # the peer went away between the check above and the send
                            results[path] = SendResult(path, None, "association lost")
                        else:
                            results[path] = _result(path, response, answers.not_ours(_MESSAGE_ID, sop_instance, where),
                                                    guard.reason(where) or deadline.reason(where))  # fmt: skip
                    if progress is not None:
                        progress(results[path])
            finally:
                release(assoc, where, timeout_s)  # closes its socket too
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return [results[path] for path in files]


def _result(path: Path, response: Dataset, not_ours: str | None, too_long: str | None) -> SendResult:
    """One file's result from the C-STORE's answer: no status where none came, or where the message taken for the
    answer was not the C-STORE-RSP to this request (``not_ours``: nothing says the file was stored)."""
    if "Status" not in response:
        return SendResult(path, None, too_long or "no response")
    if not_ours is not None:
        return SendResult(path, None, not_ours)
    return SendResult(path, int(response.Status), str(response.get("ErrorComment", "")))


def close_socket(assoc: Association) -> None:
    """Close the association's socket, whatever became of it.

    pynetdicom skips close() when shutdown() fails on a connection the peer reset (a PACS killed, a firewall or load
    balancer's RST: ENOTCONN), and keeps the socket on the Association, which its threads hold in reference cycles:
    the descriptor stayed open until the cycle collector ran, one per association (200 stores against a PACS that
    resets mid P-DATA left 200 open with the collector off, 9 to 12 lingering with it on)."""
    transport = getattr(assoc.dul, "socket", None)
    raw = getattr(transport, "socket", None)
    if raw is not None:
        raw.close()


def summarise(results: Sequence[SendResult]) -> Counter[str]:
    """Count results by status (``0x0000``…, ``skipped`` or ``not sent``)."""
    return Counter(
        f"0x{r.status:04X}" if r.status is not None else "skipped" if r.skipped else "not sent" for r in results
    )
