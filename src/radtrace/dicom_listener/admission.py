"""Who holds the listener's connections, and for how long: admission, deadlines and the memory budget.

A TCP connection is *half-open* until its A-ASSOCIATE-RQ has passed the association policy; only
then does it take one of ``listener.max_associations`` slots (:meth:`Admission.admit`). Half-open
connections are bounded per source address and in total, and each must reach an established
association within ``negotiation_timeout_s`` of connecting, whatever it sends. Inside an
association, each PDU must arrive within ``pdu_grace_s`` plus its length at
``min_transfer_rate_bytes_s``, and the whole association within ``max_association_s``. A
connection past a deadline is cut off (its socket shut down, which ends pynetdicom's threads) and
frees its slot at once.

:class:`BufferBudget` bounds the PDU bytes all connections hold in memory together
(``max_buffered_bytes``). :meth:`Admission.overdue` is a pure decision over the connections' clocks;
the :class:`Watchdog` thread applies it.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import socket
import ssl
import struct
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from radtrace.config import ListenerSettings
from radtrace.dicom_listener.peer_log import PeerLog
from radtrace.dicom_listener.rq_budget import NegotiationBudget
from radtrace.dicom_listener.shared_counts import SharedSourceCounts
from radtrace.logging import escape

__all__ = ["Admission", "BufferBudget", "Connection", "Watchdog", "timeout_setting"]

log = logging.getLogger(__name__)

#: How often the watchdog looks at the connections' clocks.
WATCHDOG_INTERVAL_S: Final = 0.25
#: How long a connection that is being aborted may take to say so before its socket is shut.
ABORT_GRACE_S: Final = 1.0
#: The longest a shut connection is kept watched for its threads to end (after that the collector frees it).
FORGET_AFTER_S: Final = 30.0
#: A-ABORT PDU, source 2 (service provider), reason 0 (not specified): PS3.8 9.3.8.
A_ABORT_BY_PROVIDER: Final = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"
#: ``SO_LINGER`` on, 0 s: closing the socket sends a TCP reset and drops what is unsent.
RESET_ON_CLOSE: Final = struct.pack("ii", 1, 0)


class BufferBudget:
    """A count of PDU bytes held in memory by all connections, refused past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held = 0
        self.peak = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Bytes taken and not yet given back."""
        return self._held

    def take(self, count: int) -> bool:
        """Take ``count`` bytes if the limit allows; whether it did."""
        with self._lock:
            if self._held + count > self.limit:
                return False
            self._held += count
            self.peak = max(self.peak, self._held)
            return True

    def give_back(self, count: int) -> None:
        """Return bytes taken with :meth:`take`."""
        with self._lock:
            self._held = max(0, self._held - count)


@dataclass(eq=False)
class Connection:
    """One accepted TCP connection and its clocks (monotonic seconds)."""

    host: str
    opened_at: float
    port: int = 0
    """The listener's port it was accepted on (0: not known)."""
    tls: bool = False
    """Accepted on a TLS port."""
    plain_port: bool = False
    """Accepted on ``listener.plain_port`` (without TLS, beside a TLS ``listener.port``)."""
    sock: socket.socket | None = None
    assoc: Any = None
    admitted: bool = False
    established_at: float | None = None
    pdu_started_at: float | None = None
    pdu_expected: int = 0
    closing_since: float | None = None
    shut_at: float | None = None
    """When the watchdog shut the socket of this closing connection (it is forgotten once its threads end)."""
    cut_reason: str | None = None
    """Why it was aborted or cut off (the first reason given)."""
    timed_out: bool = False
    shut_down: bool = False
    """Whether :meth:`shut` has run: what its socket reads from then on is no PDU of the peer's (on TLS, the raw
    records: the shut ends the TLS layer), and nothing more is said of it."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def pdu_begins(self, now: float, expected: int) -> None:
        """A PDU has started to arrive; ``expected`` bytes of it (header included) so far announced."""
        self.pdu_started_at = now
        self.pdu_expected = expected

    def pdu_ends(self) -> None:
        """The PDU was read whole (or the read gave up)."""
        self.pdu_started_at = None
        self.pdu_expected = 0

    def mark_timed_out(self) -> bool:
        """Record that a timeout ended the connection; whether this was the first (one audit event per connection)."""
        with self.lock:
            first = not self.timed_out
            self.timed_out = True
            return first

    def shut(self, *, abort: bool = False) -> None:
        """Shut the socket both ways: pynetdicom's reads end and its threads close the association.

        With ``abort`` an A-ABORT (source: service provider) goes first, so that an established peer
        learns why (PS3.8 9.3.8); never on TLS, whose socket only its own thread may write.

        Where the peer's bytes wait unread (:func:`_unread`), the close that follows (by the association's thread) ends
        the connection with a reset (RST), not an orderly FIN: a sender mid-C-STORE whose data had filled the listener's
        receive window (a listener slow to read) was otherwise left waiting. A connection with nothing unread (released,
        idle) still ends with a FIN: a reset there is an error at the peer (pynetdicom's own requestor then leaves its
        socket open). The association's thread reads what was queued before it closes, so no reset was due, and the
        kernel kept the closed socket in FIN-WAIT-2 for ``tcp_fin_timeout`` (60 s), answering the sender's zero-window
        probes with the last window it advertised, 0: the sender, with nothing it may send, was told nothing for a
        minute, whether a stop or the watchdog (a deadline passed mid-transfer) had cut it off. The A-ABORT and the FIN
        are sent at once; only what the peer would not take by the close is dropped.
        """
        sock = self.sock
        if sock is None:
            return
        self.shut_down = True
        if abort and not isinstance(sock, ssl.SSLSocket):
            with contextlib.suppress(OSError):  # a full send buffer: the peer is not reading, it just goes
                sock.send(A_ABORT_BY_PROVIDER, socket.MSG_DONTWAIT)
        with contextlib.suppress(OSError, ValueError):  # closed already (ValueError: a TLS socket detached)
            if _unread(sock):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _unread(sock: socket.socket) -> int:
    """How many of the peer's bytes wait in the socket's receive queue, unread (FIONREAD; a TLS socket's raw bytes)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    return count[0]


class Admission:
    """The listener's connections: half-open limits, association slots, deadlines."""

    def __init__(
        self, settings: ListenerSettings, *, clock: Any = time.monotonic, shared: SharedSourceCounts | None = None
    ) -> None:
        """``shared``: the per-source counts of the other listener processes on the port, when there are some."""
        self.settings = settings
        self.shared = shared
        self.budget = BufferBudget(settings.max_buffered_bytes)
        self.negotiation = NegotiationBudget.for_settings(
            settings, table=None if shared is None else shared.negotiation
        )
        self.clock = clock
        #: the log lines peers cause (refusals, aborts, cut-offs): one per source and kind per interval
        self.peer_log = PeerLog(settings.refusal_audit_interval_s, clock=clock)
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()

    # --- connection lifetime ------------------------------------------------------------------

    def open(self, host: str) -> Connection | str:
        """Register a new connection from ``host``, or say why it is refused."""
        with self._lock:
            half_open = [c for c in self._connections if not c.admitted and c.closing_since is None]
            if len(half_open) >= self.settings.max_half_open:
                return "too many connections waiting to associate"
            if sum(1 for c in half_open if c.host == host) >= self.settings.max_half_open_per_source:
                return "too many connections waiting to associate from this source"
            connection = Connection(host=host, opened_at=self.clock())
            self._connections.add(connection)
            return connection

    def admit(self, connection: Connection) -> int:
        """Give ``connection`` an association slot; the slots now taken, this one included.

        The caller refuses (and calls :meth:`release`) when that is more than ``max_associations``.
        """
        with self._lock:
            self._connections.add(connection)
            connection.admitted = True
            self._publish()
            return sum(1 for c in self._connections if c.admitted and c.closing_since is None)

    def _publish(self) -> None:
        """Publish the associations held per source to the other processes (with ``self._lock`` held)."""
        if self.shared is not None:
            self.shared.publish(Counter(c.host for c in self._connections if c.admitted and c.closing_since is None))

    def release(self, connection: Connection | None) -> None:
        """The connection is closed or being closed: it holds no slot and no half-open place from now.

        It stays watched until :meth:`sweep` shuts its socket, :data:`ABORT_GRACE_S` later: an association
        that pynetdicom ended (its network timeout, an abort) may still have its DUL thread blocked in a
        read of a PDU the peer never finishes, with the A-ABORT waiting behind it.
        """
        if connection is None:
            return
        with self._lock:
            if connection.closing_since is None:
                connection.closing_since = self.clock()
                if connection.admitted:
                    self._publish()

    def _forget(self, connection: Connection) -> None:
        with self._lock:
            self._connections.discard(connection)
            if connection.admitted and connection.closing_since is None:
                self._publish()

    def abort(self, connection: Connection, reason: str) -> None:
        """Free the connection's slot now and shut its socket after :data:`ABORT_GRACE_S` (for an A-ABORT to go).

        Whoever decides the abort logs it, once, there: the socket's shut after the grace is never logged (nor
        returned by :meth:`sweep`), whether or not the connection's threads have ended by then. Before, the
        watchdog logged an abort a second time when a thread outlived the grace (a C-STORE handler on a slow
        disk), unless the caller had remembered to say it had logged it.
        """
        with self._lock:
            if connection.cut_reason is None:
                connection.cut_reason = reason
            if connection.closing_since is None:
                connection.closing_since = self.clock()
                if connection.admitted:
                    self._publish()

    @property
    def connections(self) -> list[Connection]:
        """A snapshot of the connections."""
        with self._lock:
            return list(self._connections)

    def held_by(self, host: str) -> int:
        """Associations admitted from ``host`` and not closing, by this process and the others sharing the port."""
        with self._lock:
            held = sum(1 for c in self._connections if c.admitted and c.closing_since is None and c.host == host)
        return held + (self.shared.others(host) if self.shared is not None else 0)

    def slots_taken(self) -> int:
        """Associations admitted and not closing."""
        with self._lock:
            return sum(1 for c in self._connections if c.admitted and c.closing_since is None)

    def held_per_door(self) -> Counter[tuple[int, bool]]:
        """Associations admitted and not closing in this process, per listener port and whether it is the TLS one."""
        with self._lock:
            return Counter((c.port, c.tls) for c in self._connections if c.admitted and c.closing_since is None)

    def half_open_by_source(self) -> Counter[str]:
        """Half-open connections per source address."""
        with self._lock:
            return Counter(c.host for c in self._connections if not c.admitted and c.closing_since is None)

    # --- deadlines ------------------------------------------------------------------------------

    def overdue(self, connection: Connection, now: float) -> str | None:
        """Why ``connection`` must be cut off now, or ``None`` (a pure decision over its clocks)."""
        settings = self.settings
        if connection.closing_since is not None:
            return "aborted" if now - connection.closing_since >= ABORT_GRACE_S else None
        if connection.established_at is None:
            if now - connection.opened_at > settings.negotiation_timeout_s:
                return f"association not established within {settings.negotiation_timeout_s:g} s"
            return None
        if now - connection.established_at > settings.max_association_s:
            return f"association lasted longer than {settings.max_association_s:g} s"
        started = connection.pdu_started_at
        if started is not None:
            allowed = settings.pdu_grace_s + connection.pdu_expected / settings.min_transfer_rate_bytes_s
            if now - started > allowed:
                return f"PDU slower than {settings.min_transfer_rate_bytes_s} bytes/s"
        return None

    def sweep(self) -> list[tuple[Connection, str]]:
        """Cut off every overdue connection and forget closed ones; what was cut here, for a deadline, and why.

        A connection aborted by someone else (:meth:`abort`) is shut here once its grace is over, and not listed:
        its abort was logged where it was decided.
        """
        now = self.clock()
        cut = []
        for connection in self.connections:
            assoc = connection.assoc
            if assoc is not None and connection.established_at is None and assoc.is_established:
                connection.established_at = now
            # Its threads have ended: closed (released or aborted: nothing is left to send), or without our handlers
            # hearing of it. Forgotten now, what they held given back at once (not after the grace).
            closed = connection.closing_since is not None or connection.opened_at < now - ABORT_GRACE_S
            if assoc is not None and closed and _ended(connection):
                self._forget(connection)
                connection.shut()  # the DUL may still hold the socket (Sta13 waits for the peer to close)
                _free_ended(connection)
                continue
            reason = self.overdue(connection, now)
            if reason is None:
                continue
            if reason == "aborted":
                if connection.shut_at is None:
                    connection.shut_at = now
                    connection.shut()
                # kept (holding no slot) until its threads have ended, so that what they held is given back now
                if assoc is None or _ended(connection) or now - connection.shut_at > FORGET_AFTER_S:
                    self._forget(connection)
                    _free_ended(connection)
                continue  # not a cut of the watchdog's: whoever aborted it logged why
            # cut off here. The listener sends only small PDUs, each whole in one send: none is split
            self.abort(connection, reason)
            connection.shut_at = now
            connection.shut(abort=connection.established_at is not None)
            if assoc is None or _ended(connection):
                self._forget(connection)
                _free_ended(connection)
            cut.append((connection, reason))
        return cut


def _ended(connection: Connection) -> bool:
    """Whether both threads of the connection's association (the association's and its DUL's) have ended.

    Not merely "not alive": pynetdicom makes the association, triggers EVT_CONN_OPEN and only then starts its
    thread (which starts the DUL's), and on a loaded machine that came over :data:`ABORT_GRACE_S` after the accept;
    the sweep took the association not yet started for one that had ended and shut its socket. A thread's ``ident``
    is set once it has started.
    """
    assoc = connection.assoc
    dul = getattr(assoc, "dul", None)
    return (
        assoc is not None and assoc.ident is not None and not assoc.is_alive() and (dul is None or not dul.is_alive())
    )


def _free_ended(connection: Connection) -> None:
    """Give back what an ended association holds beyond its Python objects, now rather than at the next garbage
    collection: its read-ahead buffer (1 MiB once established) and its wake socket pair (two descriptors).

    The association's objects refer to each other, so only the cyclic collector frees them, seconds later: a flood
    of short associations (800 from four sources in 5 s) held 1,262 descriptors and +545 MB at its peak that way
    (136 and +87 MB now). Done only once both of its threads have ended (nothing reads the buffer or waits on the
    pair any more); a connection shut while they run is kept watched until they end (at most ``FORGET_AFTER_S``).
    """
    dul = getattr(connection.assoc, "dul", None)
    if dul is None or not _ended(connection):
        return
    release = getattr(dul.socket, "release_buffers", None)
    if release is not None:
        release()
    wake = getattr(dul, "wake", None)
    if wake is not None:
        with contextlib.suppress(OSError):
            wake.close()


#: The setting each of :meth:`Admission.overdue`'s reasons comes from, by the reason's first words.
_TIMEOUT_SETTINGS: Final = (
    ("association not established within", "listener.negotiation_timeout_s"),
    ("association lasted longer than", "listener.max_association_s"),
    ("PDU slower than", "listener.min_transfer_rate_bytes_s"),
)


def timeout_setting(reason: str) -> str | None:
    """The setting whose limit :meth:`Admission.overdue`'s ``reason`` says was passed (``None``: not a timeout)."""
    return next((setting for start, setting in _TIMEOUT_SETTINGS if reason.startswith(start)), None)


class Watchdog:
    """A thread that applies :meth:`Admission.sweep` every :data:`WATCHDOG_INTERVAL_S`.

    ``on_cut`` hears of each connection cut off for a deadline (with the reason), after its log line.
    """

    def __init__(
        self,
        admission: Admission,
        *,
        on_sweep: Callable[[], None] = lambda: None,
        on_cut: Callable[[Connection, str], None] = lambda connection, reason: None,
    ) -> None:
        self.admission = admission
        self._on_sweep = on_sweep
        self._on_cut = on_cut
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="radtrace-listener-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(WATCHDOG_INTERVAL_S):
            self.sweep_once()

    def sweep_once(self) -> None:
        """One turn: cut off the overdue connections, each with its log line (only the watchdog's own cuts)."""
        try:
            for connection, reason in self.admission.sweep():
                suffix = self.admission.peer_log.admit(connection.host, "cut off")
                if suffix is not None:
                    log.warning("cut off a connection from %s: %s%s", escape(connection.host), escape(reason), suffix)
                self._on_cut(connection, reason)
            self._on_sweep()
        except Exception:  # the watchdog must outlive any one connection's oddity
            log.exception("listener watchdog failed a sweep")
