"""A faster receive path for pynetdicom's acceptor sockets.

pynetdicom 3.0 reads each PDU in 4 KiB ``recv`` calls, appending to a growing ``bytearray``: for an
8 MB instance that is some 2,000 system calls and reallocations, the larger part of the receive
cost. :class:`ListenerServer` hands each association a socket that reads ahead up to 1 MiB per
``recv_into`` (:class:`WholePduSocket`), and binds with ``SO_REUSEPORT`` so that several listener
processes can share one port (pynetdicom holds the GIL; processes are how it uses several cores).
Its DUL and association threads wait for work instead of polling every millisecond.

Data set fragments of a C-STORE take a shorter way still (:class:`DatasetFastPathDUL`): straight
from the PDU buffer into the file pynetdicom streams the data set to, hashed as they are written,
without building PDU objects or passing through the state machine (which, for a P-DATA-TF in
Sta6, only forwards it to DIMSE). The handler then has the file's SHA-256 without reading it back.
Everything else (command sets, any other PDU or state) goes through pynetdicom unchanged.

Every PDU length is a peer's claim: no buffer is sized by it. A PDU is refused (the peer aborted)
when it claims more than radtrace negotiated (``listener.max_pdu_bytes`` for a P-DATA-TF, 64 KiB for
anything else, the A-ASSOCIATE-RQ included); what is accepted is read into a buffer that grows
with the bytes that actually arrive, each growth taken from the listener's
:class:`~radtrace.dicom_listener.admission.BufferBudget`. Connections are admitted, timed and cut
off by :mod:`radtrace.dicom_listener.admission`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from radtrace.dicom_listener.admission import Admission, BufferBudget, Connection
from radtrace.dicom_listener.spool import FileDigest
from radtrace.logging import escape

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = [
    "MAX_CONTROL_PDU",
    "READY_WAIT_S",
    "DatasetFastPathDUL",
    "ListenerServer",
    "PduRefusedError",
    "WholePduSocket",
    "close_fast_path",
    "take_received",
]

log = logging.getLogger(__name__)

#: Longest wait for incoming data per DUL loop. Something to send wakes it at once (:class:`_Wake`);
#: the wait bounds how late the DUL notices its timers and being stopped.
READY_WAIT_S = 0.02
#: The same wait for a connection that has not sent its A-ASSOCIATE-RQ yet.
HALF_OPEN_WAIT_S: Final = 0.5
#: Bytes read from the socket at most per system call, once the association is established.
_READ_AHEAD: Final = 1024 * 1024
#: The read-ahead of a connection still negotiating: a stranger costs little memory.
_FIRST_READ_AHEAD: Final = 64 * 1024
#: Largest PDU other than a P-DATA-TF (an A-ASSOCIATE-RQ with every context and item stays far below).
MAX_CONTROL_PDU: Final = 64 * 1024


class PduRefusedError(Exception):
    """A PDU that may not be read: larger than negotiated, or past the listener's memory budget."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WholePduSocket(AssociationSocket):
    """An :class:`AssociationSocket` that reads ahead: one ``recv_into`` takes whatever has arrived.

    A 128 KiB PDU then costs one system call or none, not one per 4 KiB, and its 6-byte header
    none at all. Its ``ready`` says yes while read-ahead data is buffered, else waits up to the DUL's
    loop delay for data instead of answering at once: the DUL thread then wakes when a PDU arrives
    rather than after a fixed sleep (its own sleep is set to 0).
    """

    _ahead: bytearray
    _ahead_start: int
    _ahead_end: int

    @classmethod
    def adopt(cls, sock: AssociationSocket) -> WholePduSocket:
        """Turn a new association's socket, which has read nothing yet, into this class."""
        sock.__class__ = cls
        fast = cast("WholePduSocket", sock)
        fast._ahead = bytearray(_FIRST_READ_AHEAD)
        fast._ahead_start = fast._ahead_end = 0
        fast.budget = None
        fast.held = 0
        return fast

    budget: BufferBudget | None
    """Where the bytes of a PDU body being read are taken from (``None``: unbounded, for tests)."""
    held: int
    """Bytes taken from :attr:`budget` for the PDU being read; :meth:`give_back` returns them."""

    def widen(self) -> None:
        """Read ahead the full :data:`_READ_AHEAD` from now on (the association is established)."""
        if len(self._ahead) < _READ_AHEAD:
            wider = bytearray(_READ_AHEAD)
            pending = self._ahead_end - self._ahead_start
            wider[:pending] = self._ahead[self._ahead_start : self._ahead_end]
            self._ahead, self._ahead_start, self._ahead_end = wider, 0, pending

    def give_back(self) -> None:
        """Return the budget taken for the last PDU body."""
        if self.held and self.budget is not None:
            self.budget.give_back(self.held)
        self.held = 0

    def _grow(self, buffer: bytearray, size: int) -> None:
        """Extend ``buffer`` to ``size`` bytes, taking the growth from the budget."""
        more = size - len(buffer)
        if self.budget is not None:
            if not self.budget.take(more):
                raise PduRefusedError(f"listener buffer budget of {self.budget.limit} bytes reached")
            self.held += more
        buffer.extend(bytes(more))

    @property
    def ready(self) -> bool:
        """Whether data can be read, waiting up to :data:`READY_WAIT_S` for it."""
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if self._ahead_end > self._ahead_start:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        dul = self.assoc.dul
        wake = getattr(dul, "wake", None)
        # Awaiting an A-ASSOCIATE-RQ there are no timers to watch, and being stopped rings the wake:
        # hundreds of half-open connections then cost a few wake-ups a second each, not fifty.
        machine = getattr(dul, "state_machine", None)
        wait = HALF_OPEN_WAIT_S if getattr(machine, "current_state", None) == "Sta2" else READY_WAIT_S
        events = getattr(dul, "event_queue", None)
        if events is not None and not events.empty():
            wait = 0.0  # an event is waiting for this thread (e.g. the RQ read before Evt5 moved it to Sta2)
        try:
            if wake is None:
                return bool(select.select([sock], [], [], wait)[0])
            readable, _, _ = select.select([sock, wake.reader], [], [], wait)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False
        if wake.reader in readable:
            wake.drain()
        return sock in readable

    def recv(self, nr_bytes: int) -> bytearray:
        """Read exactly ``nr_bytes``, or what arrived before the peer closed (as pynetdicom's does)."""
        sock = self.socket
        if sock is None:
            return bytearray()
        start = self._ahead_start
        if self._ahead_end - start >= nr_bytes:  # the usual case: one copy, no zero-filling
            self._ahead_start = start + nr_bytes
            with memoryview(self._ahead) as ahead:
                return bytearray(ahead[start : start + nr_bytes])
        # Never sized by the claim: the buffer grows (doubling) with what has arrived.
        ahead_size = len(self._ahead)
        buffer = bytearray()
        self._grow(buffer, min(nr_bytes, max(self._ahead_end - start, ahead_size)))
        view = memoryview(buffer)
        try:
            read = self._take(view)
            while read < nr_bytes:
                if read == len(buffer):
                    view.release()
                    self._grow(buffer, min(nr_bytes, 2 * len(buffer)))
                    view = memoryview(buffer)
                    if got := self._take(view[read:]):  # read-ahead left over after filling the smaller buffer
                        read += got
                        continue
                if len(buffer) - read >= ahead_size:  # a large remainder goes straight into place
                    got = sock.recv_into(view[read:], len(buffer) - read)
                else:
                    got = sock.recv_into(self._ahead, ahead_size)
                    self._ahead_start, self._ahead_end = 0, got
                    got = self._take(view[read:])
                if not got:
                    break
                read += got
        finally:
            view.release()
        if read < len(buffer):
            del buffer[read:]
        return buffer

    def _take(self, target: memoryview) -> int:
        """Copy read-ahead bytes into ``target``; how many."""
        count = min(len(target), self._ahead_end - self._ahead_start)
        if count:
            with memoryview(self._ahead) as ahead:
                target[:count] = ahead[self._ahead_start : self._ahead_start + count]
            self._ahead_start += count
        return count


_PDU_HEADER: Final = struct.Struct(">BBL")
_PDV_LENGTH: Final = struct.Struct(">L")
_P_DATA_TF: Final = 0x04
_KNOWN_PDU_TYPES: Final = frozenset(range(0x01, 0x08))
_COMMAND: Final = 0x01  # message control header bits (PS3.8 E.2)
_LAST: Final = 0x02


#: Events made from a primitive the local user queued to send (PS3.8 9.2, Table 9-6).
_LOCAL_PRIMITIVE_EVENTS: Final = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


class _Wake:
    """A socket pair that wakes the DUL thread from its wait for data when there is something to send."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def ring(self) -> None:
        """Wake the DUL thread (a wake already pending is enough)."""
        with contextlib.suppress(OSError):  # full: a wake is pending; closed: the association is gone
            self._writer.send(b"\0")

    def drain(self) -> None:
        """Take the pending wakes."""
        with contextlib.suppress(OSError):
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


#: Longest the association thread idles between checks of release, abort and timers.
REACTOR_IDLE_S: Final = 0.02


class _ReactorGate(threading.Event):
    """The association reactor's pause checkpoint, which also holds the reactor until there is work.

    pynetdicom's acceptor loop sleeps 1 ms and then waits on this event (set unless the reactor is
    paused), a thousand turns a second. Here the wait also lasts until :meth:`poke` (a DIMSE message
    or an ACSE primitive has arrived) or :data:`REACTOR_IDLE_S`. It never returns while cleared:
    a thread that paused the reactor still has it paused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.set()
        self._work = threading.Event()

    def poke(self) -> None:
        """Something arrived for the reactor."""
        self._work.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set, then until poked (or the idle time passes) while still set."""
        while True:
            if not super().wait(timeout):
                return False
            self._work.wait(REACTOR_IDLE_S)
            self._work.clear()  # the reactor checks its queues after this: nothing put before is missed
            if self.is_set():
                return True


class _PokingQueue(queue.Queue[Any]):
    """A queue that pokes the association reactor on each put."""

    def __init__(self, gate: _ReactorGate) -> None:
        super().__init__()
        self._gate = gate

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._gate.poke()


class _UserQueue(_PokingQueue):
    """The DUL-to-association queue, whose blocking ``get`` gives up once the DUL thread has ended.

    pynetdicom's acceptor waits up to the ACSE timeout for an A-ASSOCIATE indication, even when the
    DUL has already aborted the connection (an invalid first PDU): for a flood of such connections
    that is a thread and its buffers per connection for 30 s. Here the wait ends with the DUL.
    """

    def __init__(self, gate: _ReactorGate, dul: DULServiceProvider) -> None:
        super().__init__(gate)
        self._dul = weakref.ref(dul)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            return super().get(False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = HALF_OPEN_WAIT_S if deadline is None else min(HALF_OPEN_WAIT_S, deadline - time.monotonic())
            try:
                return super().get(True, max(left, 0.0))
            except queue.Empty:
                dul = self._dul()
                ended = dul is None or (dul.ident is not None and not dul.is_alive())  # started, and over
                if ended or (deadline is not None and time.monotonic() >= deadline):
                    raise


class _Hasher:
    """A thread that hashes data set fragments while the DUL thread goes on receiving.

    One per association, started with its first data set; :meth:`close` (at connection close)
    ends it. ``hashlib`` releases the GIL while it hashes, so this runs on a second core.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, memoryview] | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def update(self, digest: Any, chunk: memoryview) -> None:
        """Queue ``chunk`` for ``digest`` (the chunk's buffer must not change until :meth:`wait`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="radtrace-hasher", daemon=True)
            self._thread.start()
        self._queue.put((digest, chunk))

    def wait(self) -> None:
        """Return once every chunk queued so far has been hashed."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def close(self) -> None:
        """Stop the thread once it has hashed what is queued."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
            else:
                item[0].update(item[1])


class _Stream:
    """The data set file of the C-STORE being received, and the hash of what was written to it."""

    __slots__ = ("digest", "error", "file", "hasher", "message", "path", "size")

    def __init__(self, message: Any, hasher: _Hasher) -> None:
        self.message = message  # the DIMSE message being received (pynetdicom makes one per message)
        self.path = Path(message._data_set_path)
        self.file = message._data_set_file.file  # the BufferedWriter under NamedTemporaryFile's wrapper
        self.hasher = hasher
        self.error: OSError | None = None
        try:
            self.file.flush()
        except OSError as exc:
            self._failed(exc)
        self.size = self.file.tell()
        # pynetdicom has written the preamble and file meta: they are part of the file and of its hash.
        self.digest = hashlib.sha256(os.pread(self.file.fileno(), self.size, 0))

    def write(self, chunk: memoryview) -> None:
        """Write a fragment; after a failed write (disk full) the rest of the data set is read and dropped."""
        if self.error is not None:
            return
        try:
            self.file.write(chunk)
        except OSError as exc:
            self._failed(exc)
            return
        self.hasher.update(self.digest, chunk)
        self.size += len(chunk)

    def _failed(self, exc: OSError) -> None:
        self.error = exc
        log.warning("could not write a received data set (%s): the rest of it is dropped", exc.strerror or exc)
        with contextlib.suppress(OSError):
            os.ftruncate(self.file.fileno(), 0)  # give the space back now; the handler removes the file

    def finish(self) -> FileDigest:
        """Flush the file and wait for its hash (the digest carries the write error, if any)."""
        if self.error is None:
            try:
                self.file.flush()
            except OSError as exc:
                self._failed(exc)
        self.hasher.wait()
        return FileDigest(self.digest.hexdigest(), self.size, self.error)


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
    wake: _Wake

    @classmethod
    def adopt(cls, dul: DULServiceProvider) -> DatasetFastPathDUL:
        """Turn an association's DUL, not yet started, into this class (same object and state)."""
        dul.__class__ = cls
        fast = cast("DatasetFastPathDUL", dul)
        fast._stream = None
        fast.hasher = _Hasher()
        fast.received = {}
        fast.wake = _Wake()
        fast.connection = None
        fast.admission = None
        weakref.finalize(fast, fast.wake.close)  # once the association and its threads are gone
        fast._run_loop_delay = 0  # WholePduSocket.ready does the waiting
        fast._guard_state_machine()
        return fast

    def _guard_state_machine(self) -> None:
        """Survive an event the state machine has no transition for, instead of losing the DUL thread.

        pynetdicom raises from its reactor loop, outside any handler, when for instance the local
        A-ASSOCIATE-AC comes after a peer's invalid PDU already moved the machine to Sta13: the DUL
        thread dies and the association, its socket and its buffers stay behind for good. Here the
        event is dropped and the connection shut, so the machine closes it the usual way (Evt17).
        """
        machine = self.state_machine
        do_action = machine.do_action

        def guarded(event: str) -> None:
            try:
                do_action(event)
            except InvalidEventError:
                if event in _LOCAL_PRIMITIVE_EVENTS:  # its primitive waits in the queue: drop it too, or it recurs
                    with contextlib.suppress(queue.Empty):
                        self.to_provider_queue.get_nowait()
                log.info(
                    "dropped %s in %s and closed the connection with %s", event, machine.current_state, self._peer()
                )
                sock = getattr(self.socket, "socket", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        machine.do_action = guarded  # type: ignore[method-assign]

    def send_pdu(self, primitive: Any) -> None:
        """Queue a primitive to send, as pynetdicom's, and wake the DUL thread to send it now."""
        super().send_pdu(primitive)
        self.wake.ring()

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
                if self._stream is None or not self.to_provider_queue.empty() or not sock.ready:
                    return
            try:
                pdu, event = self._decode_pdu(header + body)
            except Exception as exc:  # one line with the reason: the bytes are the peer's, not our bug
                log.error(
                    "undecodable PDU (type 0x%02X, %d bytes) from %s: %s: %s",
                    header[0],
                    len(body),
                    self._peer(),
                    type(exc).__name__,
                    escape(str(exc)[:200]),
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
        return escape(getattr(self.assoc.requestor, "address", "") or "?")

    def _limit(self, pdu_type: int) -> int:
        """The most body bytes a PDU of this type may claim here."""
        if pdu_type == _P_DATA_TF and self.state_machine.current_state != "Sta2":
            return int(self.assoc.ae.maximum_pdu_size) or _READ_AHEAD
        return MAX_CONTROL_PDU

    def _refuse(self, reason: str | None) -> None:
        """Abort the association (A-ABORT, then the socket is shut) and free its slot now."""
        if reason is not None:
            log.warning("aborted the association with %s: %s", self._peer(), reason)
        self.event_queue.put("Evt19")  # invalid PDU: A-ABORT
        if self.connection is not None and self.admission is not None:
            self.admission.abort(self.connection, reason or "undecodable PDU")

    def _read_one(
        self, sock: WholePduSocket, connection: Connection | None = None
    ) -> tuple[bytearray, bytearray] | None:
        """One PDU's header and body; ``None`` when the event saying why not has been queued."""
        if connection is not None:
            connection.pdu_begins(time.monotonic(), 6)
            if self.state_machine.current_state == "Sta6":  # established: data sets may come
                sock.widen()
        try:
            header = sock.recv(6)
            if len(header) < 6:
                self.event_queue.put("Evt17")  # transport connection closed
                return None
            pdu_type, _, length = _PDU_HEADER.unpack(header)
            if pdu_type not in _KNOWN_PDU_TYPES:
                self._refuse(f"unknown PDU type 0x{pdu_type:02X}")
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
        except (OSError, TimeoutError):
            log.info("connection from %s closed before the entire PDU was received", self._peer())
            self.event_queue.put("Evt17")
            return None
        if len(body) != length:
            log.info("connection from %s closed mid-PDU (%d of %d bytes)", self._peer(), len(body), length)
            self.event_queue.put("Evt17")
            return None
        return header, body

    def _stream_pdvs(self, body: bytearray) -> bool:
        """Hand a P-DATA-TF's PDVs to DIMSE, writing data set fragments straight to their file."""
        items = _pdv_items(body)
        if items is None:
            return False  # the normal path decodes it, fails and aborts (Evt19)
        dimse = self.assoc.dimse
        view = memoryview(body)
        try:
            for context_id, control, start, end in items:
                message: Any = dimse.message
                if control & _COMMAND or getattr(message, "_data_set_file", None) is None:
                    self._deliver(context_id, bytes(view[start - 1 : end]))
                    continue
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


def take_received(assoc: Association, path: Path) -> FileDigest | None:
    """The fast path's record of the file at ``path`` (removed from the association), if it wrote it."""
    received = getattr(assoc.dul, "received", None)
    return received.pop(str(path), None) if received is not None else None


def close_fast_path(assoc: Association) -> None:
    """End the association's hashing thread (at connection close)."""
    hasher = getattr(assoc.dul, "hasher", None)
    if hasher is not None:
        hasher.close()


class _RequestHandler(RequestHandler):
    def _base_association(self) -> Association:
        """pynetdicom 3.0's ``_create_association``, less its ``deepcopy`` of the supported contexts.

        That copy (171 storage classes x 12 transfer syntaxes) cost ~30 ms of CPU per connection,
        before a byte was read: a flood of connections then starved every other thread of the GIL.
        Negotiation only reads the supported contexts (it builds new ones for its answer), so each
        association gets a shallow copy of the list.
        """
        from pynetdicom.association import Association

        assoc = Association(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        sock = AssociationSocket(assoc, client_socket=self.request)
        assoc.set_socket(sock)
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = list(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in cast("list[tuple[Any, Any]]", self.server._handlers[event]):
                    assoc.bind(event, handler[0], handler[1])
        return assoc

    def _create_association(self) -> Association:
        assoc = self._base_association()
        # Answers are small and must not wait for a delayed ACK (Nagle), as dcmtk's TCP_NODELAY=1 does.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Same object and state, faster recv: the socket was just created and has read nothing yet.
        sock = WholePduSocket.adopt(cast(AssociationSocket, assoc.dul.socket))
        dul = DatasetFastPathDUL.adopt(assoc.dul)
        server = cast("ListenerServer", self.server)
        admission = getattr(server, "admission", None)
        if admission is not None:
            connection = server.take_connection(self.request)
            if connection is not None:
                connection.sock = self.request
                connection.assoc = assoc
                setattr(assoc, "radtrace_connection", connection)  # noqa: B010 - read back by the handlers
                dul.connection = connection
            dul.admission = admission
            sock.budget = admission.budget
        # The reactor waits for work instead of polling: what it reads arrives through these queues.
        gate = _ReactorGate()
        assoc._reactor_checkpoint = gate
        assoc.dimse.msg_queue = _PokingQueue(gate)
        assoc.dul.to_user_queue = _UserQueue(gate, assoc.dul)
        return assoc


class ListenerServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with :class:`WholePduSocket` and ``SO_REUSEPORT``.

    The kernel spreads incoming connections over the sockets of the processes sharing the port.
    """

    admission: Admission | None = None
    """Set by the listener before serving: half-open limits, deadlines, the buffer budget."""

    #: The kernel's queue of connections not yet accepted (socketserver's default is 5): a burst of
    #: connections, hostile or not, is accepted and judged rather than dropped before it is seen.
    request_queue_size = 256

    def take_connection(self, request: Any) -> Connection | None:
        """The admission record :meth:`verify_request` made for this accepted socket."""
        with self._pending_lock:
            return self._pending.pop(id(request), None)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit the connection as half-open, or close it at once (per-source and total limits)."""
        if self.admission is None:
            return True
        host = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
        opened = self.admission.open(host)
        if isinstance(opened, str):
            on_refused = self.on_refused
            if on_refused is not None:
                on_refused(host, opened)
            return False
        with self._pending_lock:
            self._pending[id(request)] = opened
        return True

    on_refused: Any = None
    """Called with (source address, reason) for a connection refused before any PDU (the audit aggregates)."""

    def server_bind(self) -> None:
        """Set ``SO_REUSEPORT`` before pynetdicom's own bind (which sets ``SO_REUSEADDR``)."""
        if hasattr(socket, "SO_REUSEPORT") and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept, then run the TLS handshake with a deadline (``acse_timeout``).

        pynetdicom handshakes in the accepting thread with no timeout: one client that connects and
        stays silent would stop every other association. Here it costs at most the ACSE timeout.
        """
        if self.socket is None:  # pragma: no cover - the server is closed
            raise OSError("server socket closed")
        client, address = self.socket.accept()
        if self.ssl_context is not None:
            client.settimeout(self.ae.acse_timeout)
            try:
                client = self.ssl_context.wrap_socket(client, server_side=True)
            except OSError:
                client.close()
                raise
            client.settimeout(None)
        return client, address

    def server_activate(self) -> None:
        """Use the faster per-association socket, then listen."""
        self.RequestHandlerClass = _RequestHandler
        self._pending: dict[int, Connection] = {}
        self._pending_lock = threading.Lock()
        super().server_activate()
