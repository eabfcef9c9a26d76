"""radtrace's guarded HTTP server (the API's and the console's, with its per-peer limits) in a thread of the test."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from radtrace.http_limits import App, PeerLimits
from radtrace.http_server import guarded_config
from radtrace.testing.services import free_port


def start_guarded(app: App, limits: PeerLimits) -> tuple[int, uvicorn.Server, threading.Thread]:
    """``app`` behind the guarded server with ``limits``, started in a thread: its port, the server and the thread
    (the caller stops it: ``server.should_exit = True``, then joins the thread)."""
    port = free_port()
    server = uvicorn.Server(guarded_config(app, limits=limits, port=port))
    thread = threading.Thread(target=server.run, name="guarded-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the guarded server did not start"
        assert thread.is_alive(), "the guarded server did not start"
        time.sleep(0.02)
    return port, server, thread


@contextlib.contextmanager
def guarded_serving(app: App, limits: PeerLimits) -> Iterator[int]:
    """``app`` behind the guarded server with ``limits`` for the block; yields its port."""
    port, server, thread = start_guarded(app, limits)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def throttled_behind(proxy: httpx.Client) -> tuple[int, int]:
    """Twenty wrong tokens through ``proxy`` from the client it forwards as 10.9.9.9, then one more from it and one
    from 10.9.9.8: their statuses, (429, 401) where the throttle counts each forwarded client, not the proxy."""
    for n in range(20):
        wrong = {"Authorization": f"Bearer wrong-{n}", "X-Forwarded-For": "10.9.9.9"}
        assert proxy.get("/v1/events", headers=wrong).status_code == 401
    attacker = proxy.get("/v1/events", headers={"Authorization": "Bearer x", "X-Forwarded-For": "10.9.9.9"})
    other = proxy.get("/v1/events", headers={"Authorization": "Bearer x", "X-Forwarded-For": "10.9.9.8"})
    return attacker.status_code, other.status_code
