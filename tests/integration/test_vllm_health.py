"""The vLLM client's health check (what the worker's circuit breaker probes while it holds reads), against servers on
raw sockets: vLLM's ``/health`` decides where the server has it; where it has not, the model list and then a real
completion of one token; and the check ends in time and reads a bounded number of bytes whatever the server does."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable

import pytest

from private_servers import HostilePeer, drip, hostile_peer, stream_forever
from radtrace.model.backends.vllm import VllmBackend
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

BOUND_S = 1.0  # the request timeout, below PROBE_TIMEOUT_S: the health check's bound
# What a check the bound ends may take: a third of the 30 s or more the wrong behaviour costs here (the hang is 30 s,
# the dripped answers 60 s and 500 s); 1.5 or 2 bounds left a busy machine half a second.
CUT_OFF_S = 10 * BOUND_S
COMPLETIONS_PATH = "/v1/chat/completions"
MODELS = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
ONE_TOKEN = json.dumps({"choices": [{"message": {"content": "Yes"}}], "usage": {"completion_tokens": 1}}).encode()
EMPTY = json.dumps({"choices": [{"message": {"content": ""}}], "usage": {"completion_tokens": 0}}).encode()


def _backend(url: str, timeout_s: float = BOUND_S) -> VllmBackend:
    return VllmBackend(url, max_new_tokens=1, min_pixels=1, max_pixels=1, model="m", timeout_s=timeout_s)


def _answer(status: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _paths(peer: HostilePeer) -> list[str]:
    return [request.split(b" ", 2)[1].decode() for request in peer.received]


def _probe(url: str, timeout_s: float = BOUND_S) -> tuple[str | None, float]:
    backend = _backend(url, timeout_s)
    started = time.monotonic()
    try:
        return backend.unavailable(), time.monotonic() - started
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("200 OK", None),  # the engine runs
        ("503 Service Unavailable", "answered 503 to /health: its engine is not serving"),  # vLLM since 2025-09
        ("500 Internal Server Error", "answered 500 to /health: its engine is not serving"),  # vLLM's V0 engine
    ],
)  # fmt: skip
def test_the_health_answer_decides_and_the_model_list_is_not_asked(health: str, expected: str | None) -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, _answer(health) if _paths(peer)[-1] == "/health" else _answer("200 OK", MODELS))

    with hostile_peer(behave) as peer:
        problem, _ = _probe(peer.url)
        asked = _paths(peer)
    assert asked == ["/health"]
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert expected in problem


@pytest.mark.parametrize("health", ["404 Not Found", "401 Unauthorized", "307 Temporary Redirect"])
def test_a_server_without_a_usable_health_check_is_asked_for_its_model_list_and_one_token(health: str) -> None:
    models = {"status": "200 OK"}

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if _paths(peer)[-1] == "/health":
            peer.write(connection, _answer(health, Location="/elsewhere"))
        elif _paths(peer)[-1] == COMPLETIONS_PATH:
            peer.write(connection, _answer("200 OK", ONE_TOKEN))
        else:
            peer.write(connection, _answer(models["status"], MODELS if models["status"] == "200 OK" else b""))

    with hostile_peer(behave) as peer:
        up, _ = _probe(peer.url)
        probe = json.loads(peer.received[-1].partition(b"\r\n\r\n")[2])
        models["status"] = "502 Bad Gateway"
        down, _ = _probe(peer.url)
        asked = _paths(peer)
    assert asked == ["/health", "/v1/models", COMPLETIONS_PATH, "/health", "/v1/models"]
    assert up is None
    assert (probe["model"], probe["max_tokens"]) == ("m", 1)  # a real read of one token: one tiny picture
    assert [part["type"] for part in probe["messages"][0]["content"]] == ["image_url", "text"]
    assert down is not None
    assert "answered 502 to /v1/models" in down


def _no_health_then(completion: Callable[[HostilePeer, socket.socket], None]) -> Callable[..., None]:
    """A server without /health (404) that lists its models and answers a completion with ``completion``."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if _paths(peer)[-1] == "/health":
            peer.write(connection, _answer("404 Not Found"))
        elif _paths(peer)[-1] == "/v1/models":
            peer.write(connection, _answer("200 OK", MODELS))
        else:
            completion(peer, connection)

    return behave


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_answer("200 OK", ONE_TOKEN), None),
        (_answer("200 OK", json.dumps({"choices": [{"message": {"content": "x"}}]}).encode()), None),  # no usage
        (_answer("400 Bad Request", b'{"message": "no images here"}'), None),  # a refusal: the reads will say it
        (_answer("500 Internal Server Error"), "answers its model list but answered 500 to a 1-token completion"),
        (_answer("200 OK", EMPTY), "its completions are empty: a 1-token completion came back with no token"),
        (_answer("200 OK", MODELS), "its completions are empty: a 1-token completion came back with no completion"),
        (_answer("200 OK", b"x" * 100_000), "its completions are broken"),  # larger than a one-token answer can be
    ],
    ids=["one-token", "no-usage", "400", "500", "no-token", "no-choices", "oversized"],
)  # fmt: skip
def test_the_one_token_completion_decides_for_a_server_without_health(reply: bytes, expected: str | None) -> None:
    with hostile_peer(_no_health_then(lambda peer, connection: peer.write(connection, reply))) as peer:
        problem, elapsed = _probe(peer.url)
    assert elapsed < BOUND_S
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert expected in problem


@pytest.mark.parametrize("how", ["hang", "drip"])
def test_a_one_token_completion_that_does_not_come_ends_at_the_same_bound(how: str) -> None:
    """The health check, the model list and the completion together: one bound, whatever the completion does."""

    def complete(peer: HostilePeer, connection: socket.socket) -> None:
        if how == "hang":
            peer.stop.wait(30)
        else:
            drip(peer, connection, _answer("200 OK", ONE_TOKEN), every_s=0.5)  # each byte within a read timeout

    with hostile_peer(_no_health_then(complete)) as peer:
        problem, elapsed = _probe(peer.url)
    assert problem is not None
    assert "answers its model list but completions time out: a 1-token completion did not answer within 1 s" in problem
    assert elapsed < CUT_OFF_S


def test_a_dripped_health_answer_ends_at_the_bound() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        drip(peer, connection, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10000, every_s=0.05)

    with hostile_peer(behave) as peer:
        problem, elapsed = _probe(peer.url)
    assert problem is not None
    assert "did not answer /health within 1 s" in problem
    assert elapsed < CUT_OFF_S


def test_both_requests_together_end_at_the_bound() -> None:
    """A slow 404 (90% of a 3 s bound) and then a model list that never comes: one bound for the whole check, not
    one per request. Told by how long the list's request lived at the server (the bound's last 0.3 s; a bound of its
    own: 3 s), not by the check's wall time (under 1.5 bounds of 1 s: half a second for a busy machine)."""
    bound_s = 3.0
    hung_up_after: list[float] = []

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if _paths(peer)[-1] == "/health":
            time.sleep(0.9 * bound_s)
            peer.write(connection, _answer("404 Not Found"))
        else:
            arrived = time.monotonic()
            with contextlib.suppress(OSError):
                connection.recv(1)  # b"" once the client hangs up (30 s at most: the peer's read timeout)
            hung_up_after.append(time.monotonic() - arrived)

    with hostile_peer(behave) as peer:
        problem, _ = _probe(peer.url, bound_s)
        deadline = time.monotonic() + 30
        while not hung_up_after and time.monotonic() < deadline:
            time.sleep(0.01)
    assert problem is not None
    assert "did not answer /v1/models" in problem
    assert hung_up_after[0] < bound_s / 2


def test_an_endless_health_answer_is_not_read_to_the_end() -> None:
    """200 and a chunked body for ever: the check reads 64 KiB, ignores it and answers at once."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        chunk = b" " * 65536
        if peer.write(connection, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"):
            stream_forever(peer, connection, b"%x\r\n" % len(chunk) + chunk + b"\r\n", limit=256 * 1024 * 1024)

    with hostile_peer(behave) as peer:
        problem, elapsed = _probe(peer.url)
        sent = peer.sent
    assert problem is None
    assert elapsed < BOUND_S
    assert sent < 16 * 1024 * 1024  # the client stopped reading (socket buffers hold the rest)


def test_a_server_that_is_not_there_is_not_reachable() -> None:
    problem, _ = _probe(f"http://127.0.0.1:{free_port()}")
    assert problem is not None
    assert "is not reachable" in problem
