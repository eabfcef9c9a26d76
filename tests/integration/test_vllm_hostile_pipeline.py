"""A study read through a vLLM server that drips its answer one byte at a time: the worker's pipeline is not held
past the request timeout, retries within broker.max_attempts, and the revision ends failed with a reason that says
what the server did, in the store and in the audit log."""

from __future__ import annotations

import functools
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from private_servers import HostilePeer, drip, hostile_peer
from radtrace.config import Settings, load_settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import RevisionState
from radtrace.testing.studies import make_study
from radtrace.worker.attempts import Result
from radtrace.worker.pipeline import StudyPipeline
from worker_support import audit_events, revision_row, spool_study

pytestmark = pytest.mark.integration


@dataclass
class Drips:
    lasted: list[float] = field(default_factory=list)  # seconds each dripped completion ran until the client left


def _dripping_server(drips: Drips, peer: HostilePeer, connection: socket.socket) -> None:
    """Drips its completions; its /health, model list and a one-token completion (the worker's health check of the
    server after a completion timed out) it answers at once: a server that is up and slow, not one that is down or
    wedged (those the worker holds its reads for: test_worker_outage, test_worker_wedged_engine)."""
    body = json.dumps({"choices": [{"message": {"content": "x" * 5000}, "finish_reason": "stop"}]}).encode()
    request_body = peer.received[-1].partition(b"\r\n\r\n")[2]
    if request_body and json.loads(request_body).get("max_tokens") == 1:
        body = json.dumps({"choices": [{"message": {"content": "x"}}], "usage": {"completion_tokens": 1}}).encode()
        peer.write(connection, f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return
    if peer.received[-1].startswith(b"GET /health"):
        peer.write(connection, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return
    if peer.received[-1].startswith(b"GET /v1/models"):
        body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
        peer.write(connection, f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    started = time.monotonic()
    if peer.write(connection, head):
        drip(peer, connection, body, every_s=0.05)  # 250 s if the client reads it all
    drips.lasted.append(time.monotonic() - started)


@pytest.fixture
def drips() -> Drips:
    return Drips()


@pytest.fixture
def dripping(drips: Drips) -> Iterator[HostilePeer]:
    with hostile_peer(functools.partial(_dripping_server, drips)) as peer:
        yield peer


@pytest.fixture
def settings(tmp_path: Path, dripping: HostilePeer) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        model={"backend": "vllm", "vllm_url": dripping.url, "vllm_model": "m", "request_timeout_s": 1.0},
        broker={"max_attempts": 2, "retry_backoff_initial_s": 0.1, "retry_backoff_max_s": 0.2},
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.data_dir.mkdir(parents=True)
    opened = Store.from_url(settings.store_url)
    upgrade(opened)
    yield opened
    opened.dispose()


def test_a_dripping_vllm_server_fails_the_revision_with_its_reason_after_max_attempts(
    settings: Settings, store: Store, drips: Drips
) -> None:
    study_uid, number = spool_study(settings, store, make_study())
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")
    results = []
    for _ in range(10):
        result = pipeline.process(study_uid, number)
        results.append(result.result)
        if result.result is not Result.RETRY:
            break
        time.sleep(0.3)  # the retry's backoff
    revision = revision_row(store, study_uid, number)
    assert revision.state is RevisionState.FAILED
    assert revision.reason is not None
    assert "did not answer /v1/chat/completions within 1 s" in revision.reason
    assert results.count(Result.RETRY) == 1  # one retry, then failed: broker.max_attempts = 2
    # each drip cut off by the 1 s timeout, not read for its 250 s: timed from the server's side, not the attempts'
    # wall time (which a busy machine's decoding and store work stretches; < 10 s was the bound)
    deadline = time.monotonic() + 30  # the server's thread sees the client gone at its next write
    while len(drips.lasted) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(drips.lasted) == 2
    assert max(drips.lasted) < 25
    events = audit_events(store)
    assert [(kind, outcome) for kind, outcome, _ in events] == [
        ("inference_started", "success"),
        ("inference_failed", "minor_failure"),  # retried
        ("inference_started", "success"),
        ("inference_failed", "serious_failure"),
        ("study_failed", "serious_failure"),
    ]
    assert all("within 1 s" in json.dumps(payload) for kind, _, payload in events if kind != "inference_started")
