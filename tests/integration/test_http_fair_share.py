"""Requests from many addresses at once share the QA API's and console's turns fairly, over real sockets.

Before (/work/notes/hostile-http-2/side_by_side.sh): 640 connections from 20 addresses asking /healthz (one database
query each) and reconnecting made a client from another address wait 8 s; nothing bounded the requests of one
address being answered at once, and they took the thread pool's turns first come, first served.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from http_support import guarded_serving
from radtrace.audit.api import HEALTH_TTL_S, create_api
from radtrace.config import ConfigError, load_settings
from radtrace.http_limits import PeerLimits, Receive, Scope, Send
from radtrace.http_server import serve_http
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration

FULL = os.environ.get("RADTRACE_FULL_FUZZ") == "1"
INNOCENT = "127.0.7.1"  # not 127.0.0.1: uvicorn trusts that one as a proxy, held only to the total


class _Held:
    """An application that answers each request once the test lets it, recording who was let in, in order, and how
    many of each address were being answered at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered: list[str] = []
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_in_all = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import asyncio

        if scope["type"] != "http":
            return
        source = scope["client"][0]
        self.entered.append(source)
        self.now[source] += 1
        self.most[source] = max(self.most[source], self.now[source])
        self.most_in_all = max(self.most_in_all, sum(self.now.values()))
        try:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        finally:
            self.now[source] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


def _ask(port: int, source: str) -> socket.socket:
    peer = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    peer.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return peer


def _read(peer: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := peer.recv(65536):
            data += chunk
    peer.close()
    return data


def _answered(peers: list[socket.socket], wanted: int, within_s: float = 10) -> list[socket.socket]:
    """Wait until ``wanted`` of ``peers`` have an answer waiting; those."""
    deadline = time.monotonic() + within_s
    while True:
        ready, _, _ = select.select(peers, [], [], 0.05)
        if len(ready) >= wanted or time.monotonic() > deadline:
            return ready


def test_many_requests_from_each_address_wait_their_turn_and_another_address_is_let_in_within_one_round() -> None:
    """Small limits for the test: 2 of one address answered at once, 4 in all, 2 more of an address waiting. Each
    attacking address sends 8 requests at once (CI: 3 addresses; RADTRACE_FULL_FUZZ=1: 8 addresses of 16)."""
    addresses = [f"127.0.6.{n + 1}" for n in range(8 if FULL else 3)]
    each = 16 if FULL else 8
    limits = PeerLimits(in_flight=4, in_flight_per_source=2, queued_per_source=2)
    app = _Held()
    with guarded_serving(app, limits) as port:
        asked = {address: [_ask(port, address) for _ in range(each)] for address in addresses}
        # The first two addresses take the four turns and queue two more each; the others only queue two.
        kept = {address: 4 if n < 2 else 2 for n, address in enumerate(addresses)}
        refused = {address: _answered(peers, each - kept[address]) for address, peers in asked.items()}
        innocent = _ask(port, INNOCENT)
        deadline = time.monotonic() + 10
        while limits.fair.queued(INNOCENT) != 1:  # it waits its turn too: all four turns are taken
            assert time.monotonic() < deadline, "the innocent request did not reach the queue"
            time.sleep(0.01)
        before = len(app.entered)
        app.release.set()
        innocent_answer = _read(innocent)
        raw = {address: [_read(peer) for peer in peers] for address, peers in asked.items()}
    for address in addresses:
        assert len(refused[address]) == each - kept[address], address  # before: none refused, all answered at once
        assert Counter(map(_status, raw[address])) == Counter({200: kept[address], 503: each - kept[address]})
        assert app.most[address] <= 2, address  # before: 8 (or 16) of one address at once
    assert app.most_in_all == 4
    assert app.most[addresses[0]] == 2
    refusal = next(answer for answer in raw[addresses[0]] if _status(answer) == 503)
    assert b"\r\nretry-after: 1\r\n" in refusal.lower()
    assert b'"2 requests from your address are being answered and 2 wait their turn, the limit; try again shortly"' in (
        refusal
    )
    assert _status(innocent_answer) == 200
    # Turns go round the waiting addresses: the innocent one is let in after at most one request of each other.
    assert app.entered.index(INNOCENT) - before <= len(addresses)


def test_when_full_of_requests_waiting_their_turn_a_newcomer_is_let_in_and_one_of_them_refused() -> None:
    """Ten connections in all (small for the test), each with a request waiting its turn or being answered. Before:
    a client from another address got 503 "the server holds 10 connections" until they were all answered (only a
    connection waiting for its peer was closed to make room)."""
    limits = PeerLimits(max_connections=10, max_per_source=8, in_flight=2, in_flight_per_source=1, queued_per_source=8)
    app = _Held()
    with guarded_serving(app, limits) as port:
        asked = [_ask(port, address) for address in ("127.0.6.21", "127.0.6.22") for _ in range(5)]
        deadline = time.monotonic() + 10
        while limits.fair.queued("127.0.6.21") + limits.fair.queued("127.0.6.22") != 8:
            assert time.monotonic() < deadline, "the requests did not reach the queue"
            time.sleep(0.01)
        innocent = _ask(port, INNOCENT)
        (dropped,) = _answered(asked, 1)
        while limits.fair.queued(INNOCENT) != 1:
            assert time.monotonic() < deadline, "the innocent request did not reach the queue"
            time.sleep(0.01)
        app.release.set()
        assert _status(_read(innocent)) == 200
        answers = [_read(peer) for peer in asked]
    assert sorted(map(_status, answers)) == [200] * 9 + [503]
    refusal = answers[asked.index(dropped)]
    assert b"the server holds 10 connections, its limit; this request waited its turn behind others of yours" in refusal


def _status(answer: bytes) -> int:
    found = re.match(rb"HTTP/1.1 (\d{3}) ", answer)
    return int(found.group(1)) if found else 0


def test_healthz_asks_the_database_at_most_once_a_second_however_often_it_is_asked(tmp_path: Path) -> None:
    """Before: one schema query per request, from anyone, at any rate (no token is needed). A schema change is still
    seen within a second or so."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    queries: list[str] = []

    def counted(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM alembic_version" in statement:  # the schema check (not the table lookup before it)
            queries.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", counted)
    try:
        with guarded_serving(create_api(store), PeerLimits()) as port:
            url = f"http://127.0.0.1:{port}/healthz"
            started = time.monotonic()
            with httpx.Client(timeout=10) as client:
                for _ in range(20):
                    assert client.get(url).status_code == 200
            took = time.monotonic() - started
            assert 1 <= len(queries) <= 1 + took / HEALTH_TTL_S  # before: 20, one per request
            with store.engine.begin() as connection:
                connection.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
            deadline = time.monotonic() + 5
            while (answer := httpx.get(url, timeout=10)).status_code == 200:
                assert time.monotonic() < deadline, "the schema change was not seen"
                time.sleep(0.1)
            assert answer.status_code == 503
            assert "database schema is at 0001" in answer.json()["detail"]
    finally:
        store.dispose()


def test_the_turns_are_settings_so_that_one_address_behind_an_untrusted_proxy_may_take_more(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A hospital's reverse proxy not in api.forwarded_allow_ips (or sending no X-Forwarded-For) brings every
    request from one address. Before: 4 of them answered at once, whatever the configuration (constants).
    RADTRACE_API__REQUESTS_IN_FLIGHT_PER_ADDRESS=8 (of 12 in all): 8 of the proxy's 10 at once, 2 waiting."""
    proxy = "127.0.6.40"
    monkeypatch.setenv("RADTRACE_API__REQUESTS_IN_FLIGHT", "12")
    monkeypatch.setenv("RADTRACE_API__REQUESTS_IN_FLIGHT_PER_ADDRESS", "8")
    limits = PeerLimits.for_settings(load_settings(data_dir=tmp_path).api)
    app = _Held()
    with guarded_serving(app, limits) as port:
        asked = [_ask(port, proxy) for _ in range(10)]
        deadline = time.monotonic() + 10
        while limits.fair.queued(proxy) != 2:
            assert time.monotonic() < deadline, "the requests did not reach the queue"
            time.sleep(0.01)
        assert app.now[proxy] == 8  # before: 4, and 6 waiting
        app.release.set()
        answers = [_read(peer) for peer in asked]
    assert [_status(answer) for answer in answers] == [200] * 10
    assert app.most[proxy] == 8


@pytest.mark.parametrize(
    ("in_all", "per_address", "error"),
    [
        ("4", "8", "requests_in_flight_per_address (8) must not exceed requests_in_flight (4)"),
        ("0", "1", "api.requests_in_flight: Input should be greater than or equal to 1"),
    ],
)
def test_turns_that_cannot_be_are_refused_at_start_naming_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, in_all: str, per_address: str, error: str
) -> None:
    monkeypatch.setenv("RADTRACE_API__REQUESTS_IN_FLIGHT", in_all)
    monkeypatch.setenv("RADTRACE_API__REQUESTS_IN_FLIGHT_PER_ADDRESS", per_address)
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_settings(data_dir=tmp_path)


def test_turns_of_one_address_equal_to_all_are_warned_of_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """Fairness between addresses is moot then: the start-up lines say so, and what to do behind a proxy."""
    started: list[Any] = []
    warned: dict[int, list[str]] = {}
    with socket.socket() as listening, pytest.MonkeyPatch.context() as patch:
        patch.setattr(uvicorn.Server, "run", lambda _self, sockets: started.append(sockets))
        for per_address in (8, 4):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="radtrace.http_server"):
                serve_http(_Held(), listening, limits=PeerLimits(in_flight=8, in_flight_per_source=per_address))
            lines = [record.getMessage() for record in caplog.records]
            assert f"8 requests answered at once ({per_address} per address)" in lines[0]
            warned[per_address] = [line for line in lines if "one address may take every turn" in line]
    assert len(started) == 2
    assert warned[4] == []
    (warning,) = warned[8]
    assert "list it in api.forwarded_allow_ips instead" in warning
