"""The metrics HTTP server (radtrace.metrics_server) against slow and greedy peers, over raw sockets.

Before (prometheus_client.start_http_server, as the listener, the workers and the ATNA forwarder called it):
500 connections that never finished their headers held 500 threads for as long as they stayed open.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from radtrace.metrics_server import start_metrics_server
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

# The slow peers' deadline: the caps are checked before it (its 2 s were too short to open 26 connections and check on
# a busy machine: 'too slow to test the caps before the deadline'), and the threads after it.
DEADLINE_S = 5.0


@pytest.fixture
def metrics() -> Iterator[int]:
    registry = CollectorRegistry()
    Counter("radtrace_test_total", "a counter", registry=registry).inc()
    port = free_port()
    server, _ = start_metrics_server(
        port, registry=registry, deadline_s=DEADLINE_S, max_connections=8, max_per_source=3
    )
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def _slow(port: int, source: str) -> socket.socket:
    peer = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    peer.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return peer


def test_slow_and_greedy_peers_hold_a_bounded_number_of_threads_for_a_bounded_time(metrics: int) -> None:
    before = threading.active_count()
    started = time.monotonic()
    held: list[socket.socket] = []
    try:
        held = [_slow(metrics, "127.0.0.2") for _ in range(20)]  # 3 admitted, the rest refused at once
        held += [_slow(metrics, f"127.0.0.{n}") for n in range(3, 6) for _ in range(2)]  # 6 more: 9 > 8
        opened = time.monotonic()
        time.sleep(0.3)
        assert threading.active_count() <= before + 8
        refused = held[10]
        refused.settimeout(2)
        answer = refused.recv(4096)
        assert answer.startswith(b"HTTP/1.0 503 ")
        assert b"3 connections from your address are open, the limit" in answer
        scrape = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5)  # from 127.0.0.1
        assert scrape.status_code == 503  # 8 held: the total cap
        assert "holds 8 connections" in scrape.json()["detail"]
        assert time.monotonic() - started < DEADLINE_S, "too slow to test the caps before the deadline"
        time.sleep(max(0.0, opened + DEADLINE_S + 0.6 - time.monotonic()))  # past the deadline: the slow ones shut
        assert threading.active_count() <= before + 1
        scrape = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5)
        assert scrape.status_code == 200
        assert "radtrace_test_total 1.0" in scrape.text
    finally:
        for peer in held:
            with contextlib.suppress(OSError):
                peer.close()


def test_when_full_a_scrape_closes_the_oldest_connection_instead_of_being_refused() -> None:
    """Slow peers from several addresses (here 4 x 2 against a total of 8) no longer keep Prometheus out for as long
    as they reconnect: a connection open over a second is closed for a newcomer. Before: every scrape 503 while they
    held the connections (up to the deadline, then again as they reconnected)."""
    registry = CollectorRegistry()
    Counter("radtrace_test_total", "a counter", registry=registry).inc()
    port = free_port()
    server, _ = start_metrics_server(port, registry=registry, deadline_s=30.0, max_connections=8, max_per_source=3)
    held: list[socket.socket] = []
    try:
        held = [_slow(port, f"127.0.0.{n}") for n in range(2, 6) for _ in range(2)]
        time.sleep(1.2)
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert scrape.status_code == 200
        assert "radtrace_test_total 1.0" in scrape.text
        held[0].settimeout(2)
        assert held[0].recv(4096) == b""  # the oldest, closed without an answer
    finally:
        for peer in held:
            with contextlib.suppress(OSError):
                peer.close()
        server.shutdown()
        server.server_close()
