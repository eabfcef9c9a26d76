"""The DUL of a listener association: data set fragments of a C-STORE written straight to their file.

Data set fragments of a C-STORE take a short way (:class:`DatasetFastPathDUL`): straight from the
PDU buffer into the file pynetdicom streams the data set to, hashed as they are written, without
building PDU objects or passing through the state machine (which, for a P-DATA-TF in Sta6, only
forwards it to DIMSE). The handler then has the file's SHA-256 without reading it back. Everything
else (command sets, any other PDU or state) goes through pynetdicom unchanged.

The data set file and its hash are :mod:`radtrace.dicom_listener.data_stream`; the state machine's guard (an event
with no transition closes the connection, not the DUL thread) is :mod:`radtrace.dicom_listener.state_guard`.

Every PDU length is a peer's claim: no buffer is sized by it. A PDU is refused (the peer aborted)
when it claims more than radtrace negotiated (``listener.max_pdu_bytes`` for a P-DATA-TF, 64 KiB for
anything else, the A-ASSOCIATE-RQ included).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from radtrace.dicom_listener.admission import Admission, Connection
from radtrace.dicom_listener.data_stream import _Hasher, _Stream
from radtrace.dicom_listener.dimse_guard import command_problem, fragment_problem
from radtrace.dicom_listener.pdu_socket import MAX_CONTROL_PDU, READ_AHEAD, PduRefusedError, WholePduSocket
from radtrace.dicom_listener.reactor import Wake
from radtrace.dicom_listener.rq_budget import REFUSED_REASON, thread_cpu_s
from radtrace.dicom_listener.spool import FileDigest
from radtrace.dicom_listener.state_guard import PROTOCOL_VIOLATION, guard_state_machine
from radtrace.logging import escape

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = ["DatasetFastPathDUL", "close_fast_path", "take_received"]

log = logging.getLogger(__name__)

_PDU_HEADER: Final = struct.Struct(">BBL")
_PDV_LENGTH: Final = struct.Struct(">L")
_P_DATA_TF: Final = 0x04
_A_ASSOCIATE_RQ: Final = 0x01
_KNOWN_PDU_TYPES: Final = frozenset(range(0x01, 0x08))
#: The PDUs a peer may not send before its A-ASSOCIATE-RQ (PS3.8 Table 9-10, Sta2), by type code.
_NOT_FIRST: Final = {
    0x02: "A-ASSOCIATE-AC",
    0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF",
    0x05: "A-RELEASE-RQ",
    0x06: "A-RELEASE-RP",
    0x07: "A-ABORT",
}
_COMMAND: Final = 0x01  # message control header bits (PS3.8 E.2)
_LAST: Final = 0x02
#: The :class:`~.peer_log.PeerLog` kind of a connection that sent bytes and ended before any A-ASSOCIATE-RQ.
ENDED_BEFORE_RQ: Final = "ended before any A-ASSOCIATE-RQ"
#: How a TLS connection that broke its TLS session (a record it could not read, a fatal alert) is said to end.
_TLS_BREACH: Final = "TLS records the listener could not read"


def _repeated_context_id(primitive: Any) -> int | None:
    """The first presentation context ID an A-ASSOCIATE-RQ proposes twice (PS3.8 9.3.2.2: each is unique).

    pynetdicom negotiates every item, answering one per ID: 600 items under one ID cost it 0.15 s of CPU and
    were accepted. Unique odd IDs also bound an RQ to 128 contexts.
    """
    seen: set[int] = set()
    for context in getattr(primitive, "presentation_context_definition_list", None) or []:
        if context.context_id in seen:
            return int(context.context_id)
        seen.add(context.context_id)
    return None


def _pdv_items(body: bytearray) -> list[tuple[int, int, int, int]] | None:
    """``(context id, control header, start, end)`` of each PDV in a P-DATA-TF body, ``None`` if malformed."""
    items = []
    offset, end = 0, len(body)
    while offset < end:
        if offset + 6 > end:
            return None
        (length,) = _PDV_LENGTH.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            return None
        items.append((body[offset + 4], body[offset + 5], offset + 6, offset + 4 + length))
        offset += 4 + length
    return items or None


class DatasetFastPathDUL(DULServiceProvider):
    """pynetdicom's DUL, with data set fragments of a streamed C-STORE written without decoding.

    Applies only in Sta6 (association established) with no event pending, to a well-formed
    P-DATA-TF whose data set fragments belong to a C-STORE being streamed to a file
    (``STORE_RECV_CHUNKED_DATASET``). There the state machine would run DT-2 (stay in Sta6 and hand
    the PDVs to DIMSE), which is what this does, minus the copies. ``EVT_DATA_RECV`` and
    ``EVT_PDU_RECV`` are not triggered for such PDUs; the listener binds neither.
    """

    _stream: _Stream | None
    hasher: _Hasher
    received: dict[str, FileDigest]
    wake: Wake

    @classmethod
    def adopt(cls, dul: DULServiceProvider) -> DatasetFastPathDUL:
        """Turn an association's DUL, not yet started, into this class (same object and state)."""
        dul.__class__ = cls
        fast = cast("DatasetFastPathDUL", dul)
        fast._stream = None
        fast.hasher = _Hasher()
        fast.received = {}
        fast.wake = Wake()
        fast.connection = None
        fast.admission = None
        fast.on_refused = None
        fast.max_data_set_bytes = None
        fast.refused = False
        fast.negotiation_charged = False
        fast.rq_read = False
        fast.on_timed_out = None
        weakref.finalize(fast, fast.wake.close)  # once the association and its threads are gone
        fast._run_loop_delay = 0  # WholePduSocket.ready does the waiting
        guard_state_machine(fast)
        fast._guard_dimse()
        return fast

    def _guard_dimse(self) -> None:
        """Judge each PDV before DIMSE takes it (:mod:`~radtrace.dicom_listener.dimse_guard`), one at a time.

        A PDV that breaks the rules, or that pynetdicom fails to decode, aborts the association with
        one log line, instead of a traceback from the DUL thread (or memory growing without end).
        pynetdicom also stops reading a P-DATA's PDVs once one completes a message: here each is
        delivered on its own, so none is silently dropped.
        """
        dimse = getattr(self.assoc, "dimse", None)
        if dimse is None:
            return
        receive = dimse.receive_primitive

        def guarded(primitive: P_DATA) -> None:
            for context_id, data in primitive.presentation_data_value_list:
                if self.refused:
                    return
                problem = fragment_problem(
                    dimse.message,
                    self.assoc._accepted_cx,
                    context_id,
                    data[0] if data else 0,
                    len(data) - 1,
                    max_data_set_bytes=self.max_data_set_bytes,
                )
                if problem is None:
                    single = P_DATA()
                    single.presentation_data_value_list = [cast("tuple[int, bytes]", [context_id, data])]
                    try:
                        receive(single)
                        continue
                    except Exception as exc:  # the peer's bytes, not our bug: one line, no traceback
                        missing = command_problem(getattr(dimse.message, "command_set", None))
                        problem = missing or f"undecodable DIMSE message ({type(exc).__name__})"
                self._refuse(problem)
                return

        dimse.receive_primitive = guarded

    def run(self) -> None:
        """pynetdicom's DUL thread; a connection that never got established is charged its CPU at the end."""
        try:
            super().run()
        finally:
            self.charge_negotiation()

    negotiation_charged: bool
    """Whether the connection's negotiation CPU has been charged to its source."""

    def charge_negotiation(self) -> None:
        """Charge this DUL thread's CPU so far to the source's negotiation budget (once, from the DUL thread).

        The thread serves this one connection: until the association is established, all it did was read,
        decode and answer the A-ASSOCIATE-RQ (the association thread's share is charged by the handlers).
        """
        if self.negotiation_charged or self.admission is None or threading.get_ident() != self.ident:
            return
        self.negotiation_charged = True
        self.admission.negotiation.charge(self._host(), thread_cpu_s())

    on_timed_out: Any
    """Called with (connection, setting, detail) when a timeout of pynetdicom's ends the connection."""

    def acse_timed_out(self) -> None:
        """No A-ASSOCIATE-RQ within the ACSE timeout (ARTIM here, or the association thread's wait for it).

        The connection is shut now: pynetdicom's association thread would otherwise wait for this DUL thread,
        which may be blocked reading a PDU the peer never finishes, until the watchdog's negotiation deadline
        (spinning: its stop loop sleeps the DUL's loop delay, which is 0 here).
        """
        connection = self.connection
        if connection is None or self.state_machine.current_state not in ("Sta1", "Sta2"):  # Sta1: Evt5 not yet run
            return
        with connection.lock:  # the DUL thread's ARTIM and the association thread's wait may both get here
            if connection.cut_reason is not None:  # aborted or cut off already, and logged there
                return
            connection.cut_reason = "ACSE timeout"
        log.info("no A-ASSOCIATE-RQ from %s within the ACSE timeout: closed the connection", self._peer())
        if self.admission is not None:
            self.admission.abort(connection, "ACSE timeout")
        connection.shut()
        if self.on_timed_out is not None:
            with contextlib.suppress(Exception):  # the connection is gone; the audit logs its own failures
                self.on_timed_out(connection, "listener.acse_timeout_s", "no A-ASSOCIATE-RQ within the ACSE timeout")

    def _host(self) -> str:
        return str(getattr(self.assoc.requestor, "address", "") or "?")

    def send_pdu(self, primitive: Any) -> None:
        """Queue a primitive to send, as pynetdicom's, and wake the DUL thread to send it now."""
        super().send_pdu(primitive)
        self.wake.ring()

    def stop_dul(self) -> bool:
        """As pynetdicom's (stop once idle, Sta1), but wait for the thread to end instead of spinning.

        pynetdicom sleeps the DUL's loop delay between looks at the thread, and that delay is 0 here: a DUL
        blocked in its first read (before Evt5 took it out of Sta1) had the association thread, in ``kill()``,
        spinning a core until the read ended.
        """
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.wake.ring()
        if self.ident is not None and threading.current_thread() is not self:
            self.join()
        return True

    def kill_dul(self) -> None:
        """Stop the DUL thread, woken so that it stops now."""
        super().kill_dul()
        self.wake.ring()

    def _read_pdu_data(self) -> None:
        """As pynetdicom's: read one PDU and queue its event, or stream it (see the class docstring).

        While a data set is being streamed, the next PDU is read at once when it is already
        arriving and nothing waits to be sent, rather than after a turn of the DUL loop.
        """
        sock = cast("WholePduSocket", self.socket)
        connection = self.connection
        try:
            while True:
                received = self._read_one(sock, connection)
                if received is None:
                    return
                header, body = received
                if not (
                    header[0] == _P_DATA_TF
                    and self.state_machine.current_state == "Sta6"
                    and self.event_queue.empty()
                    and self._stream_pdvs(body)
                ):
                    break
                sock.give_back()
                # A PDU came: not idle. pynetdicom restarts this timer only when this method returns, and a data set
                # streamed without a pause for longer than listener.network_timeout_s was aborted as idle mid-transfer.
                self._idle_timer.restart()
                if self.refused or self._stream is None or not self.to_provider_queue.empty() or not sock.ready:
                    return
            try:
                pdu, event = self._decode_pdu(header + body)
                if header[0] != _P_DATA_TF:
                    # What the state machine does with it next: pynetdicom raises there (an even context ID in
                    # an A-ASSOCIATE-RQ) with a traceback, and its DUL thread dies. Found here, it is refused.
                    primitive = pdu.to_primitive()
                    if header[0] == _A_ASSOCIATE_RQ:
                        if (repeated := _repeated_context_id(primitive)) is not None:
                            self._refuse(f"A-ASSOCIATE-RQ repeats presentation context ID {repeated}")
                            return
                        # The state machine (AE-6) makes the primitive again: for a large RQ that was half of
                        # the listener's CPU per negotiation. Its only use here was the check above.
                        setattr(pdu, "to_primitive", lambda: primitive)  # noqa: B010
            except Exception as exc:  # one line with the reason: the bytes are the peer's, not our bug
                if self.refused:  # garbage after an abort: the connection is shut, nothing more said
                    self._refuse(None)
                    return
                if (suffix := self._peer_log("undecodable PDU")) is not None:
                    log.error(
                        "undecodable PDU (type 0x%02X, %d bytes) from %s: %s: %s%s",
                        header[0],
                        len(body),
                        self._peer(),
                        type(exc).__name__,
                        escape(str(exc)[:200]),
                        suffix,
                    )
                self._refuse(None)
                return
            self.event_queue.put(event)
            self._recv_pdu.put(pdu)
        finally:
            sock.give_back()
            if connection is not None:
                connection.pdu_ends()

    connection: Connection | None
    """The admission record of this association's connection (``None`` outside a listener)."""
    admission: Admission | None

    def _peer(self) -> str:
        return escape(self._host())

    def _peer_log(self, kind: str) -> str | None:
        """Whether to log a line of ``kind`` about this peer (:class:`.peer_log.PeerLog`), and its suffix."""
        return "" if self.admission is None else self.admission.peer_log.admit(self._host(), kind)

    def _limit(self, pdu_type: int) -> int:
        """The most body bytes a PDU of this type may claim here."""
        if pdu_type == _P_DATA_TF and self.state_machine.current_state != "Sta2":
            return int(self.assoc.ae.maximum_pdu_size) or READ_AHEAD
        return MAX_CONTROL_PDU

    on_refused: Any
    """Called with (source address, reason, detail) for each association aborted here (the audit aggregates)."""
    max_data_set_bytes: int | None
    """The longest C-STORE data set taken (``None``: unbounded)."""
    refused: bool
    """Whether the association is being aborted: nothing more it sends is taken."""
    rq_read: bool
    """Whether the peer's A-ASSOCIATE-RQ has been read (before it, no other PDU is taken)."""

    def _refuse(self, reason: str | None) -> None:
        """Abort the association (A-ABORT, then the socket is shut), free its slot now, and have it audited.

        Once aborted, what the peer sends next is read and dropped, not judged again (one log line and one
        audit event per association, however much garbage follows), until the watchdog shuts the connection
        (:data:`~radtrace.dicom_listener.admission.ABORT_GRACE_S`): shutting it here could cut off the
        A-ABORT, which may still wait behind an earlier event.
        """
        if self.refused:
            return
        if reason is not None and (suffix := self._peer_log("aborted")) is not None:
            log.warning("aborted the association with %s: %s%s", self._peer(), reason, suffix)
        self.refused = True
        self.event_queue.put("Evt19")  # invalid PDU: A-ABORT
        if self.connection is not None and self.admission is not None:
            # logged: above, or by the caller before (the undecodable PDU's line, with what did not decode)
            self.admission.abort(self.connection, reason or "undecodable PDU")
        if self.on_refused is not None:
            with contextlib.suppress(Exception):  # the abort stands; the audit logs its own failures
                self.on_refused(self._host(), PROTOCOL_VIOLATION, detail=reason or "undecodable PDU")

    def _close_unread(self, sock: WholePduSocket) -> None:
        """Close the connection without reading its A-ASSOCIATE-RQ: its source's negotiation budget is spent.

        The connection was opened while the source still had credit; its RQ, decoded, would add to the debt.
        Closed as at accept (no PDU; PS3.8 9.1.1 lets a provider refuse the transport connection), audited.
        """
        self.refused = True
        if self.connection is not None and self.admission is not None:
            self.admission.abort(self.connection, REFUSED_REASON)
        with contextlib.suppress(OSError):
            if sock.socket is not None:
                sock.socket.shutdown(socket.SHUT_RDWR)
        self.event_queue.put("Evt17")  # transport closed: Sta2 goes back to idle (AA-5)
        if self.on_refused is not None and self.admission is not None:
            host = self._host()
            with contextlib.suppress(Exception):
                self.on_refused(host, REFUSED_REASON, **self.admission.negotiation.details(host))

    def _read_one(
        self, sock: WholePduSocket, connection: Connection | None = None
    ) -> tuple[bytearray, bytearray] | None:
        """One PDU's header and body; ``None`` when the event saying why not has been queued."""
        if connection is not None:
            connection.pdu_begins(time.monotonic(), 6)
            if self.state_machine.current_state == "Sta6":  # established: data sets may come
                sock.widen()
        first = not self.rq_read  # no A-ASSOCIATE-RQ yet: bytes that end here are judged (_ended_before_rq)
        try:
            header = sock.recv(6)
            if len(header) < 6 or (connection is not None and connection.shut_down):
                # closed, or shut by the listener (a cut-off, an abort's end, a stop): what it read is not the peer's
                # to judge (a TLS socket, once shut, reads the raw records: 'unknown PDU type 0x17' was logged)
                if first:
                    self._ended_before_rq(sock, "ended")
                self.event_queue.put("Evt17")  # transport connection closed
                return None
            pdu_type, _, length = _PDU_HEADER.unpack(header)
            if pdu_type not in _KNOWN_PDU_TYPES:
                self._refuse(f"unknown PDU type 0x{pdu_type:02X}")
                return None
            if not self.rq_read and pdu_type in _NOT_FIRST:
                # A probe of the port, or a peer out of step. The state machine would answer with an A-ABORT (AA-1)
                # and say nothing; judged here, as read, it is named even when more bytes follow at once.
                self._refuse(f"{_NOT_FIRST[pdu_type]} (PDU type 0x{pdu_type:02X}) before any A-ASSOCIATE-RQ")
                return None
            if pdu_type == _A_ASSOCIATE_RQ:
                self.rq_read = True
            if (
                pdu_type == _A_ASSOCIATE_RQ
                and self.admission is not None
                and not self.admission.negotiation.allows(self._host())
            ):
                self._close_unread(sock)
                return None
            limit = self._limit(pdu_type)
            if length > limit:
                self._refuse(f"PDU of type 0x{pdu_type:02X} claims {length} bytes, more than the {limit} allowed")
                return None
            if connection is not None:
                connection.pdu_expected = 6 + length
            body = sock.recv(length)
        except PduRefusedError as exc:
            self._refuse(exc.reason)
            return None
        except (OSError, TimeoutError) as exc:
            # Before any A-ASSOCIATE-RQ the end is judged: bytes sent are a protocol violation, none a health check's
            # bare reset (silent, as a bare close: before, one INFO line per source and interval on the plain port).
            if first:
                self._ended_before_rq(sock, _how_it_ended(exc))
            elif (suffix := self._closed_line()) is not None:
                log.info("connection from %s closed before the entire PDU was received%s", self._peer(), suffix)
            self.event_queue.put("Evt17")
            return None
        if len(body) != length or (connection is not None and connection.shut_down):
            cut = len(body) != length and not (first and self._ended_before_rq(sock, "ended"))
            if cut and (suffix := self._closed_line()) is not None:
                log.info(
                    "connection from %s closed mid-PDU (%d of %d bytes)%s", self._peer(), len(body), length, suffix
                )
            self.event_queue.put("Evt17")
            return None
        return header, body

    def _ended_before_rq(self, sock: WholePduSocket, how: str) -> bool:
        """The connection ended (``how``) before a whole first PDU: a protocol violation if the peer had sent bytes.

        Said in one WARNING line per source and interval and audited as the listener's other protocol violations
        (aggregated per source, reason and door), the same on both ports: bytes that never made an A-ASSOCIATE-RQ
        (fewer than a header, or an RQ cut short), then a close or a reset (told apart on neither port: over TLS a
        reset reads as a close), or, after a good TLS handshake, TLS records it cannot read (raw bytes beside
        the TLS layer, a forged record, a fatal alert such as after a renegotiation refused), or TLS record bytes
        that made no application data before a close or reset without close_notify (a record cut short:
        :meth:`~.pdu_socket.WholePduSocket.tls_bytes_without_data`; before, said nowhere). Before, such a peer got
        an INFO line per connection or none, and no audit event. A connection that sent nothing (a health check's
        connect-and-close or reset, over TLS after its handshake, with or without close_notify) is not judged here
        (``False``) and nothing is said of it. Neither is one the listener shut or aborted itself: it said why.

        Bytes that reached this host are never lost to a reset: the kernel keeps what arrived readable after it (and
        OpenSSL reads it), so bytes then an immediate reset are judged as bytes then a close. Bytes the peer's own
        kernel still held (a small TLS record behind Nagle's algorithm, or corked) are discarded there by its reset
        (SO_LINGER 0, or a close with our session tickets unread): they never came, and that is a bare reset.
        """
        if self.refused or (self.connection is not None and self.connection.shut_down):
            return False
        received = sock.received_bytes
        if how.startswith(_TLS_BREACH):  # bytes sent, though none made application data
            detail = f"{how}, after {received} bytes" if received else how
        elif received:
            detail = f"{received} bytes, then the connection {how} before a whole PDU"
        elif unread := sock.tls_bytes_without_data():  # arrived, but the TLS layer never made data of them
            detail = f"{unread} bytes of TLS records that made no application data, then the connection {how}"
        else:
            return False
        self.refused = True  # one line and one audit event per connection, whatever follows
        if (suffix := self._peer_log(ENDED_BEFORE_RQ)) is not None:
            log.warning(
                "connection from %s ended before any A-ASSOCIATE-RQ: %s%s", self._peer(), escape(detail), suffix
            )
        if self.connection is not None and self.admission is not None:
            self.admission.abort(self.connection, detail)
        if self.on_refused is not None:
            with contextlib.suppress(Exception):  # the connection is gone; the audit logs its own failures
                self.on_refused(self._host(), PROTOCOL_VIOLATION, detail=detail)
        return True

    def _closed_line(self) -> str | None:
        """Whether to say that the connection closed mid-PDU, and the line's suffix (:meth:`_peer_log`).

        Not once the association is aborted here, or its connection shut by the listener: their line said why, and the
        close that follows is theirs (the socket shut after the grace, a TLS peer's reset, the end of a peer that sent
        garbage and went). Before, garbage after a TLS handshake wrote two lines per association, the abort's
        (``unknown PDU type 0x47``) and this one.
        """
        if self.refused or (self.connection is not None and self.connection.shut_down):  # said where it was decided
            return None
        return self._peer_log("closed mid-PDU")

    def _stream_pdvs(self, body: bytearray) -> bool:
        """Hand a P-DATA-TF's PDVs to DIMSE, writing data set fragments straight to their file."""
        items = _pdv_items(body)
        if items is None:
            return False  # the normal path decodes it, fails and aborts (Evt19)
        dimse = self.assoc.dimse
        view = memoryview(body)
        try:
            for context_id, control, start, end in items:
                if self.refused:
                    break
                message: Any = dimse.message
                if control & _COMMAND or getattr(message, "_data_set_file", None) is None:
                    self._deliver(context_id, bytes(view[start - 1 : end]))
                    continue
                problem = fragment_problem(
                    message,
                    self.assoc._accepted_cx,
                    context_id,
                    control,
                    end - start,
                    max_data_set_bytes=self.max_data_set_bytes,
                )
                if problem is not None:
                    self._refuse(problem)
                    break
                stream = self._stream
                if stream is None or stream.message is not message:
                    stream = self._stream = _Stream(message, self.hasher)
                stream.write(view[start:end])
                if control & _LAST:
                    self.received[str(stream.path)] = stream.finish()
                    self._stream = None
                    self._deliver(context_id, bytes((control,)))  # an empty last fragment: DIMSE completes
        finally:
            view.release()
        return True

    def _deliver(self, context_id: int, pdv: bytes) -> None:
        primitive = P_DATA()
        # pynetdicom's setter wants [ID, PDV] lists (its annotation says tuples)
        primitive.presentation_data_value_list = [cast("tuple[int, bytes]", [context_id, pdv])]
        self.assoc.dimse.receive_primitive(primitive)


def _how_it_ended(exc: BaseException) -> str:
    """How a read that raised ``exc`` ended, in words (an OpenSSL reason code is its constant, never the peer's)."""
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        code = exc.reason if isinstance(exc.reason, str) and exc.reason else type(exc).__name__
        if code.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")):  # e.g. after a renegotiation refused
            return f"{_TLS_BREACH} (the peer's alert {code})"
        return f"{_TLS_BREACH} ({code})"  # raw bytes beside TLS: WRONG_VERSION_NUMBER; a forged record: BAD_RECORD_MAC
    if isinstance(exc, TimeoutError):
        return "timed out"
    return "ended"  # closed or reset: over TLS a reset reads as a close (a ragged EOF), so both ports say the same


def take_received(assoc: Association, path: Path) -> FileDigest | None:
    """The fast path's record of the file at ``path`` (removed from the association), if it wrote it."""
    received = getattr(assoc.dul, "received", None)
    return received.pop(str(path), None) if received is not None else None


def close_fast_path(assoc: Association) -> None:
    """End the association's hashing thread (at connection close)."""
    hasher = getattr(assoc.dul, "hasher", None)
    if hasher is not None:
        hasher.close()
