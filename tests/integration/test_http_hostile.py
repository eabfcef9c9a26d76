"""``radtrace api`` (the QA API and the console) against a hostile HTTP client, over raw sockets.

Most tests share one real ``radtrace api`` process; each attacker connects from its own loopback address (127.0.0.x)
so that one test's refusals do not throttle another's, and the innocent client is 127.0.0.1. The deadlines (10 s
for headers, 30 s for a body) are too long for a test: they are checked on the same guarded server with shorter
ones, served in a thread (``quick``).

Before radtrace.http_server: a peer could hold a connection for ever by dripping headers or never sending a declared
body, open as many as there were file descriptors (under systemd's default 1,024 a thousand locked everyone out),
make the server hold a body of any size in memory (400 MB: RSS 157 -> 956 MB, unauthenticated), write one audit row
per wrong token (about 100 a second from one client), and every malformed request was answered "Invalid HTTP
request received." whatever it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from http_support import guarded_serving, start_guarded
from radtrace.audit.api import create_api
from radtrace.audit.events import Actor
from radtrace.audit.tokens import create_token
from radtrace.http_limits import MAX_BODY_BYTES, PeerLimits
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import running_api

pytestmark = pytest.mark.integration

FULL = os.environ.get("RADTRACE_FULL_FUZZ") == "1"
OPERATOR = Actor(user="root", host="radtrace-host")
PATIENT_ID = "PAT-HTTP-7731"  # sent in queries, headers and bodies; must never reach the log
FORGED = "FORGED-LOG-LINE"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+: ")


@dataclass
class Served:
    """A running ``radtrace api`` process."""

    port: int
    pid: int
    token: str
    log_file: Path
    store: Store

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_mib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024  # type: ignore[union-attr]

    def innocent(self) -> int:
        """An ordinary authenticated request from 127.0.0.1; its status."""
        answer = httpx.get(
            f"http://127.0.0.1:{self.port}/v1/events",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        return answer.status_code

    def auth_failures(self, host: str) -> list[dict[str, object]]:
        with self.store.engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT outcome, payload FROM audit_events WHERE event_type = 'api_authentication_failed' "
                    "AND actor_host = :host ORDER BY seq"
                ),
                {"host": host},
            )
            return [{"outcome": outcome, **json.loads(payload)} for outcome, payload in rows]

    def log_problems(self) -> list[str]:
        """Lines of the log that are neither a record nor part of a traceback, and any patient ID or raw control."""
        problems = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            raw = PATIENT_ID in line or "\x1b" in line or FORGED in line.split(":", 1)[0]
            if raw or not (LOG_LINE.match(line) or line.startswith(("Traceback", "  ", "|", "+")) or _exception(line)):
                problems.append(line)
        return problems


def _exception(line: str) -> bool:
    return bool(re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Disconnect|Exit|Interrupt)\b", line))


def _connect(port: int, source: str, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def _answer(peer: socket.socket, limit: int = 65536) -> bytes:
    """What the server sends until it closes or stops (the socket's timeout)."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while len(data) < limit:
            chunk = peer.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _exchange(port: int, request: bytes, source: str = "127.0.0.1", timeout: float = 5) -> bytes:
    with _connect(port, source, timeout) as peer:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            peer.sendall(request)
        return _answer(peer)


def _status(answer: bytes) -> int:
    found = re.match(rb"HTTP/1.1 (\d{3}) ", answer)
    return int(found.group(1)) if found else 0


def _detail(answer: bytes) -> str:
    body = answer.split(b"\r\n\r\n", 1)[1]
    detail: str = json.loads(body)["detail"]
    return detail


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("http-hostile")
    store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")
    upgrade(store)
    token = create_token(store, "qa.http", "qa", OPERATOR).secret
    try:
        with running_api({"RADTRACE_DATA_DIR": str(data_dir)}, data_dir / "api.log") as api:
            yield Served(api.port, api.process.pid, token, api.log_file, store)
    finally:
        store.dispose()


def _guarded(store: Store, limits: PeerLimits) -> contextlib.AbstractContextManager[int]:
    """The guarded server over ``store`` with ``limits``, in a thread; yields its port."""
    return guarded_serving(create_api(store), limits)


@pytest.fixture(scope="module")
def quick_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path_factory.mktemp('http-quick') / 'radtrace.db'}")
    upgrade(store)
    yield store
    store.dispose()


@pytest.fixture(scope="module")
def quick(quick_store: Store) -> Iterator[tuple[int, PeerLimits]]:
    """The guarded server with short deadlines: (port, limits)."""
    limits = PeerLimits(header_timeout_s=0.3, body_timeout_s=0.6)
    with _guarded(quick_store, limits) as port:
        yield port, limits


# --- slow peers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "phase"),
    [
        (b"", "headers"),  # connects and says nothing
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Drip: a", "headers"),  # headers dripped, never finished
        (b"GET /healthz HTTP/1.1\nHost: x\n", "headers"),  # LF-only lines: h11 waits for more
        (b"POST /v1/events/search HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", "body"),  # body never sent
        (b"POST /v1/events/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", "body"),
    ],
    ids=["silent", "dripped-headers", "lf-only", "unsent-body", "unfinished-chunks"],
)
def test_a_request_not_complete_in_time_is_408_and_the_connection_closed(
    quick: tuple[int, PeerLimits], opening: bytes, phase: str
) -> None:
    """Before: uvicorn held each such connection for as long as the peer kept it open (uvicorn has no deadline for a
    request's headers or body)."""
    port, limits = quick
    with _connect(port, "127.0.0.2", timeout=10) as peer:
        started = time.monotonic()
        peer.sendall(opening)
        if phase == "headers":  # keep dripping: each byte alone must not extend the deadline
            for _ in range(3):
                time.sleep(0.2)
                with contextlib.suppress(OSError):
                    peer.sendall(b"a")
        answer = _answer(peer)
        took = time.monotonic() - started
    deadline = limits.header_timeout_s if phase == "headers" else limits.body_timeout_s
    assert _status(answer) == 408, answer
    assert _detail(answer) == f"request {phase} not complete within {deadline:g} s"
    assert deadline <= took < deadline + 2
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200  # alive


def test_connections_beyond_the_caps_are_refused_503_and_others_still_served(quick_store: Store) -> None:
    """Four connections per address, ten in all (small caps for the test); the next from that address gets 503 with
    the reason. A proxy uvicorn trusts (127.0.0.1 by default) carries many clients: only the total cap applies to
    it."""
    held: list[socket.socket] = []
    with (
        _guarded(quick_store, PeerLimits(max_connections=10, max_per_source=4)) as port,
        contextlib.ExitStack() as stack,
    ):
        stack.callback(lambda: [peer.close() for peer in held])
        for _ in range(4):
            held.append(_connect(port, "127.0.0.3"))
            held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.1)
        refused = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.3")
        assert _status(refused) == 503
        assert "4 connections from your address are open" in _detail(refused)
        for _ in range(5):  # the trusted proxy: a fifth is admitted and answered
            held.append(_connect(port, "127.0.0.1"))
            held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status(held[-1].recv(4096)) == 200
        held.append(_connect(port, "127.0.0.4"))
        time.sleep(0.1)
        newcomer = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.5")
        assert _status(newcomer) == 200  # the connection that waited longest made room (the next test)
        assert _status(_answer(held[0])) == 503


def test_sigterm_is_not_held_up_by_a_peer_that_never_reads(quick_store: Store) -> None:
    """uvicorn waits for every connection to close before it exits, with no limit by default. Before: a real radtrace
    api with one peer not reading its answer was still 'Waiting for connections to close' 120 s after SIGTERM
    (systemd's TimeoutStopSec=30 then kills it; /work/notes/hostile-http/shutdown_with_slow_reader.sh); with the
    send deadline alone it took 31 s. Now such a peer has half of ``shutdown_grace_s``, and a request whose body is
    still awaited is 503 at once (before: it waited for the body deadline, 30 s)."""
    limits = PeerLimits(send_timeout_s=60, shutdown_grace_s=0.5)
    port, server, thread = start_guarded(create_api(quick_store), limits)
    with socket.socket() as reader, _connect(port, "127.0.0.1") as uploader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", port))
        reader.sendall(b"GET /static-offline-docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        assert reader.recv(16).startswith(b"HTTP/1.1 200 OK")
        uploader.sendall(b"POST /v1/events/search HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.5)  # the kernel's buffers full: the answer now waits for the peer
        server.should_exit = True
        thread.join(timeout=5)
        assert not thread.is_alive(), "the server still waits for the connection"
        stopped = _answer(uploader)
    assert (_status(stopped), _detail(stopped)) == (503, "the server is shutting down; try again shortly")


def test_when_full_the_connection_that_waited_longest_for_a_request_makes_room(quick_store: Store) -> None:
    """Slow peers from more addresses than the total cap allows for (here 3 x 4 against 10) no longer keep everyone
    else out: a newcomer closes the connection that has waited longest for its peer (dripped headers, an idle
    keep-alive), which is answered 503 with the reason. Before: every newcomer was 503 for as long as the slow
    peers reconnected (20 addresses x 32 dripping connections against radtrace api: the innocent client refused 12
    times in 15 over 30 s, /work/notes/hostile-http/slowloris_many.py). Only connections being answered, which a
    newcomer cannot close, still fill the server."""
    limits = PeerLimits(max_connections=10, max_per_source=4, send_timeout_s=60)
    with _guarded(quick_store, limits) as port, contextlib.ExitStack() as stack:
        dripping = [stack.enter_context(_connect(port, f"127.0.0.{41 + n // 4}")) for n in range(10)]
        for peer in dripping:
            peer.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            time.sleep(0.02)
        while limits.open_connections < 10:
            time.sleep(0.02)
        innocent = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.44")
        assert _status(innocent) == 200, innocent
        oldest = _answer(dripping[0])
        assert _status(oldest) == 503
        assert _detail(oldest) == "the server holds 10 connections, its limit; this one waited longest for a request"
        asked = b"GET /static-offline-docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n"
        for n in range(10):  # answers nobody reads: connections being answered are not closed for a newcomer
            reader = stack.enter_context(socket.socket())
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.bind((f"127.0.0.{45 + n // 4}", 0))
            reader.connect(("127.0.0.1", port))
            reader.sendall(asked * 4)
            assert reader.recv(16).startswith(b"HTTP/1.1 ")  # answered (a 200) or the one that made room (503)
        full = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.48")
        assert (_status(full), _detail(full)) == (503, "the server holds 10 connections, its limit; try again shortly")


def test_behind_a_trusted_proxy_the_throttle_counts_the_forwarded_client(served: Served) -> None:
    """Through a proxy on 127.0.0.1 (trusted by default), one client's failures throttle that client, not the proxy
    and every other client behind it."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{served.port}")
    with client:
        for n in range(20):
            wrong = {"Authorization": f"Bearer wrong-{n}", "X-Forwarded-For": "10.9.9.9"}
            assert client.get("/v1/events", headers=wrong).status_code == 401
        attacker = client.get("/v1/events", headers={"Authorization": "Bearer x", "X-Forwarded-For": "10.9.9.9"})
        other = client.get("/v1/events", headers={"Authorization": "Bearer x", "X-Forwarded-For": "10.9.9.8"})
    assert (attacker.status_code, other.status_code) == (429, 401)
    assert served.innocent() == 200
    assert len(served.auth_failures("10.9.9.9")) == 21


def test_a_thousand_slow_connections_from_one_address_do_not_lock_anyone_out(served: Served) -> None:
    """Before: all held (1,100 connections, 1,112 descriptors); under a 1,024 descriptor limit the innocent client
    timed out and asyncio logged 27,795 'out of system resource' lines in 8 s."""
    before = served.fds()
    held: list[socket.socket] = []
    try:
        for _ in range(200):
            peer = _connect(served.port, "127.0.0.10")
            with contextlib.suppress(OSError):
                peer.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(peer)
        time.sleep(0.5)
        assert served.innocent() == 200
        assert served.fds() <= before + 40  # 32 admitted, the rest refused and closed
        answers = []
        for peer in held[-20:]:
            peer.settimeout(2)
            answers.append(_status(_answer(peer, 200)))
        assert set(answers) == {503}
    finally:
        for peer in held:
            peer.close()


def test_a_peer_that_never_reads_its_answer_is_cut_off(quick_store: Store) -> None:
    """A peer that asks for a large answer (here Swagger UI's 1.5 MB script, no token needed) and never reads it is
    cut off once it has taken nothing for ``send_timeout_s``, and its connection slot is freed. Before: held for
    as long as the peer liked (no deadline applies while a response is written): 20 addresses x 32 such
    connections held all 512 of ``radtrace api``'s for as long as they stayed open, every other client 503."""
    limits = PeerLimits(send_timeout_s=0.5)
    asked = b"GET /static-offline-docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n"
    with _guarded(quick_store, limits) as port:
        for request in (asked * 4, asked.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")):
            peer = socket.socket()
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer.bind(("127.0.0.6", 0))
            peer.connect(("127.0.0.1", port))
            with peer:
                peer.sendall(request)
                assert peer.recv(16).startswith(b"HTTP/1.1 200 OK")  # answering: then nothing more is read
                deadline = time.monotonic() + limits.send_timeout_s + 3
                while limits.connections.get("127.0.0.6") and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert limits.connections.get("127.0.0.6") is None, "the connection is still held"
        with httpx.stream("GET", f"http://127.0.0.1:{port}/static-offline-docs/swagger-ui-bundle.js") as slow:
            taken = 0
            for chunk in slow.iter_raw(256 * 1024):  # slow but steady (0.3 s a pause): never cut off
                taken += len(chunk)
                time.sleep(0.3)
        assert taken == int(slow.headers["content-length"]) > 1_000_000


# --- sizes ------------------------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_read(served: Served) -> None:
    """Before: FastAPI read any body into memory before the token was checked (400 MB: RSS +800 MB)."""
    rss = served.rss_mib()
    declared = _exchange(
        served.port,
        b"POST /v1/events/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1073741824\r\n\r\n" + b" " * 65536,
        source="127.0.0.11",
    )
    assert _status(declared) == 413
    assert _detail(declared) == f"request body of 1073741824 bytes, over the limit of {MAX_BODY_BYTES}"
    with _connect(served.port, "127.0.0.11") as peer:
        peer.sendall(b"POST /v1/events/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        with contextlib.suppress(OSError):
            for _ in range(64 * 16):  # 64 MiB at most: the answer comes long before
                peer.sendall(chunk)
        chunked = _answer(peer)
    assert _status(chunked) == 413
    assert _detail(chunked) == f"request body over {MAX_BODY_BYTES} bytes"
    assert served.rss_mib() < rss + 30
    assert served.innocent() == 200


MALFORMED = [
    (b"GET /healthz\r\nX-Injected: 1 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed HTTP request: "),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, "malformed HTTP request: "),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "malformed HTTP request: Missing mandatory Host: header"),
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "malformed HTTP request: Found multiple Host"),
    (b"G\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed HTTP request: "),
    (b"GET /c/\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed HTTP request: "),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400, "malformed HTTP request: "),
    (b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URL of 9008 bytes, over the limit"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n", 431, "request headers of 20"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 3000 + b"\r\n", 431, "3001 request headers, over"),
    (b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "malformed HTTP request: "),
]


MALFORMED_IDS = ["crlf-in-path", "bare-cr", "no-host", "two-hosts", "control-in-method", "non-ascii-path", "tls-hello",
                 "long-url", "long-header", "many-headers", "unknown-transfer-encoding"]  # fmt: skip


@pytest.mark.parametrize(("request_bytes", "status", "reason"), MALFORMED, ids=MALFORMED_IDS)
def test_a_malformed_or_oversized_request_is_a_4xx_with_its_reason(
    served: Served, request_bytes: bytes, status: int, reason: str
) -> None:
    """Before: each was 400 "Invalid HTTP request received." (as text), and headers of 20 KB or 3,000 lines sent
    at once were accepted."""
    answer = _exchange(served.port, request_bytes, source="127.0.0.12")
    assert (_status(answer), _detail(answer)[: len(reason)]) == (status, reason)


@pytest.mark.parametrize("path", [b"/healthz", b"/v1/events/search", b"/console/login"])
def test_content_length_with_transfer_encoding_is_400_and_the_connection_closed(served: Served, path: bytes) -> None:
    """A request with both (RFC 9112 6.1: the server MUST close the connection after it): a proxy in front that
    reads the Content-Length sees one request where the server, reading the chunks, saw two. Before: answered
    (200, 401 or 303) on a connection kept open, then the smuggled request was answered too (404)."""
    smuggling = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")  # fmt: skip
    answer = _exchange(served.port, smuggling, source="127.0.0.14")
    assert (_status(answer), answer.count(b"HTTP/1.1 ")) == (400, 1), answer
    assert _detail(answer) == "request with both Content-Length and Transfer-Encoding: send one of them"


def test_a_cursor_past_the_largest_database_integer_is_422_naming_it(served: Served) -> None:
    """Before: after_seq=2**63 was 500 "Internal Server Error" (text) with an OverflowError traceback in the log
    (SQLite's integers are 64-bit; PostgreSQL's seq a BIGINT)."""
    base, bearer = f"http://127.0.0.1:{served.port}", {"Authorization": f"Bearer {served.token}"}
    answers = [
        httpx.get(f"{base}/v1/events", params={"after_seq": str(2**63)}, headers=bearer, timeout=10),
        httpx.post(f"{base}/v1/events/search", json={"after_seq": 10**20}, headers=bearer, timeout=10),
    ]
    assert httpx.get(f"{base}/v1/events", params={"after_seq": str(2**63 - 1)}, headers=bearer).status_code == 200
    for answer in answers:
        assert answer.status_code == 422, answer.text
        (problem,) = answer.json()["detail"]
        assert (problem["loc"][-1], problem["type"]) == ("after_seq", "less_than_equal")
    assert "OverflowError" not in served.log_file.read_text(errors="replace")


STUDY_UID = "1.2.826.0.1.3680043.8.498.77311"


@pytest.mark.parametrize(
    "request_bytes",
    [
        f"GET /console/studies/{STUDY_UID}/1 HTTP/1.1 x\r\nHost: x\r\n\r\n".encode(),
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Study: {STUDY_UID}\x00\r\n\r\n".encode(),
        f"GET /healthz HTTP/1.1\r\nHost: x\r\n{PATIENT_ID}\r\n\r\n".encode(),
    ],
    ids=["request-line", "header-value", "header-line"],
)
def test_a_malformed_request_is_logged_without_its_bytes(
    quick_store: Store, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    """h11 quotes the line it could not read; the answer may say it back to the client, the log line must not (a
    Study UID or patient ID in a path or header). Before: 'HTTP 127.0.0.1 refused: 400 malformed HTTP request:
    illegal request line: bytearray(b'GET /console/studies/1.2.826...'."""
    caplog.set_level(logging.WARNING, logger="radtrace.http_server")
    with _guarded(quick_store, PeerLimits()) as port:
        answer = _exchange(port, request_bytes, source="127.0.0.15")
    assert _status(answer) == 400
    assert STUDY_UID in _detail(answer) or PATIENT_ID in _detail(answer)  # the client is told what was wrong
    (line,) = [r.getMessage() for r in caplog.records if "refused: 400" in r.getMessage()]
    assert STUDY_UID not in line
    assert PATIENT_ID not in line
    assert line.startswith("HTTP 127.0.0.15 refused: 400 malformed HTTP request: illegal ")


def test_headers_arriving_in_pieces_past_the_limit_are_431(served: Served) -> None:
    with _connect(served.port, "127.0.0.12") as peer:
        peer.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):
            for _ in range(40):
                peer.sendall(b"X-A: " + b"a" * 1000 + b"\r\n")
                time.sleep(0.005)
        answer = _answer(peer)
    assert (_status(answer), _detail(answer)) == (431, "malformed HTTP request: request headers over 16384 bytes")


def test_a_redirect_never_names_the_host_the_client_sent(served: Served) -> None:
    """Before: GET /v1/events/ with Host: evil.example was redirected to http://evil.example/v1/events (Starlette
    builds the URL from the Host header; a cache in front would serve that to others)."""
    answer = _exchange(served.port, b"GET /v1/events/?a=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert _status(answer) == 307
    assert re.search(rb"\r\nlocation: ([^\r]*)\r\n", answer).group(1) == b"/v1/events?a=1"  # type: ignore[union-attr]


def test_a_body_left_unread_after_the_answer_is_not_read_for_ever(served: Served) -> None:
    """A decision posted without a session is answered 401 before its body is read; the rest of a body that never
    ends is discarded for a second, then the connection is closed (before: read and thrown away for as long as the
    peer kept sending)."""
    with _connect(served.port, "127.0.0.13") as peer:
        peer.sendall(b"POST /console/studies/1.2.3/1/impression HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")  # fmt: skip
        started, closed = time.monotonic(), False
        while time.monotonic() - started < 6:
            try:
                peer.sendall(b"400\r\n" + b"a" * 1024 + b"\r\n")
            except OSError:
                closed = True
                break
            time.sleep(0.05)
    assert closed
    assert time.monotonic() - started < 4


# --- authentication ---------------------------------------------------------------------------------------------


def test_failed_authentications_throttle_an_address_with_one_audit_event_not_one_per_attempt(served: Served) -> None:
    """Before: every wrong token was answered 401 and recorded: about 100 audit rows a second from one client, for
    as long as it liked (the audit log is append-only)."""
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{served.port}", transport=httpx.HTTPTransport(local_address="127.0.0.20")
    )
    with client:
        statuses = [
            client.get("/v1/events", headers={"Authorization": f"Bearer wrong-{n}"}).status_code for n in range(60)
        ]
        refused = client.get("/v1/events", headers={"Authorization": "Bearer wrong"})
        assert client.get("/healthz").status_code == 200  # needs no credentials: still served
    assert statuses[:20] == [401] * 20
    assert statuses[20:] == [429] * 40
    assert refused.json()["detail"].startswith("too many failed authentications from your address; try again in")
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    failures = served.auth_failures("127.0.0.20")
    assert len(failures) == 21
    assert failures[-1]["outcome"] == "serious_failure"
    assert failures[-1]["failures"] == 20
    assert str(failures[-1]["reason"]).startswith("throttled: 20 failed authentications")
    assert served.innocent() == 200  # another address is not affected


def test_failed_console_sign_ins_count_and_are_checked_two_at_a_time(served: Served) -> None:
    """A failed sign-in (the console's redirect to ?failed=1) counts as a failed authentication; a third sign-in
    in flight from one address is 429 at once (each costs an argon2 hash; before, any number ran at once and an
    innocent API request waited 3.4 s instead of 0.03 s behind eight attackers)."""
    base = f"http://127.0.0.1:{served.port}"
    client = httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address="127.0.0.21"))
    with client:
        form = client.get("/console/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        failed = client.post("/console/login", data={"username": "nobody", "password": "x" * 12, "csrf_token": csrf})
        assert failed.status_code == 303
        assert "failed=1" in failed.headers["location"]
    assert len(served.auth_failures("127.0.0.21")) == 0  # recorded as console_login_failed
    held = []
    try:
        for _ in range(2):
            peer = _connect(served.port, "127.0.0.22")
            peer.sendall(b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nusername=")
            held.append(peer)
        time.sleep(0.3)
        third = _exchange(served.port, b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na=b",
                          source="127.0.0.22")  # fmt: skip
    finally:
        for peer in held:
            peer.close()
    assert _status(third) == 429
    assert _detail(third) == "2 sign-ins from your address are being checked; wait for them"


# --- logs and a fuzz --------------------------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(
    [f"\n{FORGED}", f"%0a{FORGED}", f"%0d%0a{FORGED}", "\x1b[31mred", "%1b[2J", f"patient_id={PATIENT_ID}",
     PATIENT_ID, "../../etc/passwd", "%2e%2e%2f", "\u202e", "%e2%80%ae", "%ff%fe", "\x00", "%00", "a" * 300]
)  # fmt: skip
PATHS = st.sampled_from(
    ["/healthz", "/v1/events", "/v1/events/search", "/v1/studies/1.2.3/timeline", "/console/login",
     "/console/static/console.css", "/console/static/", "/docs", "/nowhere"]
)  # fmt: skip


@st.composite
def hostile_requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD"]))
    path = draw(PATHS) + draw(st.sampled_from(["", "/", "?q=", f"?patient_id={PATIENT_ID}&x="]))
    path += draw(HOSTILE_TEXT).replace(" ", "%20")
    target = path.encode("utf-8", "surrogateescape")
    headers = [b"Host: " + draw(st.sampled_from([b"x", b"evil.example", b"127.0.0.1:1", b""])), b"Connection: close"]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"User-Agent", b"X-Patient", b"Authorization", b"Cookie", b"Referer"]))
        value = draw(HOSTILE_TEXT).encode("utf-8", "surrogateescape")
        headers.append(name + b": " + (b"Bearer " + value if name == b"Authorization" else value))
    body = draw(st.sampled_from([b"", b"{", json.dumps({"patient_id": PATIENT_ID}).encode(), b"[" * 5000,
                                 b'{"patient_id": "\xff"}', b"username=a&password=b"]))  # fmt: skip
    if body:
        headers.append(b"Content-Length: %d" % len(body))
    return method + b" " + target + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


@settings(
    max_examples=400 if FULL else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request_bytes=hostile_requests())
def test_fuzzed_requests_get_an_answer_and_leave_the_server_well_and_the_log_clean(
    served: Served, request_bytes: bytes
) -> None:
    """Invariants after each request: answered (a status, 5xx only for 503 refusals), the server alive and serving
    an innocent client, its file descriptors bounded, and no log line forged, carrying a raw control character or a
    patient ID."""
    before = served.fds()
    answer = _exchange(served.port, request_bytes, source="127.0.0.30", timeout=5)
    status = _status(answer)
    assert 100 <= status < 500 or status == 503, answer[:300]
    assert served.innocent() == 200
    assert served.fds() <= before + 4
    assert served.log_problems() == []
