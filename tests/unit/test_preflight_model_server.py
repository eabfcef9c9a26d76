"""The start-up check of a vLLM server (``GET /v1/models``) is bounded like the client: a server that drips its answer
one byte at a time, or announces or streams gigabytes, cannot hold ``radtrace preflight`` or serve's start.

Before, the check used a bare ``httpx.get`` with a 3 s timeout *per read* and read the whole body: a drip of one byte
every 0.05 s held it for as long as the body lasted, and a body of gigabytes was read into memory."""

from __future__ import annotations

import json
import socket
import time
import tracemalloc
from pathlib import Path

import pytest

import radtrace.preflight
from private_servers import HostilePeer, drip, hostile_peer, stream_forever
from radtrace.config import load_settings
from radtrace.model.backends.vllm import MAX_REPLY_BYTES
from radtrace.preflight import check_model_weights

pytestmark = pytest.mark.unit

LIMIT_S = 1.0


@pytest.fixture(autouse=True)
def short_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(radtrace.preflight, "MODEL_SERVER_CHECK_S", LIMIT_S, raising=False)


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

    with hostile_peer(behave) as peer:
        status, detail, elapsed, _ = _check(peer.url, tmp_path)
    assert status == "warning"
    assert f"did not answer /v1/models within {LIMIT_S:g} s" in detail
    assert "model.vllm_url" in detail
    assert elapsed < LIMIT_S + 1.5


def test_a_model_list_of_gigabytes_is_cut_at_the_client_s_reply_limit(tmp_path: Path) -> None:
    """Chunked, no length, bytes for ever: stopped at 8 MiB (or the deadline), not read into memory."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        chunk = b" " * 65536
        if peer.write(connection, _head(**{"Transfer-Encoding": "chunked"}) + b'c\r\n{"data": [  \r\n'):
            stream_forever(peer, connection, b"%x\r\n" % len(chunk) + chunk + b"\r\n", limit=256 * 1024 * 1024)

    with hostile_peer(behave) as peer:
        status, detail, elapsed, peak = _check(peer.url, tmp_path)
    assert status == "warning"
    assert "larger than 8 MiB" in detail or "did not answer /v1/models" in detail
    assert elapsed < LIMIT_S + 1.5
    assert peak < 4 * MAX_REPLY_BYTES


def test_a_server_that_answers_is_still_named_with_its_models(tmp_path: Path) -> None:
    body = json.dumps({"object": "list", "data": [{"id": "nvidia/NV-Reason-CXR-3B"}]}).encode()

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, _head(**{"Content-Length": str(len(body))}) + body)

    with hostile_peer(behave) as peer:
        status, detail, _, _ = _check(peer.url, tmp_path)
    assert status == "ok", detail
    assert "nvidia/NV-Reason-CXR-3B" in detail
