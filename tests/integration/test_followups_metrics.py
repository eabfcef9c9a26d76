"""The metrics ports of ``radtrace listen``, the workers and ``radtrace audit forward`` against slow scrapers.

Before, each used prometheus_client's ``start_http_server``: a thread per connection and no deadline, so every peer
that opened a connection and never finished its request held a thread of the service's process for as long as it
liked (and the ATNA forwarder's port listened on every interface). Now they use :mod:`radtrace.metrics_server`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import radtrace.metrics_server
import radtrace.worker.metrics
from listener_support import listener_env, start_listener
from radtrace.audit.atna.forwarder import AtnaForwarder
from radtrace.cli import app
from radtrace.config import Settings, load_settings
from radtrace.metrics_server import MAX_CONNECTIONS_PER_SOURCE, BoundedMetricsServer
from radtrace.store.engine import Store
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _slow_peers(port: int, source: str, count: int, host: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` that start a request and never finish its headers."""
    peers: list[socket.socket] = []
    try:
        for _ in range(count):
            peer = socket.create_connection((host, port), timeout=3, source_address=(source, 0))
            peer.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            peers.append(peer)
        yield peers
    finally:
        for peer in peers:
            with contextlib.suppress(OSError):
                peer.close()


def _refused(peer: socket.socket) -> bytes:
    """What the server said to a peer it did not admit (it answers at once; before, it said nothing)."""
    peer.settimeout(2)
    try:
        return peer.recv(4096)
    except TimeoutError:
        return b"(no answer within 2 s: the connection was admitted and is held)"


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def _page(url: str, seconds: float = 20) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_slow_scrapers_hold_no_more_than_their_share_of_a_listeners_metrics_port(
    tmp_path: Path, listener_port: int
) -> None:
    """40 connections from one address that never finish a request: 4 are held (until the deadline), 36 are refused
    at once with 503 and the reason, and a scrape from elsewhere is answered. Before: 40 threads in the listener."""
    metrics_port = free_port()
    env = listener_env(tmp_path, listener_port, f"sqlite:///{tmp_path / 'radtrace.db'}") | {
        "RADTRACE_LISTENER__METRICS_PORT": str(metrics_port),
    }
    listener = start_listener(env, listener_port)
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert _page(url).status_code == 200
        time.sleep(0.2)  # the scrape's thread has ended
        before = _threads(listener.pid)
        with _slow_peers(metrics_port, "127.0.0.2", 40) as peers:
            time.sleep(0.3)
            held = _threads(listener.pid) - before
            answer = _refused(peers[-1])
            scrape = httpx.get(url, timeout=5)
        assert held <= MAX_CONNECTIONS_PER_SOURCE, f"{held} threads held by 40 slow connections from one address"
        assert answer.startswith(b"HTTP/1.0 503 "), answer
        assert b"connections from your address are open, the limit" in answer
        assert scrape.status_code == 200
        assert "radtrace_listener_" in scrape.text
    finally:
        listener.send_signal(signal.SIGTERM)
        output = listener.communicate(timeout=30)[0]
    assert listener.returncode == 0, output


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BoundedMetricsServer]]:
    """Every metrics server started through radtrace.metrics_server, shut down after the test."""
    servers: list[BoundedMetricsServer] = []
    real = radtrace.metrics_server.start_metrics_server

    def start(*args: Any, **kwargs: Any) -> Any:
        server, thread = real(*args, **kwargs)
        servers.append(server)
        return server, thread

    monkeypatch.setattr(radtrace.metrics_server, "start_metrics_server", start)
    monkeypatch.setattr(radtrace.worker.metrics, "start_metrics_server", start)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _bounded(port: int, host: str) -> bytes:
    with _slow_peers(port, "127.0.0.3", MAX_CONNECTIONS_PER_SOURCE + 1, host=host) as peers:
        return _refused(peers[-1])


def test_a_workers_metrics_port_is_bounded(sqlite_store: Store, started: list[BoundedMetricsServer]) -> None:
    port = free_port()
    settings = Settings(listener={"host": "127.0.0.1"})
    radtrace.worker.metrics.serve_metrics(settings, sqlite_store, radtrace.worker.metrics.WorkerMetrics(), port)
    assert [server.server_address[0] for server in started] == ["127.0.0.1"]
    assert _bounded(port, "127.0.0.1").startswith(b"HTTP/1.0 503 ")


def test_the_atna_forwarders_metrics_port_binds_where_the_other_metrics_do(
    tmp_path: Path, sqlite_store: Store, started: list[BoundedMetricsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, ``audit forward`` served its metrics on 0.0.0.0 whatever listener.metrics_host said, unbounded."""
    monkeypatch.setattr(AtnaForwarder, "run", lambda *_, **__: None)  # no repository: only the metrics port matters
    port = free_port()
    data_dir = tmp_path / "radtrace"
    env = {
        "RADTRACE_DATA_DIR": str(data_dir),
        "RADTRACE_STORE__URL": str(sqlite_store.engine.url),
        "RADTRACE_ATNA__HOST": "127.0.0.1",
        "RADTRACE_ATNA__METRICS_PORT": str(port),
        "RADTRACE_LISTENER__METRICS_HOST": "127.0.0.1",
    }
    assert load_settings(data_dir=data_dir).listener.metrics_bind_host == "0.0.0.0"  # noqa: S104 - the default
    handlers = logging.getLogger().handlers[:]
    try:
        result = CliRunner().invoke(app, ["audit", "forward", "--once"], env=env)
    finally:  # the command's log handler writes to the runner's stream, closed once the command returns
        logging.getLogger().handlers[:] = handlers
    assert result.exit_code == 0, result.output
    assert [server.server_address[0] for server in started] == ["127.0.0.1"]
    assert _bounded(port, "127.0.0.1").startswith(b"HTTP/1.0 503 ")
