"""What ``radtrace serve`` says while it holds back the GPU worker, per backend.

With ``model.backend = "vllm"`` there are no weights on this machine: serve waits for the model server's health
check. Before, it logged "inference is waiting for model weights (vLLM server at … answered 503 to /health …) …
Set RADTRACE_MODEL__PATH to the weights' directory" and later "model weights found (vLLM at … serves m)", sending a
night-shift operator to look for files that do not exist. Each line is said once per change of what is waited for,
not at every recheck."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from radtrace.config import Settings, load_settings
from radtrace.supervisor import WEIGHTS_RECHECK_S, Component, Supervisor
from radtrace.testing.services import free_port
from worker_support import fake_vllm_server

pytestmark = pytest.mark.unit


class _Quick(Supervisor):
    """One GPU worker child that exits at once instead of ``radtrace worker``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [Component("worker", ("worker",), needs_model=True)])

    def _argv(self, component: Component) -> list[str]:
        return [sys.executable, "-c", "pass"]


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "radtrace.supervisor"]


def test_serve_on_vllm_waits_for_the_model_server_and_says_so_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = load_settings(data_dir=tmp_path, model={"backend": "vllm", "vllm_url": f"http://127.0.0.1:{port}"})
    supervisor = _Quick(settings)
    child = supervisor.children[0]
    caplog.set_level(logging.INFO, logger="radtrace.supervisor")
    at = time.monotonic()

    def recheck(times: int) -> None:
        nonlocal at
        for _ in range(times):
            at += WEIGHTS_RECHECK_S + 1
            supervisor._start(child, at)
            assert child.process is None

    with fake_vllm_server(port) as server:
        server.engine_dead = True  # its API process lists the model; /health answers 503
        recheck(4)
        [dead] = _said(caplog)
        assert dead.startswith("inference is waiting for the model server (vLLM server at ")
        assert "answered 503 to /health: its engine is not serving" in dead
        assert "Start (or restart) the vLLM server, or correct model.vllm_url (RADTRACE_MODEL__VLLM_URL)" in dead
        assert f"GET /health is asked again every {WEIGHTS_RECHECK_S:.0f} s" in dead
        assert "the worker is not started; studies are received and wait in 'queued'" in dead
        assert "weights" not in dead
        assert "RADTRACE_MODEL__PATH" not in dead
        assert "inference waits" not in dead  # the start-up check's own advice is not repeated inside this one
        assert server.health_checks == 4

    recheck(3)  # the server is gone altogether: another reason, said once
    assert len(_said(caplog)) == 2, _said(caplog)
    gone = _said(caplog)[1]
    assert gone.startswith("inference is waiting for the model server (")
    assert "not reachable" in gone
    assert "weights" not in gone

    with fake_vllm_server(port) as server:  # back and serving
        at += WEIGHTS_RECHECK_S + 1
        supervisor._start(child, at)
        process = child.process
        assert process is not None
        process.wait(timeout=30)
        said = _said(caplog)
        assert said[2] == f"model server answers (vLLM at http://127.0.0.1:{port} serves m): starting the worker"
        assert said[3].startswith("started worker (pid ")
        assert len(said) == 4
        assert not any("weights" in line for line in said)


@pytest.mark.parametrize(
    ("backend", "found", "told"),
    [
        ("transformers", "model.path {} does not exist", "Set RADTRACE_MODEL__PATH to the weights' directory (a demo "
         "with random weights: "),
        ("onnxruntime", "ONNX export directory {} does not exist", "Set RADTRACE_MODEL__PATH to the directory that "
         "'radtrace model export-onnx' wrote"),
    ],
)  # fmt: skip
def test_serve_on_local_weights_waits_for_the_files_at_model_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, backend: str, found: str, told: str
) -> None:
    missing = tmp_path / "weights"
    supervisor = _Quick(load_settings(data_dir=tmp_path, model={"backend": backend, "path": missing}))
    child = supervisor.children[0]
    caplog.set_level(logging.INFO, logger="radtrace.supervisor")
    at = time.monotonic()
    for step in range(3):
        supervisor._start(child, at + step * (WEIGHTS_RECHECK_S + 1))
        assert child.process is None
    [waiting] = _said(caplog)
    assert waiting.startswith(f"inference is waiting for model weights ({found.format(missing)}")
    assert told in waiting
    assert "model server" not in waiting
    assert "vllm" not in waiting.lower()
