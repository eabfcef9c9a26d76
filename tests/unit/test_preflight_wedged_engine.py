"""The start-up check of a vLLM server (serve, listen, worker, and serve's supervisor before it starts the GPU worker)
asks the served model for one token, as the worker's breaker asks a suspect server.

Before, it asked ``/health`` and the model list only: a *wedged* engine (a GPU hang, a stuck scheduler) answers both
and completes nothing, so the check said "ok", serve started the GPU worker, and the wedge was found only at the first
read, one whole request timeout (300 s by default) later. Now such a server is a warning within the check's bounds,
and serve's supervisor waits for it as for a server that is down."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import radtrace.preflight.model
from radtrace.preflight import check_model_weights
from radtrace.testing.services import free_port
from worker_support import fake_vllm_server, vllm_worker_settings

pytestmark = pytest.mark.unit

LIMIT_S = 1.0


@pytest.fixture(autouse=True)
def short_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(radtrace.preflight.model, "MODEL_SERVER_CHECK_S", LIMIT_S)


@pytest.mark.parametrize(
    ("mode", "said"),
    [("wedged", f"answers its health check but completions time out: a 1-token completion did not answer within "
                f"{LIMIT_S:g} s"),
     ("empty", "its completions are empty"),
     ("engine_dead", "answered 503 to /health")],
)  # fmt: skip
def test_a_server_that_answers_its_health_check_but_completes_nothing_is_a_warning(
    tmp_path: Path, mode: str, said: str
) -> None:
    port = free_port()
    with fake_vllm_server(port) as server:
        setattr(server, mode, True)
        started = time.monotonic()
        check = check_model_weights(vllm_worker_settings(tmp_path, port, batch_size=1))
        elapsed = time.monotonic() - started
    assert check.status == "warning", check.detail
    assert said in check.detail, check.detail
    # health and list, then the probe, each under its own 1 s deadline: under a third of the 30 s a wedged engine
    # holds a completion (the wrong behaviour: waiting it out), not under 3 s, which a busy machine can reach
    assert elapsed < 10.0
    assert server.probes == (1 if mode != "engine_dead" else 0)


def test_a_server_that_completes_a_token_is_ok_and_named_with_its_models(tmp_path: Path) -> None:
    port = free_port()
    with fake_vllm_server(port) as server:
        check = check_model_weights(vllm_worker_settings(tmp_path, port, batch_size=1))
    assert (check.status, check.detail) == ("ok", f"vLLM at http://127.0.0.1:{port} serves m")
    assert (server.probes, server.requests) == (1, 0)  # one token asked, no read
