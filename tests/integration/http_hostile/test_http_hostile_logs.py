"""``radtrace api``'s log under hostile requests: a malformed request is logged without its bytes (a Study UID or
patient ID in its path or headers), and fuzzed requests (hypothesis; ``RADTRACE_FULL_FUZZ=1``: 400 examples, else
40) each get an answer and leave the server well and its log clean: no forged line, raw control or patient ID.

Most tests share one real ``radtrace api`` process (conftest.py: ``served``); each attacker connects from its own
loopback address (127.0.0.x) so that one test's refusals do not throttle another's, and the innocent client is
127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from http_hostile_support import FORGED, PATIENT_ID, Served, detail_of, exchange, guarded, status_of
from radtrace.http_limits import PeerLimits
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

FULL = os.environ.get("RADTRACE_FULL_FUZZ") == "1"


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
    with guarded(quick_store, PeerLimits()) as port:
        answer = exchange(port, request_bytes, source="127.0.0.15")
    assert status_of(answer) == 400
    assert STUDY_UID in detail_of(answer) or PATIENT_ID in detail_of(answer)  # the client is told what was wrong
    (line,) = [r.getMessage() for r in caplog.records if "refused: 400" in r.getMessage()]
    assert STUDY_UID not in line
    assert PATIENT_ID not in line
    assert line.startswith("HTTP 127.0.0.15 refused: 400 malformed HTTP request: illegal ")


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
    answer = exchange(served.port, request_bytes, source="127.0.0.30", timeout=5)
    status = status_of(answer)
    assert 100 <= status < 500 or status == 503, answer[:300]
    assert served.innocent() == 200
    assert served.fds() <= before + 4
    assert served.log_problems() == []
