"""A faster receive path for pynetdicom's acceptor sockets.

pynetdicom 3.0 reads each PDU in 4 KiB ``recv`` calls, appending to a growing ``bytearray``: for an
8 MB instance that is some 2,000 system calls and reallocations, the larger part of the receive
cost. :class:`ListenerServer` hands each association a socket that reads a whole PDU with
``recv_into`` a buffer of its final size, and binds with ``SO_REUSEPORT`` so that several listener
processes can share one port (pynetdicom holds the GIL; processes are how it uses several cores).
"""

from __future__ import annotations

import select
import socket
import ssl
from typing import TYPE_CHECKING

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = ["READY_WAIT_S", "ListenerServer", "WholePduSocket"]

#: Longest wait for incoming data per DUL loop; outgoing answers wait at most this long too.
READY_WAIT_S = 0.001


class WholePduSocket(AssociationSocket):
    """An :class:`AssociationSocket` whose ``recv`` fills one preallocated buffer.

    Its ``ready`` waits up to the DUL's loop delay for data instead of answering at once: the DUL
    thread then wakes when a PDU arrives rather than after a fixed sleep (its own sleep is set to 0).
    """

    @property
    def ready(self) -> bool:
        """Whether data can be read, waiting up to :data:`READY_WAIT_S` for it."""
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock], [], [], READY_WAIT_S)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False
        return bool(readable)

    def recv(self, nr_bytes: int) -> bytearray:
        """Read exactly ``nr_bytes``, or what arrived before the peer closed (as pynetdicom's does)."""
        sock = self.socket
        if sock is None:
            return bytearray()
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        read = 0
        try:
            while read < nr_bytes:
                got = sock.recv_into(view[read:], nr_bytes - read)
                if not got:
                    break
                read += got
        finally:
            view.release()
        if read < nr_bytes:
            del buffer[read:]
        return buffer


class _RequestHandler(RequestHandler):
    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # Answers are small and must not wait for a delayed ACK (Nagle), as dcmtk's TCP_NODELAY=1 does.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Same object and state, faster recv: the socket was just created and has read nothing yet.
        assoc.dul.socket.__class__ = WholePduSocket
        assoc.dul._run_loop_delay = 0  # WholePduSocket.ready does the waiting
        return assoc


class ListenerServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with :class:`WholePduSocket` and ``SO_REUSEPORT``.

    The kernel spreads incoming connections over the sockets of the processes sharing the port.
    """

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
        super().server_activate()
