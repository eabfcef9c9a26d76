"""The vLLM client backend against a small local server speaking vLLM's OpenAI-compatible protocol.

The fake server is the peer's protocol, not our code: it answers ``/v1/models`` and ``/v1/chat/completions``
the way vLLM does, records what it was sent, and can be told to be slow, fail or refuse.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from radtrace.config import load_settings
from radtrace.errors import ModelError, ModelRequestError, PeerUnavailableError
from radtrace.model.reader import StudyReader
from radtrace.model.reading import FindingStatus, Reading, ReadingFlag
from radtrace.model.study import StudyImage, study_image
from radtrace.testing.services import free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_image

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "model_outputs"


@dataclass
class FakeVllm:
    """What the server answers and what it received."""

    text: str = ""
    reasoning: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    delay_s: float = 0.0
    raw_reply: bytes | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each completion request's arrival
    hold_for: int = 0  # answer no completion until this many are in at once (or 10 s have passed)
    in_flight: int = 0
    most_in_flight: int = 0
    arrived: threading.Condition = field(default_factory=threading.Condition)


@pytest.fixture
def server() -> Iterator[tuple[str, FakeVllm]]:
    state = FakeVllm(text=(FIXTURES / "nv_multiple_findings.txt").read_text(encoding="utf-8"))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._reply(200, json.dumps({"object": "list", "data": [{"id": "nv-reason-cxr-3b"}]}).encode())
            else:
                self._reply(404, b'{"detail": "Not Found"}')

        def do_POST(self) -> None:
            state.arrivals.append(time.monotonic())  # its head read (a client gone since leaves its body buffered)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            state.headers.append(dict(self.headers))
            with state.arrived:
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
                state.arrived.notify_all()
                state.arrived.wait_for(lambda: state.most_in_flight >= state.hold_for, timeout=10)
            time.sleep(state.delay_s)
            with state.arrived:
                state.in_flight -= 1
            if state.raw_reply is not None:
                self._reply(200, state.raw_reply)
                return
            if state.status != 200:
                self._reply(state.status, json.dumps({"object": "error", "message": "boom"}).encode())
                return
            message: dict[str, Any] = {"role": "assistant", "content": state.text}
            if state.reasoning is not None:
                message["reasoning_content"] = state.reasoning
            reply = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": state.finish_reason}],
                "usage": {"prompt_tokens": 320, "completion_tokens": 412, "total_tokens": 732},
            }
            self._reply(200, json.dumps(reply).encode())

    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def reader_for(url: str, **model: Any) -> StudyReader:
    settings = load_settings(model={"backend": "vllm", "vllm_url": url, **model})
    return StudyReader(settings.model)


def study(rows: int = 1400, columns: int = 1100) -> list[StudyImage]:
    buffer = BytesIO()
    make_image(StudySpec(), ImageSpec(rows=rows, columns=columns)).save_as(buffer, enforce_file_format=True)
    return [study_image(buffer.getvalue())]


def test_reading_through_the_server(server: tuple[str, FakeVllm]) -> None:
    url, state = server
    reader = reader_for(url, vllm_api_key="s3cret", max_new_tokens=1500)
    reading = reader.read(study())
    assert isinstance(reading, Reading)
    assert reading.flags == frozenset()
    assert reading.finding("Cardiomegaly") is not None
    assert reading.finding("Cardiomegaly").status == FindingStatus.PRESENT  # type: ignore[union-attr]
    assert (reading.tokens.prompt, reading.tokens.generated) == (320, 412)
    assert reading.identity.backend == "vllm"
    assert "nv-reason-cxr-3b" in reading.identity.source

    sent = state.requests[0]
    assert sent["model"] == "nv-reason-cxr-3b"  # the server's only model, discovered
    assert sent["max_tokens"] == 1500
    assert sent["temperature"] == 0.0
    assert sent["mm_processor_kwargs"] == {"min_pixels": 128 * 128, "max_pixels": 476 * 476}
    assert state.headers[0]["Authorization"] == "Bearer s3cret"
    image_part, text_part = sent["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Find abnormalities and support devices."}
    header, _, encoded = image_part["image_url"]["url"].partition(",")
    assert header == "data:image/png;base64"
    picture = Image.open(BytesIO(base64.b64decode(encoded)))
    # sent already resized, within the budget, aspect kept
    assert picture.size == (reading.images[0].model_columns, reading.images[0].model_rows)
    assert picture.size[0] * picture.size[1] <= 476 * 476
    assert abs(picture.size[1] / picture.size[0] - 1400 / 1100) < 0.07


def test_batched_studies_are_concurrent_requests(server: tuple[str, FakeVllm]) -> None:
    """The server holds every completion until the batch's four are in at once: one after another, each request
    would wait out the hold (10 s) alone and the server would have seen one at a time. Counted, not timed: a wall
    time under 4 x 0.3 s failed at load 15 (the images' preparation counts too)."""
    url, state = server
    state.hold_for = 4
    reader = reader_for(url, batch_size=4, vllm_model="nv-reason-cxr-3b")
    outcomes = reader.read_many([study(300 + 50 * i, 300) for i in range(4)])
    assert all(isinstance(outcome, Reading) for outcome in outcomes)
    assert len(state.requests) == 4
    assert state.most_in_flight == 4  # not one after another


def test_length_finish_is_truncated_and_reasoning_content_is_put_back(server: tuple[str, FakeVllm]) -> None:
    url, state = server
    state.reasoning = "Lungs: There is a small right pleural effusion."
    state.text = "<answer> Pleural"
    state.finish_reason = "length"
    reading = reader_for(url).read(study())
    assert isinstance(reading, Reading)
    assert reading.raw_text.startswith("<think>Lungs: There is a small right pleural effusion.</think>")
    assert ReadingFlag.TRUNCATED in reading.flags
    assert reading.finding("Pleural Effusion").status == FindingStatus.UNCERTAIN  # type: ignore[union-attr]


def test_server_down_is_a_retryable_peer_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PeerUnavailableError, match="not reachable") as caught:
        reader_for(url, request_timeout_s=2).read(study())
    assert caught.value.retryable


def test_slow_server_times_out(server: tuple[str, FakeVllm]) -> None:
    url, state = server
    state.delay_s = 30.0
    with pytest.raises(ModelError, match="did not answer") as caught:
        reader_for(url, request_timeout_s=0.3, vllm_model="m").read(study())
    # from the request's arrival, not from the start (the image's preparation took up to 10 s at load 13), and
    # under half of waiting the answer out (4 s from the start was the bound, with a 5 s answer)
    raised = time.monotonic()
    while not state.arrivals and time.monotonic() < raised + 10:  # the server's thread may not have seen it yet
        time.sleep(0.01)
    assert len(state.arrivals) == 1
    assert raised - state.arrivals[0] < state.delay_s / 2
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("status", "raw", "error", "retryable"),
    [
        (500, None, ModelError, True),
        (429, None, ModelError, True),
        (400, None, ModelRequestError, False),
        (200, b"<html>proxy error</html>", ModelError, True),
        (200, b'{"choices": []}', ModelError, True),
    ],
)
def test_server_failures_become_our_errors(
    server: tuple[str, FakeVllm], status: int, raw: bytes | None, error: type[Exception], retryable: bool
) -> None:
    url, state = server
    state.status, state.raw_reply = status, raw
    with pytest.raises(error) as caught:
        reader_for(url, vllm_model="m").read(study())
    assert getattr(caught.value, "retryable", None) is retryable
