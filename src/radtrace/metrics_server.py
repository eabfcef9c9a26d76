"""Prometheus metrics over HTTP with every peer bounded: a drop-in for ``prometheus_client.start_http_server``.

Used by ``radtrace listen``, the workers and ``radtrace audit forward`` for their metrics ports.

prometheus_client's server starts one thread per connection and reads a request with no deadline: 500 connections
that never finish their headers held 500 threads for as long as they stayed open (measured with
prometheus_client 0.26), in the listener's, the workers' and the ATNA forwarder's processes alike. Here a
connection gets a thread only within :data:`MAX_CONNECTIONS` (:data:`MAX_CONNECTIONS_PER_SOURCE` from one
address); beyond, it is answered 503 with the reason and closed at once, except that when the total is reached a
newcomer first shuts down the oldest connection open over :data:`EVICT_AFTER_S` (slow peers from several addresses
would otherwise keep Prometheus out for as long as they reconnect); and a connection still open :data:`DEADLINE_S`
after it was accepted is shut down (one reaper thread per server), whatever it is doing.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Final

from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import REGISTRY, Collector

__all__ = ["DEADLINE_S", "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_SOURCE", "start_metrics_server"]

MAX_CONNECTIONS: Final = 16
MAX_CONNECTIONS_PER_SOURCE: Final = 4
DEADLINE_S: Final = 10.0
EVICT_AFTER_S: Final = 1.0


class BoundedMetricsServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with connection caps and a deadline per connection."""

    daemon_threads = True
    request_queue_size = 64  # socketserver's 5 made a burst of connections wait a second each for their SYN again

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[MetricsHandler],
        *,
        deadline_s: float = DEADLINE_S,
        max_connections: int = MAX_CONNECTIONS,
        max_per_source: int = MAX_CONNECTIONS_PER_SOURCE,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.deadline_s = deadline_s
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self._lock = threading.Lock()
        self._open: dict[socket.socket, tuple[str, float]] = {}
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        source = str(client_address[0])
        now = time.monotonic()
        with self._lock:
            per_source = sum(1 for known, _ in self._open.values() if known == source)
            if per_source >= self.max_per_source:
                problem = f"{self.max_per_source} connections from your address are open, the limit"
            elif len(self._open) >= self.max_connections and not self._make_room(now):
                problem = f"the metrics server holds {self.max_connections} connections, its limit"
            else:
                problem = None
                self._open[request] = (source, now)
        if problem is not None:
            body = json.dumps({"detail": problem}).encode()
            head = f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            try:
                request.settimeout(1)
                request.sendall(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _make_room(self, now: float) -> bool:
        """Full: shut down the oldest connection if it has been open over :data:`EVICT_AFTER_S` (a scrape takes
        milliseconds: that one is slow); True when one was. Called holding the lock."""
        oldest = min(self._open, key=lambda peer: self._open[peer][1])
        if now - self._open[oldest][1] < EVICT_AFTER_S:
            return False
        del self._open[oldest]  # its thread ends once its read fails
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)

    def reap(self, stopping: threading.Event) -> None:
        """Shut down connections open past the deadline, every half second until ``stopping`` is set."""
        while not stopping.wait(0.5):
            now = time.monotonic()
            with self._lock:
                overdue = [peer for peer, (_, opened) in self._open.items() if now - opened > self.deadline_s]
            for peer in overdue:
                with contextlib.suppress(OSError):
                    peer.shutdown(socket.SHUT_RDWR)  # the handler's read ends; its thread closes the socket

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer that went away or was cut off is not an error worth a traceback on stderr (socketserver's)."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: Collector = REGISTRY, **limits: Any
) -> tuple[BoundedMetricsServer, threading.Thread]:
    """Serve ``registry`` at ``http://addr:port/metrics`` in daemon threads, bounded (see the module docstring);
    ``limits`` override ``deadline_s``, ``max_connections``, ``max_per_source``. Returns the server and its thread,
    as ``prometheus_client.start_http_server`` does (the default address is loopback, not every interface)."""
    server = BoundedMetricsServer((addr, port), MetricsHandler.factory(registry), **limits)
    stopping = threading.Event()
    threading.Thread(target=server.reap, args=(stopping,), name="metrics-reaper", daemon=True).start()

    def serve() -> None:
        try:
            server.serve_forever()
        finally:
            stopping.set()

    thread = threading.Thread(target=serve, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
