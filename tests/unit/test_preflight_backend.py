"""The start-up model check follows the backend (issue 15: with a vLLM server configured, serve waited
forever for weights it does not need): transformers needs weights here, vLLM a server that answers, demo
nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.preflight import check_model_weights
from radtrace.testing.services import free_port

pytestmark = pytest.mark.unit


class _Models(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "nvidia/NV-Reason-CXR-3B"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """The start-up check's one-token completion (85b5e32): a served model answers it at once."""
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"object": "chat.completion", "usage": {"completion_tokens": 1},
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "No"},
                                        "finish_reason": "length"}]}).encode()  # fmt: skip
        self.send_response(200 if self.path == "/v1/chat/completions" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def vllm_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_vllm_needs_a_server_that_answers_not_weights(vllm_server: str, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, model={"backend": "vllm", "vllm_url": vllm_server})
    check = check_model_weights(settings)
    assert (check.status, check.name) == ("ok", "model server")
    assert "nvidia/NV-Reason-CXR-3B" in check.detail

    down = load_settings(data_dir=tmp_path, model={"backend": "vllm", "vllm_url": f"http://127.0.0.1:{free_port()}"})
    check = check_model_weights(down)
    assert check.status == "warning"
    assert "does not answer" in check.detail
    assert "model.vllm_url" in check.detail


def test_the_demo_backend_needs_nothing_and_transformers_needs_weights(tmp_path: Path) -> None:
    demo = load_settings(data_dir=tmp_path, model={"backend": "demo", "demo": True})
    assert check_model_weights(demo).status == "ok"
    assert "DEMO" in check_model_weights(demo).detail
    missing = load_settings(data_dir=tmp_path, model={"path": tmp_path / "no-weights"})
    assert check_model_weights(missing).status == "warning"
