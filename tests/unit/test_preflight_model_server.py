"""The start-up check of a vLLM server (``GET /health``, then ``GET /v1/models``) asks what the worker's circuit breaker
asks, and is bounded like the client: a server that drips its answers one byte at a time, or announces or streams
gigabytes, cannot hold the start of serve, listen or worker.

Before, the check used a bare ``httpx.get`` with a 3 s timeout *per read* and read the whole body: a drip of one byte
every 0.05 s held it for as long as the body lasted, and a body of gigabytes was read into memory. And it asked only
the model list, which a vLLM whose engine died still answers (its ``/health`` says 503): the check said "ok"."""

from __future__ import annotations

import json
import socket
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

import radtrace.preflight.model
from private_servers import HostilePeer, drip, hostile_peer, stream_forever
from radtrace.config import load_settings
from radtrace.model.backends.vllm import MAX_REPLY_BYTES, VllmBackend
from radtrace.preflight import check_model_weights
from worker_support import fake_vllm_server

pytestmark = pytest.mark.unit

LIMIT_S = 1.0
# What a check its deadline ends may take: half of the 20 s the dripped answers here would last (the wrong behaviour:
# no deadline for the whole request), not the deadline plus 1.5 s, which a busy machine (and tracemalloc) can eat.
CUT_OFF_S = 10.0
NO_HEALTH = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

Behaviour = Callable[[HostilePeer, socket.socket], None]


@pytest.fixture(autouse=True)
def short_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(radtrace.preflight.model, "MODEL_SERVER_CHECK_S", LIMIT_S)


_TOKEN = json.dumps({"object": "chat.completion", "usage": {"completion_tokens": 1},
                     "choices": [{"message": {"content": "yes"}, "finish_reason": "length"}]}).encode()  # fmt: skip
#: The served model's answer to the check's one-token completion (a wedged engine's is tested in
#: test_preflight_wedged_engine).
ONE_TOKEN = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(_TOKEN), _TOKEN)


def _head(**headers: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _check(url: str, tmp_path: Path) -> tuple[str, str, float, int]:
    settings = load_settings(data_dir=tmp_path, model={"backend": "vllm", "vllm_url": url})
    tracemalloc.start()
    started = time.monotonic()
    try:
        check = check_model_weights(settings)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return check.status, check.detail, elapsed, peak


def test_a_model_list_dripped_one_byte_at_a_time_ends_at_the_check_s_deadline(tmp_path: Path) -> None:
    body = json.dumps({"object": "list", "data": [{"id": "m" * 400}]}).encode()  # about 20 s at this pace

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.write(connection, _head(**{"Content-Length": str(len(body))})):
            drip(peer, connection, body, every_s=0.05)

    with hostile_peer(_routed(None, behave)) as peer:
        status, detail, elapsed, _ = _check(peer.url, tmp_path)
    assert status == "warning"
    assert f"did not answer /v1/models within {LIMIT_S:g} s" in detail
    assert "model.vllm_url" in detail
    assert elapsed < CUT_OFF_S


def test_a_model_list_of_gigabytes_is_cut_at_the_client_s_reply_limit(tmp_path: Path) -> None:
    """Chunked, no length, bytes for ever: stopped at 8 MiB (or the deadline), not read into memory."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        chunk = b" " * 65536
        if peer.write(connection, _head(**{"Transfer-Encoding": "chunked"}) + b'c\r\n{"data": [  \r\n'):
            stream_forever(peer, connection, b"%x\r\n" % len(chunk) + chunk + b"\r\n", limit=256 * 1024 * 1024)

    with hostile_peer(_routed(None, behave)) as peer:
        status, detail, elapsed, peak = _check(peer.url, tmp_path)
    assert status == "warning"
    assert "larger than 8 MiB" in detail or "did not answer /v1/models" in detail
    assert elapsed < CUT_OFF_S
    assert peak < 4 * MAX_REPLY_BYTES


def test_a_server_that_answers_is_still_named_with_its_models(tmp_path: Path) -> None:
    body = json.dumps({"object": "list", "data": [{"id": "nvidia/NV-Reason-CXR-3B"}]}).encode()

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.received[-1].startswith(b"POST /v1/chat/completions "):
            peer.write(connection, ONE_TOKEN)
        else:
            peer.write(connection, _head(**{"Content-Length": str(len(body))}) + body)

    with hostile_peer(behave) as peer:
        status, detail, _, _ = _check(peer.url, tmp_path)
    assert status == "ok", detail
    assert "nvidia/NV-Reason-CXR-3B" in detail


def _routed(health: bytes | None, behave: Behaviour) -> Behaviour:
    """A peer that answers ``GET /health`` with ``health`` (404 when None: a server without one) and every other
    request with ``behave``."""

    def route(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.received[-1].startswith(b"GET /health "):
            peer.write(connection, health if health is not None else NO_HEALTH)
        else:
            behave(peer, connection)

    return route


def test_a_server_whose_engine_died_is_a_warning_naming_its_health_answer(tmp_path: Path) -> None:
    """vLLM whose engine died while its API process lives: its model list still answers 200, /health 503. Before,
    the check asked only the model list and said 'ok' (and serve started the GPU worker on it)."""
    with fake_vllm_server() as server:
        server.engine_dead = True
        status, detail, _, _ = _check(server.url, tmp_path)
        assert status == "warning", detail
        assert f"{server.url} answered 503 to /health: its engine is not serving" in detail
        assert "model.vllm_url" in detail
        assert server.health_checks == 1
        server.engine_dead = False  # restarted: the check passes again, naming the model
        status, detail, _, _ = _check(server.url, tmp_path)
        assert status == "ok", detail
        assert "serves m" in detail
        assert server.health_checks == 2


def test_a_server_without_a_health_check_is_judged_by_its_model_list(tmp_path: Path) -> None:
    """Other OpenAI-compatible servers answer 404 to /health: their model list decides, as for the breaker."""
    with fake_vllm_server() as server:
        server.has_health = False
        status, detail, _, _ = _check(server.url, tmp_path)
    assert status == "ok", detail
    assert "serves m" in detail
    assert server.health_checks == 1


def test_a_health_answer_dripped_one_byte_at_a_time_ends_at_the_check_s_deadline(tmp_path: Path) -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.write(connection, b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n"):
            drip(peer, connection, b" " * 400, every_s=0.05)

    with hostile_peer(behave) as peer:
        status, detail, elapsed, _ = _check(peer.url, tmp_path)
    assert status == "warning"
    assert f"did not answer /health within {LIMIT_S:g} s" in detail
    assert elapsed < CUT_OFF_S


def test_one_deadline_covers_the_health_check_and_the_model_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 404 to /health given after 90% of a 3 s deadline, then a model list that never comes: still one deadline.
    Told by how long the list's drip lived at the server (the deadline's last 0.3 s; 3 s with a deadline of its own),
    not by the check's wall time (under 1.5 deadlines of 1 s: half a second for a busy machine)."""
    limit_s = 3.0
    monkeypatch.setattr(radtrace.preflight.model, "MODEL_SERVER_CHECK_S", limit_s)
    body = json.dumps({"object": "list", "data": [{"id": "m" * 400}]}).encode()  # about 20 s at this pace
    dripped_for: list[float] = []

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.received[-1].startswith(b"GET /health "):
            time.sleep(limit_s * 0.9)
            peer.write(connection, NO_HEALTH)
        elif peer.write(connection, _head(**{"Content-Length": str(len(body))})):
            started = time.monotonic()
            drip(peer, connection, body, every_s=0.05)
            dripped_for.append(time.monotonic() - started)

    with hostile_peer(behave) as peer:
        status, detail, _, _ = _check(peer.url, tmp_path)
        deadline = time.monotonic() + 30
        while not dripped_for and time.monotonic() < deadline:
            time.sleep(0.01)
    assert status == "warning"
    assert "did not answer" in detail
    assert dripped_for[0] < limit_s / 2


@pytest.mark.parametrize("health", [200, 204, 429, 500, 503, 401, 404, 307])
def test_the_start_up_check_and_the_breaker_s_probe_judge_a_health_answer_alike(tmp_path: Path, health: int) -> None:
    """One health check for both: 2xx up, 429 and 5xx down (the model list, which answers, is not asked), any other
    answer falls back to the model list."""
    body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
    answer = f"HTTP/1.1 {health} X\r\nContent-Length: 0\r\nLocation: /elsewhere\r\n\r\n".encode()

    def models(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.received[-1].startswith(b"POST /v1/chat/completions "):
            peer.write(connection, ONE_TOKEN)
        else:
            peer.write(connection, _head(**{"Content-Length": str(len(body))}) + body)

    with hostile_peer(_routed(answer, models)) as peer:
        status, detail, _, _ = _check(peer.url, tmp_path)
        backend = VllmBackend(peer.url, max_new_tokens=1, min_pixels=1, max_pixels=1, timeout_s=LIMIT_S)
        try:
            probe = backend.unavailable()
        finally:
            backend.close()
        asked = [request.split(b" ", 2)[1] for request in peer.received]
    down = health == 429 or health >= 500
    assert (status == "warning") is down, detail
    assert (probe is not None) is down, probe
    if down:
        assert f"answered {health} to /health: its engine is not serving" in detail
        assert probe is not None
        assert f"answered {health} to /health" in probe
        assert asked == [b"/health", b"/health"]
    else:
        assert "serves m" in detail
        # the start-up check asks the served model for one token; the breaker's probe only once a read named it
        start_up = [b"/health", b"/v1/models", b"/v1/chat/completions"]
        assert asked == [*start_up, b"/health"] + ([] if health < 300 else [b"/v1/models"])
