"""The listener's TCP server: pynetdicom's threaded server with a faster receive path per association.

:class:`ListenerServer` hands each association a socket that reads ahead
(:class:`~radtrace.dicom_listener.pdu_socket.WholePduSocket`), a DUL that streams data set fragments
straight to their file (:class:`~radtrace.dicom_listener.fast_path.DatasetFastPathDUL`) and threads
that wait for work instead of polling every millisecond (:mod:`radtrace.dicom_listener.reactor`). It
binds with ``SO_REUSEPORT`` so that several listener processes can share one port (pynetdicom holds
the GIL; processes are how it uses several cores). Connections are admitted, timed and cut off by
:mod:`radtrace.dicom_listener.admission`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Final, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from radtrace.dicom_listener.accept_loop import WakeableAcceptLoop
from radtrace.dicom_listener.admission import Admission, Connection
from radtrace.dicom_listener.data_stream import _Hasher, _Stream
from radtrace.dicom_listener.fast_path import DatasetFastPathDUL, _pdv_items, close_fast_path, take_received
from radtrace.dicom_listener.handshake_failures import HANDSHAKE_FAILED, audit_details, describe_failure, peer_address
from radtrace.dicom_listener.pdu_socket import (
    MAX_CONTROL_PDU,
    READ_AHEAD,
    READY_WAIT_S,
    PduRefusedError,
    WholePduSocket,
)
from radtrace.dicom_listener.pixel_budget import instance_byte_limit
from radtrace.dicom_listener.reactor import REACTOR_IDLE_S, PokingQueue, ReactorGate, UserQueue, Wake
from radtrace.dicom_listener.rq_budget import REFUSED_REASON, thread_cpu_s
from radtrace.dicom_listener.served import serve_only_what_is_served
from radtrace.dicom_listener.state_guard import PROTOCOL_VIOLATION
from radtrace.logging import escape

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger(__name__)

#: Shortest time between two full garbage collections by the accept loop.
GC_INTERVAL_S: Final = 2.0

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

# The names the receive path had when it was one module (its tests and benchmarks still use them).
_READ_AHEAD = READ_AHEAD
_Wake, _ReactorGate = Wake, ReactorGate
_RECEIVE_PATH = (REACTOR_IDLE_S, _Hasher, _Stream, _pdv_items, UserQueue)


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
            # the door goes with each refusal the DUL audits (protocol violation, budget spent), as at accept
            on_refused = server.on_refused
            dul.on_refused = None if on_refused is None else functools.partial(on_refused, **server.door())
            dul.on_timed_out = server.on_timed_out
            dul.max_data_set_bytes = instance_byte_limit(admission.settings.max_image_pixels)
            sock.budget = admission.budget
        serve_only_what_is_served(assoc, getattr(server, "on_request_refused", None))
        _guard_negotiation(assoc, dul)
        # The reactor waits for work instead of polling: what it reads arrives through these queues.
        gate = ReactorGate()
        assoc._reactor_checkpoint = gate
        assoc.dimse.msg_queue = PokingQueue(gate)
        assoc.dul.to_user_queue = UserQueue(gate, assoc.dul)
        return assoc


#: The reason of the audit event of an association whose A-ASSOCIATE-RQ could not be negotiated (as the DUL's
#: protocol violations: :mod:`radtrace.dicom_listener.state_guard`).
NEGOTIATION_FAILED: Final = PROTOCOL_VIOLATION


def _guard_negotiation(assoc: Association, dul: DatasetFastPathDUL) -> None:
    """An A-ASSOCIATE-RQ that pynetdicom decodes but cannot negotiate is aborted, logged and audited.

    pynetdicom raised from the association's thread, outside any handler, for a presentation context item without
    its abstract syntax sub-item (``TypeError: 'abstract_syntax' must be str, bytes or UID, not 'NoneType'`` in
    ``negotiate_as_acceptor``), found by fuzzing the item lengths: a 20-line traceback on stderr for each such
    request, no answer to the peer (it waited for the network timeout), and no audit event. Whatever negotiation
    raises now ends the association as a protocol violation: an A-ABORT (service provider), one line per source
    and interval (:class:`~radtrace.dicom_listener.peer_log.PeerLog`), an ``association_rejected`` audit.
    """
    acse = assoc.acse
    negotiate = acse.negotiate_association

    def guarded() -> None:
        try:
            negotiate()
        except Exception as exc:  # a peer's request: whatever pynetdicom raises, the peer is refused
            _negotiation_failed(assoc, dul, exc)

    acse.negotiate_association = guarded  # type: ignore[method-assign]


def _negotiation_failed(assoc: Association, dul: DatasetFastPathDUL, exc: BaseException) -> None:
    """End the association whose negotiation raised ``exc``; never raises (the thread then closes the socket)."""
    where = traceback.extract_tb(exc.__traceback__)[-1].name if exc.__traceback__ is not None else "?"
    what = f"A-ASSOCIATE-RQ that could not be negotiated ({type(exc).__name__} in {where})"  # never the message
    dul.refused = True  # what the peer sends after is read and dropped
    try:
        if (suffix := dul._peer_log(NEGOTIATION_FAILED)) is not None:
            log.warning("aborted the association with %s: %s%s", dul._peer(), escape(what), suffix)
        if dul.connection is not None and dul.admission is not None:
            dul.admission.abort(dul.connection, what)
        if dul.on_refused is not None:
            dul.on_refused(dul._host(), NEGOTIATION_FAILED, detail=what)
    except Exception as failure:  # the abort below must still go
        log.error("could not record the aborted association (%s)", type(failure).__name__)
    with contextlib.suppress(Exception):  # the peer may be gone already
        if not assoc.is_aborted:
            assoc.acse.send_abort(0x02)
    assoc.kill()


def _made_by(exc: BaseException) -> ssl.SSLSocket | None:
    """The TLS socket that ``wrap_socket`` made before it raised ``exc``, if any: it holds the connection's descriptor.

    ssl.py's constructor takes the descriptor from the accepted socket first, then asks for the peer's address; a peer
    that reset the connection by then raises ``ConnectionResetError`` from that constructor, and the half-made socket,
    never returned, kept the descriptor until the garbage collector closed it (with a ResourceWarning)."""
    frames = exc.__traceback__
    while frames is not None:
        made = frames.tb_frame.f_locals.get("self")
        if isinstance(made, ssl.SSLSocket):
            return made
        frames = frames.tb_next
    return None


def _host(address: Any) -> str:
    """The host of a socket address (``(host, port, ...)`` for TCP)."""
    return str(address[0]) if isinstance(address, tuple) else str(address)


class ListenerServer(WakeableAcceptLoop, ThreadedAssociationServer):
    """pynetdicom's threaded server with :class:`WholePduSocket` and ``SO_REUSEPORT``.

    The kernel spreads incoming connections over the sockets of the processes sharing the port. Its accept loop
    ends as soon as :meth:`shutdown` is called (:class:`~radtrace.dicom_listener.accept_loop.WakeableAcceptLoop`).
    """

    admission: Admission | None = None
    """Set by the listener before serving: half-open limits, deadlines, the buffer budget."""

    #: The kernel's queue of connections not yet accepted (socketserver's default is 5): a burst of
    #: connections, hostile or not, is accepted and judged rather than dropped before it is seen.
    request_queue_size = 256

    def service_actions(self) -> None:
        """pynetdicom's ``gc.collect()`` every 60 turns of the accept loop, but at most every :data:`GC_INTERVAL_S`.

        A turn is a connection (or a poll interval when idle): under a flood of connections refused at accept,
        a full collection (~60 ms in a listener's heap) every 60 of them took a fifth of the process's core.
        """
        now = time.monotonic()
        if self._gc[0] >= self._gc[1] and now - self._collected_at < GC_INTERVAL_S:
            return  # the count stays full: the next turn past the interval collects
        if self._gc[0] >= self._gc[1]:
            self._collected_at = now
        super().service_actions()

    _collected_at: float = 0.0

    def take_connection(self, request: Any) -> Connection | None:
        """The admission record :meth:`verify_request` made for this accepted socket."""
        with self._pending_lock:
            return self._pending.pop(id(request), None)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit the connection as half-open, or close it at once (per-source and total limits)."""
        if self.admission is None:
            return True
        host = _host(client_address)
        opened = self.admission.open(host)
        if isinstance(opened, str):
            on_refused = self.on_refused
            if on_refused is not None:
                on_refused(host, opened, **self.door())
            return False
        opened.port, opened.tls, opened.plain_port = self.door()["port"], self.ssl_context is not None, self.plain_port
        with self._pending_lock:
            self._pending[id(request)] = opened
        return True

    plain_port: bool = False
    """This server is ``listener.plain_port``'s (the listener's caller rules for that port apply)."""

    def door(self) -> dict[str, Any]:
        """Which port a refusal came in by, for its audit event: ``port`` and ``tls``."""
        return {"port": int(self.server_address[1]), "tls": self.ssl_context is not None}

    on_refused: Any = None
    """Called with (source address, reason, **details) for a connection refused before any PDU, or an association
    aborted for breaking the protocol (the audit aggregates)."""

    on_timed_out: Any = None
    """Called with (connection, setting, detail) for a connection that one of pynetdicom's timeouts ended."""

    on_request_refused: Any = None
    """Called with (association, :class:`~radtrace.dicom_listener.served.RequestProblem`) for each DIMSE request
    refused."""

    def server_bind(self) -> None:
        """Set ``SO_REUSEPORT`` before pynetdicom's own bind (which sets ``SO_REUSEADDR``)."""
        if hasattr(socket, "SO_REUSEPORT") and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept, and refuse a source whose negotiation budget is spent; the TLS handshake is not done here.

        pynetdicom handshakes in the accepting thread: one client that connected and stayed silent stopped every
        other TLS connection for the whole handshake deadline (29.8 s measured: a legitimate C-ECHO waited behind
        one silent TCP connection), and a peer reconnecting kept the TLS port shut. The handshake runs in the
        connection's own thread instead (:meth:`process_request_thread`), after the half-open limits admitted it.
        """
        if self.socket is None:  # pragma: no cover - the server is closed
            raise OSError("server socket closed")
        client, address = self.socket.accept()
        host = _host(address)
        if self.admission is not None and not self.admission.negotiation.allows(host):
            # Before the handshake and the thread: a source that spent its budget costs an accept and a close.
            client.close()
            if self.on_refused is not None:
                with contextlib.suppress(Exception):  # an exception here would end serve_forever
                    self.on_refused(host, REFUSED_REASON, **self.admission.negotiation.details(host), **self.door())
            raise OSError(REFUSED_REASON)  # socketserver drops the request quietly
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """socketserver's: the connection's own thread. Where that thread cannot start (``RuntimeError: can't start
        new thread``: the process's or the cgroup's thread limit reached, a flood of connections), the admission
        record :meth:`verify_request` made is dropped and its half-open place freed at once; socketserver then says
        it (``handle_error``: one line) and closes the socket.

        Before, the record stayed: the place until the negotiation deadline (``listener.max_half_open`` such failures
        refused every connection until then), and the entry keyed by the socket's ``id()`` for good, handed to a later
        socket that came to have the same ``id()`` (its host and port then those of the failed one); and the thread
        never started stayed in socketserver's list, whose join at stop raised ``cannot join thread before it is
        started`` when it was the last connection's."""
        try:
            super().process_request(request, client_address)
        except BaseException:
            connection = self.take_connection(request)
            if connection is not None and self.admission is not None:
                self.admission.release(connection)
            threads = getattr(self, "_threads", None)
            if threads is not None:  # the thread never started: server_close's join would raise on it
                threads.reap()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake (deadline: the ACSE timeout; the half-open limits and the
        negotiation deadline apply while it runs), then the association."""
        if self.ssl_context is not None:
            wrapped = self._handshake(request, client_address)
            if wrapped is None:
                return
            request = wrapped
        super().process_request_thread(request, client_address)

    def _handshake(self, client: socket.socket, client_address: Any) -> ssl.SSLSocket | None:
        """The server side of the TLS handshake on ``client``; ``None`` (the socket closed, its half-open place
        freed, one log line said) when it fails or runs past its deadline."""
        assert self.ssl_context is not None
        host = _host(client_address)
        with self._pending_lock:
            connection = self._pending.pop(id(client), None)
        client.settimeout(self.ae.acse_timeout)
        started = thread_cpu_s()
        wrapped: ssl.SSLSocket | None = None
        try:
            # wrapping takes the descriptor from ``client``: the watchdog must be given the wrapped socket to shut.
            # An end without close_notify raises: WholePduSocket reads it as the end and tells it from a TLS close.
            wrapped = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=False
            )
            if connection is not None:
                connection.sock = wrapped  # the negotiation deadline shuts it mid-handshake
            wrapped.do_handshake()
            wrapped.settimeout(None)  # a socket the watchdog closed meanwhile raises here (EBADF)
        except Exception as exc:  # any failure: the socket closed, its place freed, one line, one audit, no traceback
            with contextlib.suppress(Exception):
                (wrapped or _made_by(exc) or client).close()
            cut = connection is not None and connection.cut_reason is not None  # the watchdog said why
            if connection is not None and self.admission is not None:
                self.admission.release(connection)
            if not cut and not self._stop_asked:
                self._handshake_failed(client_address, exc)
            return None
        finally:  # the handshake (a private-key operation, milliseconds) is negotiation CPU too
            if self.admission is not None:
                self.admission.negotiation.charge(host, thread_cpu_s() - started)
        if connection is not None:
            connection.sock = wrapped
            with self._pending_lock:
                self._pending[id(wrapped)] = connection
        return wrapped

    def _handshake_failed(self, client_address: Any, exc: BaseException) -> None:
        """A failed handshake: its one log line, unless its source has had one this interval (then it is counted), and
        its audit event.

        A peer that fails the handshake (no client certificate, one that ``listener.tls.ca_bundle`` does not accept,
        one that does not trust ours, plain DICOM to the TLS port) failed node authentication: IHE ATNA's Security
        Alert, type Node Authentication (PS3.15 A.5.3.11). Each is a refusal (``on_refused``: counted in the metrics,
        recorded as ``association_rejected`` with the reason :data:`HANDSHAKE_FAILED`, the door, why and OpenSSL's
        reason code), aggregated per source and ``listener.refusal_audit_interval_s`` as every refusal is
        (:class:`~radtrace.dicom_listener.refusals.RefusalAudit`). Not for a handshake that the watchdog cut (its
        timeout is audited) nor one ended by a stop: :meth:`_handshake` calls this only for the others. Never raises.
        """
        host = _host(client_address)
        try:
            admission = self.admission
            suffix = "" if admission is None else admission.peer_log.admit(host, HANDSHAKE_FAILED)
            if suffix is not None:
                log.warning(
                    "TLS handshake with %s on port %d failed: %s%s",
                    escape(peer_address(client_address)),
                    self.server_address[1],
                    escape(describe_failure(exc, self.ae.acse_timeout)),
                    suffix,
                )
        except Exception as failure:  # the audit below must still be written
            log.error("could not log a failed TLS handshake (%s)", type(failure).__name__)
        on_refused = self.on_refused
        if on_refused is None:
            return
        with contextlib.suppress(Exception):  # the connection is closed already; the audit logs its own failures
            on_refused(host, HANDSHAKE_FAILED, **audit_details(exc, self.ae.acse_timeout), **self.door())

    def server_activate(self) -> None:
        """Use the faster per-association socket, then listen."""
        self.RequestHandlerClass = _RequestHandler
        self._pending: dict[int, Connection] = {}
        self._pending_lock = threading.Lock()
        self.open_wake_pipe()
        super().server_activate()

    def server_close(self) -> None:
        """Close the listening socket and the accept loop's wake-up pipe."""
        super().server_close()
        self.close_wake_pipe()
