"""Limits that were module constants are settings now, and a setting other than the default takes effect where the
limit is applied: the listener's negotiation CPU budget, the worker's model-server breaker, the QA API's HTTP
limits. Also ``radtrace status`` saying why the oldest revision waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import radtrace.cli.node_rows
import radtrace.cli.studies
import radtrace.worker.status
from radtrace.cli import app
from radtrace.config import ApiSettings, ListenerSettings, load_settings
from radtrace.dicom_listener import rq_budget
from radtrace.dicom_listener.admission import Admission
from radtrace.http_limits import PeerLimits, connection_limit
from radtrace.http_server import RequestGuard
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.services import free_port
from radtrace.worker import breaker
from radtrace.worker.breaker import Hold
from radtrace.worker.pipeline import StudyPipeline
from radtrace.worker.status import ServiceStatus, WaitingRevision

pytestmark = pytest.mark.unit


# --- listener: the negotiation CPU budget ---------------------------------------------------------------------------


def test_the_listener_s_negotiation_budget_follows_its_settings() -> None:
    now = [0.0]
    settings = ListenerSettings(negotiation_cpu_rate_s=0.5, negotiation_cpu_burst_s=0.1)
    budget = Admission(settings).negotiation
    budget.clock = lambda: now[0]
    assert (budget.rate, budget.burst) == (0.5, 0.1)

    budget.charge("192.0.2.7", 0.3)  # within the default burst of 2 s, past this one: 0.2 in debt
    assert not budget.allows("192.0.2.7")
    now[0] = 0.3  # 0.15 CPU s earned back at 0.5/s: 0.05 in debt
    assert not budget.allows("192.0.2.7")
    now[0] = 0.5  # 0.25 earned back: in credit again (at the default 0.2/s it would still be 0.1 in debt)
    assert budget.allows("192.0.2.7")

    default = Admission(ListenerSettings()).negotiation
    assert (default.rate, default.burst) == (rq_budget.RATE_CPU_S_PER_S, rq_budget.BURST_CPU_S) == (0.2, 2.0)


@pytest.mark.parametrize(
    "bad", [{"negotiation_cpu_rate_s": 0}, {"negotiation_cpu_rate_s": 2}, {"negotiation_cpu_burst_s": -1}]
)
def test_a_negotiation_budget_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        ListenerSettings(**bad)


# --- worker: the model-server breaker ---------------------------------------------------------------------------


@pytest.fixture
def down_server_pipeline(tmp_path: Path) -> Iterator[StudyPipeline]:
    """A worker's pipeline (model.server_hold_max_s 0.3, model.server_probe_max_s 0.1) whose vLLM server is down."""
    settings = load_settings(
        data_dir=tmp_path,
        model={"backend": "vllm", "vllm_url": "http://127.0.0.1:9", "server_hold_max_s": 0.3,
               "server_probe_max_s": 0.1},
    )  # fmt: skip
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    reader: Any = SimpleNamespace(backend=SimpleNamespace(unavailable=lambda: "connection refused"))
    pipeline = StudyPipeline(settings, store, reader, worker="w1")
    # the audit entries and waiting reasons of an outage are test_worker_outage's; here only the timing
    pipeline.reading.breaker.on_open = pipeline.reading.breaker.on_close = pipeline.reading.breaker.on_still_down = None
    yield pipeline
    store.dispose()


def test_the_worker_s_breaker_gives_up_and_probes_as_its_settings_say(down_server_pipeline: StudyPipeline) -> None:
    held = down_server_pipeline.reading.breaker
    assert (held.give_up_after_s, held.max_wait_s, held.first_wait_s) == (0.3, 0.1, 0.1)
    probes = []
    held.probe = lambda: probes.append(time.monotonic()) or "connection refused"  # type: ignore[func-returns-value]

    started = time.monotonic()
    assert held.server_down()
    assert held.hold() is Hold.GAVE_UP  # after 0.3 s, not the default 2 h
    assert 0.25 < time.monotonic() - started < 60  # 0.3 s as set; the default (the wrong one) is 2 h
    assert held.gave_up
    assert len(probes) >= 3  # every 0.1 s at most, not 2 s doubling to 60 s

    assert (breaker.GIVE_UP_AFTER_S, breaker.PROBE_MAX_S) == (7200.0, 60.0)  # the defaults, unchanged


def test_a_breaker_setting_out_of_bounds_is_refused(tmp_path: Path) -> None:
    for bad in ({"server_hold_max_s": 0}, {"server_probe_max_s": -1}, {"server_probe_max_s": 86400}):
        with pytest.raises(Exception, match=next(iter(bad))):
            load_settings(data_dir=tmp_path, model=bad)


# --- QA API: the HTTP limits ------------------------------------------------------------------------------------


async def _answered(app: Any, method: str, path: str, body: bytes = b"", *, declare_length: bool = True) -> Any:
    """Send one request through ``app`` (ASGI): (status, JSON body)."""
    length = (b"content-length", str(len(body)).encode())
    headers = [(b"host", b"api"), length if declare_length else (b"transfer-encoding", b"chunked")]
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "client": ("198.51.100.4", 40000)}  # fmt: skip
    chunks = [body[i : i + 512] for i in range(0, len(body), 512)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body_sent = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body_sent) if body_sent else None


async def _echo_length(scope: Any, receive: Any, send: Any) -> None:
    """An application that reads the whole body and answers 200, or 401 for /private."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    status = 401 if scope["path"] == "/private" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"size": size}).encode()})


def test_the_qa_api_refuses_a_body_over_the_configured_max_body_bytes() -> None:
    guard = RequestGuard(_echo_length, limits=PeerLimits.for_settings(ApiSettings(max_body_bytes=2048)))

    assert asyncio.run(_answered(guard, "POST", "/api/x", b"x" * 2048)) == (200, {"size": 2048})
    declared = asyncio.run(_answered(guard, "POST", "/api/x", b"x" * 3000))
    assert declared == (413, {"detail": "request body of 3000 bytes, over the limit of 2048"})
    chunked = asyncio.run(_answered(guard, "POST", "/api/x", b"x" * 3000, declare_length=False))
    assert chunked == (413, {"detail": "request body over 2048 bytes"})
    # the default limit, 64 KiB, takes 3000 bytes
    default = RequestGuard(_echo_length, limits=PeerLimits.for_settings(ApiSettings()))
    assert asyncio.run(_answered(default, "POST", "/api/x", b"x" * 3000)) == (200, {"size": 3000})


def test_the_failed_authentication_throttle_follows_its_settings() -> None:
    api = ApiSettings(failed_auth_limit=3, failed_auth_window_s=30, failed_auth_pause_s=120)
    throttled: list[tuple[str, int]] = []
    guard = RequestGuard(_echo_length, limits=PeerLimits.for_settings(api), on_throttled=lambda *a: throttled.append(a))

    async def attempts() -> list[Any]:
        return [await _answered(guard, "GET", "/private") for _ in range(4)]

    answers = asyncio.run(attempts())
    assert [status for status, _ in answers] == [401, 401, 401, 429]  # the default would allow 20
    assert answers[3][1]["detail"] == "too many failed authentications from your address; try again in 120 s"
    assert throttled == [("198.51.100.4", 3)]


def test_the_connection_limits_and_deadlines_follow_their_settings() -> None:
    api = ApiSettings(max_connections=40, max_connections_per_address=2, header_timeout_s=3, body_timeout_s=4)
    limits = PeerLimits.for_settings(api)
    assert (limits.max_per_source, limits.header_timeout_s, limits.body_timeout_s) == (2, 3.0, 4.0)
    assert limits.max_connections == connection_limit(40) == 40
    assert limits.admit("203.0.113.9") is None
    assert limits.admit("203.0.113.9") is None
    assert limits.admit("203.0.113.9") == "2 connections from your address are open, the limit; close some first"
    assert limits.admit("203.0.113.10") is None
    with pytest.raises(ValidationError, match="max_connections_per_address must not exceed max_connections"):
        ApiSettings(max_connections=20, max_connections_per_address=21)
    with pytest.raises(ValidationError):
        ApiSettings(header_timeout_s=0)


def test_the_api_command_serves_with_the_limits_of_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``radtrace api`` hands serve_http the api.* settings (and records a throttle with api.failed_auth_pause_s)."""
    import radtrace.cli.services
    import radtrace.http_server

    served: dict[str, Any] = {}

    def serve(app: Any, listening: Any, *, limits: PeerLimits, on_throttled: Any) -> None:
        served["limits"] = limits
        served["on_throttled"] = on_throttled

    monkeypatch.setattr(radtrace.http_server, "serve_http", serve)
    recorded: list[Any] = []
    monkeypatch.setattr(
        radtrace.cli.services,
        "_recorder_of_throttles",
        lambda store, limits: recorded.append(limits) or (lambda *a: None),
    )
    env = {"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_API__PORT": str(free_port()),
           "RADTRACE_API__MAX_BODY_BYTES": "4096", "RADTRACE_API__FAILED_AUTH_PAUSE_S": "300",
           "RADTRACE_CONSOLE__ENABLED": "false"}  # fmt: skip
    result = CliRunner().invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["api"], env=env)
    assert result.exit_code == 0, result.output
    assert served["limits"].max_body_bytes == 4096
    assert served["limits"].failed_auth_pause_s == 300.0
    assert recorded == [served["limits"]]


# --- radtrace status: why the oldest revision waits ------------------------------------------------------------


def _status_with_oldest(reason: str | None) -> ServiceStatus:
    since = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
    oldest = WaitingRevision("key", 1, RevisionState.QUEUED, since, 5400.0, "1.2.826.0.1.3680043.2.1125.7", reason)
    return ServiceStatus(studies={}, revisions={}, outbox={}, queues={}, oldest_waiting=oldest)


WAITING = "waiting: model server unavailable since 2026-12-05T04:00:00+00:00 (connection refused)"


@pytest.mark.parametrize("reason", [WAITING, None], ids=["set", "unset"])
def test_status_prints_why_the_oldest_revision_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reason: str | None
) -> None:
    monkeypatch.setattr(radtrace.worker.status, "collect_status", lambda *a, **k: _status_with_oldest(reason))
    monkeypatch.setattr(radtrace.cli.studies, "open_store", lambda settings: contextlib.nullcontext(None))
    monkeypatch.setattr(radtrace.cli.node_rows, "node_rows", lambda *a, **k: [])  # status's nodes table (b7176e7)
    result = CliRunner().invoke(app, ["status", "--no-broker"], env={"RADTRACE_DATA_DIR": str(tmp_path),
                                                                     "COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("oldest waiting: "))
    assert lines[at].endswith("revision 1 queued for 5400 s")
    if reason is None:
        assert "reason" not in result.stdout
    else:
        assert lines[at + 1] == f"  reason: {reason}"
