"""The listener's association socket: reads ahead, and never sizes a buffer by a peer's claim.

pynetdicom 3.0 reads each PDU in 4 KiB ``recv`` calls, appending to a growing ``bytearray``: for an
8 MB instance that is some 2,000 system calls and reallocations, the larger part of the receive
cost. :class:`WholePduSocket` reads ahead up to 1 MiB per ``recv_into``. A PDU body being read grows
with the bytes that actually arrive, each growth taken from the listener's
:class:`~radtrace.dicom_listener.admission.BufferBudget`.

Over TLS it also tells what arrived from what the TLS layer gave: :meth:`WholePduSocket.tls_bytes_without_data`.
A peer that sends part of a TLS record (or records that decrypt to nothing) and then closes or resets gave no
application data, yet its bytes arrived: the kernel's count of the bytes received (Linux ``TCP_INFO``) says so.
"""

from __future__ import annotations

import fcntl
import select
import socket
import ssl
import struct
import termios
from typing import Final, cast

from pynetdicom.transport import AssociationSocket

from radtrace.dicom_listener.admission import BufferBudget

__all__ = [
    "HALF_OPEN_WAIT_S",
    "MAX_CONTROL_PDU",
    "READY_WAIT_S",
    "READ_AHEAD",
    "PduRefusedError",
    "WholePduSocket",
    "tcp_bytes_received",
]

#: Longest wait for incoming data per DUL loop. Something to send wakes it at once
#: (:class:`~radtrace.dicom_listener.reactor.Wake`); the wait bounds how late the DUL notices its
#: timers and being stopped.
READY_WAIT_S = 0.02
#: The same wait for a connection that has not sent its A-ASSOCIATE-RQ yet.
HALF_OPEN_WAIT_S: Final = 0.5
#: Bytes read from the socket at most per system call, once the association is established.
READ_AHEAD: Final = 1024 * 1024
#: The read-ahead of a connection still negotiating: a stranger costs little memory.
_FIRST_READ_AHEAD: Final = 64 * 1024
#: Largest PDU other than a P-DATA-TF (an A-ASSOCIATE-RQ with every context and item stays far below).
MAX_CONTROL_PDU: Final = 64 * 1024


#: ``tcpi_bytes_received`` in Linux's ``struct tcp_info`` (since 4.1): a u64 at byte 128 (linux/tcp.h).
_TCPI_BYTES_RECEIVED: Final = struct.Struct("=Q")
_TCPI_BYTES_RECEIVED_AT: Final = 128


def tcp_bytes_received(sock: socket.socket) -> int | None:
    """The bytes of TCP payload the kernel has received on ``sock`` so far, read or not (``None``: not known here).

    Still answered after the peer's reset: the count, like the unread data, stays with the socket until it is closed.
    """
    info_option = getattr(socket, "TCP_INFO", None)
    if info_option is None:  # not Linux
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, info_option, _TCPI_BYTES_RECEIVED_AT + 8)
    except (OSError, ValueError):  # closed meanwhile
        return None
    if len(info) < _TCPI_BYTES_RECEIVED_AT + 8:  # a kernel before 4.1
        return None
    return int(_TCPI_BYTES_RECEIVED.unpack_from(info, _TCPI_BYTES_RECEIVED_AT)[0])


def _unread(sock: socket.socket) -> int | None:
    """The bytes waiting in the kernel to be read from ``sock`` (``FIONREAD``)."""
    count = struct.pack("i", 0)
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, count))[0])
    except (OSError, ValueError):
        return None


#: Readings of :func:`_handshake_bytes` before it gives up on a peer whose bytes keep arriving.
_STEADY_TRIES: Final = 8


def _handshake_bytes(tls: ssl.SSLSocket) -> int | None:
    """The TCP payload bytes the TLS handshake took, on a TLS socket nothing has read from since its handshake: what
    the kernel received less what waits unread. Counted between two equal readings of the received bytes (a packet
    arriving in between would be counted twice); ``None`` when not known."""
    for _ in range(_STEADY_TRIES):
        before, unread, after = tcp_bytes_received(tls), _unread(tls), tcp_bytes_received(tls)
        if before is None or unread is None or after is None:
            return None
        if before == after:
            return after - unread
    return None  # bytes kept arriving: left unjudged rather than miscounted (they will be read and judged as data)


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
        fast.received_bytes = 0
        fast.tls_ragged_end = False
        fast._tls_start = None
        if isinstance(fast.socket, ssl.SSLSocket):
            fast._tls_start = _handshake_bytes(fast.socket)
        return fast

    budget: BufferBudget | None
    """Where the bytes of a PDU body being read are taken from (``None``: unbounded, for tests)."""
    held: int
    """Bytes taken from :attr:`budget` for the PDU being read; :meth:`give_back` returns them."""
    received_bytes: int
    """Bytes read from the peer so far (for the audit of a connection that timed out); over TLS, application data."""
    tls_ragged_end: bool
    """Over TLS, the connection ended without the peer's close_notify (a close or reset mid-session, or mid-record).
    The listener's TLS sockets are made with ``suppress_ragged_eofs=False``: such an end is told from a TLS close here,
    and then read as the end it is (0 bytes), as it was with ssl's default."""
    _tls_start: int | None
    """The TCP payload bytes the TLS handshake took (``None``: a plain socket, or not known on this system)."""

    def tls_bytes_without_data(self) -> int:
        """Over TLS, the bytes that arrived after the handshake when none of them made application data and the
        connection ended without the peer's close_notify: a record cut short, records that do not decrypt to data.

        0 when some application data came (:attr:`received_bytes` says how much), when the peer ended the TLS session
        with its close_notify (a health check that closes properly), on the plain port, and where the kernel does not
        say what it received (not Linux). Bytes that never reached this host are not known to it: a peer whose own
        kernel still held them (Nagle's algorithm, ``TCP_CORK``) and that resets (SO_LINGER 0, or a close with data
        of ours unread) discards them unsent, and that is a bare reset on the wire.
        """
        start, tls = self._tls_start, self.socket
        if start is None or tls is None or self.received_bytes or not self.tls_ragged_end:
            return 0
        received = tcp_bytes_received(tls)
        return max(0, received - start) if received is not None else 0

    def widen(self) -> None:
        """Read ahead the full :data:`READ_AHEAD` from now on (the association is established)."""
        if len(self._ahead) < READ_AHEAD:
            wider = bytearray(READ_AHEAD)
            pending = self._ahead_end - self._ahead_start
            wider[:pending] = self._ahead[self._ahead_start : self._ahead_end]
            self._ahead, self._ahead_start, self._ahead_end = wider, 0, pending

    def release_buffers(self) -> None:
        """Drop the read-ahead buffer: the association has ended and its threads with it (nothing reads it now)."""
        self._ahead = bytearray()
        self._ahead_start = self._ahead_end = 0

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
                    got = self._recv_into(sock, view[read:], len(buffer) - read)
                    self.received_bytes += got
                else:
                    got = self._recv_into(sock, self._ahead, ahead_size)
                    self.received_bytes += got
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

    def _recv_into(self, sock: socket.socket, target: memoryview | bytearray, size: int) -> int:
        """``sock.recv_into``; over TLS, an end without close_notify reads as an end (0), and is noted."""
        try:
            return sock.recv_into(target, size)
        except ssl.SSLEOFError:
            self.tls_ragged_end = True
            return 0

    def _take(self, target: memoryview) -> int:
        """Copy read-ahead bytes into ``target``; how many."""
        count = min(len(target), self._ahead_end - self._ahead_start)
        if count:
            with memoryview(self._ahead) as ahead:
                target[:count] = ahead[self._ahead_start : self._ahead_start + count]
            self._ahead_start += count
        return count
