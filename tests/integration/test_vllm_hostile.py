"""The vLLM client against a broken or hostile server (raw sockets): every read ends in time, with bounded memory,
as a clear retryable error; a reply whose text is hostile still gives drafts that pass dciodvfy and hl7apy."""

from __future__ import annotations

import json
import socket
import time
import tracemalloc
from io import BytesIO
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import config, dcmread

from private_servers import HostilePeer, drip, hostile_peer, stream_forever
from radtrace.config import ReportingSettings, load_settings
from radtrace.errors import ModelError, ModelRequestError
from radtrace.model.backends.vllm import MAX_REPLY_BYTES
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import StudyImage, study_image
from radtrace.reporting.drafts import build_drafts
from radtrace.testing.studies import ImageSpec, StudySpec, make_image
from tests_support import DICOMDIR_WARNING, PRIVATE_SCHEME_WARNING, dciodvfy_lines

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0
# what a read cut off by the 1 s deadline may take from its request's arrival: a third of the shortest way to
# miss the deadline here (the hang is 30 s, the drips 250 s and 500 s), so a busy machine's scheduling cannot break it
CUT_OFF_S = 10 * TIMEOUT_S


def _reader(url: str, timeout_s: float = TIMEOUT_S) -> StudyReader:
    settings = load_settings(
        model={"backend": "vllm", "vllm_url": url, "vllm_model": "m", "request_timeout_s": timeout_s}
    )
    return StudyReader(settings.model)


SOURCE = make_image(StudySpec(), ImageSpec(rows=256, columns=256))


def _study() -> list[StudyImage]:
    buffer = BytesIO()
    SOURCE.save_as(buffer, enforce_file_format=True)
    return [study_image(buffer.getvalue())]


def _head(status: str = "200 OK", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _completion(text: str) -> bytes:
    return json.dumps(
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20},
        }
    ).encode()


def _read_fails(peer: HostilePeer, timeout_s: float = TIMEOUT_S) -> tuple[ModelError, float, int]:
    """Read one study from ``peer``; return the error, the seconds from the request's arrival to the error (not
    from the start: the picture's preparation, traced, took seconds on a busy machine) and the peak of Python
    allocations meanwhile."""
    reader, study = _reader(peer.url, timeout_s), _study()
    tracemalloc.start()
    try:
        with pytest.raises(ModelError) as raised:
            reader.read(study)
        ended = time.monotonic()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.retryable
    while not peer.arrivals and time.monotonic() < ended + 10:  # the peer's thread may not have noted it yet
        time.sleep(0.01)
    return raised.value, ended - peer.arrivals[0], peak


def test_a_body_that_announces_hundreds_of_megabytes_is_refused_without_reading_it() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.write(connection, _head(**{"Content-Length": str(300 * 1024 * 1024)})):
            stream_forever(peer, connection, b" " * 65536, limit=64 * 1024 * 1024)

    with hostile_peer(behave) as peer:
        error, elapsed, peak = _read_fails(peer, timeout_s=30)
    assert "larger than" in error.reason
    assert "MiB" in error.reason
    assert elapsed < 10
    assert peak < 4 * MAX_REPLY_BYTES


def test_a_body_that_never_ends_is_cut_at_the_reply_limit() -> None:
    """Chunked, no length, bytes for ever (a proxy looping): stopped after the limit, not when memory runs out."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        chunk = b" " * 65536
        if peer.write(connection, _head(**{"Transfer-Encoding": "chunked"}) + b'd\r\n{"choices": [\r\n'):
            stream_forever(peer, connection, b"%x\r\n" % len(chunk) + chunk + b"\r\n", limit=128 * 1024 * 1024)

    with hostile_peer(behave) as peer:
        error, elapsed, peak = _read_fails(peer, timeout_s=30)
        sent = peer.sent
    assert "larger than" in error.reason
    assert elapsed < 20
    assert peak < 4 * MAX_REPLY_BYTES
    assert sent < 8 * MAX_REPLY_BYTES  # the client stopped reading (socket buffers hold the rest)


def test_a_body_dripped_one_byte_at_a_time_ends_at_the_request_timeout() -> None:
    """Each byte arrives well within the read timeout, so only a deadline for the whole request ends it."""
    body = _completion("x" * 5000)

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.write(connection, _head(**{"Content-Length": str(len(body))})):
            drip(peer, connection, body, every_s=0.05)

    with hostile_peer(behave) as peer:
        error, elapsed, _ = _read_fails(peer)
    assert "did not answer" in error.reason
    assert "within 1 s" in error.reason
    assert elapsed < CUT_OFF_S


def test_headers_dripped_one_byte_at_a_time_end_at_the_request_timeout() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        drip(peer, connection, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10000, every_s=0.05)

    with hostile_peer(behave) as peer:
        error, elapsed, _ = _read_fails(peer)
    assert "did not answer" in error.reason
    assert elapsed < CUT_OFF_S


def test_a_server_that_accepts_and_never_answers_ends_at_the_request_timeout() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.stop.wait(30)

    with hostile_peer(behave) as peer:
        error, elapsed, _ = _read_fails(peer)
    assert "did not answer" in error.reason
    assert elapsed < CUT_OFF_S


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"object": "error", "message": "CUDA out of memory", "type": "InternalServerError", "code": 500}',
         "answered with an error: 'CUDA out of memory'"),
        (b'{"error": {"message": "model is loading", "code": 503}}', "answered with an error: 'model is loading'"),
        (b'{"choices": [{"message": {"content": ["not", "text"]}}]}', "malformed completion"),
        (b'{"choices": [', "not JSON"),
    ],
)  # fmt: skip
def test_http_200_with_an_error_object_or_a_broken_completion_names_what_the_server_said(
    body: bytes, expected: str
) -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, _head(**{"Content-Length": str(len(body))}) + body)

    with hostile_peer(behave) as peer:
        error, _, _ = _read_fails(peer)
    assert expected in error.reason


@pytest.mark.parametrize("status", ["429 Too Many Requests", "503 Service Unavailable"])
def test_overload_with_retry_after_is_retryable_and_says_when(status: str) -> None:
    body = b'{"object": "error", "message": "busy"}'

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, _head(status, **{"Content-Length": str(len(body)), "Retry-After": "30"}) + body)

    with hostile_peer(behave) as peer:
        error, _, _ = _read_fails(peer)
    assert f"answered {status[:3]}" in error.reason
    assert "retry after 30 s" in error.reason


def test_an_endless_error_body_is_not_read_to_the_end() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.write(connection, _head("400 Bad Request", **{"Transfer-Encoding": "chunked"})):
            chunk = b"\x1b[2J" * 16384
            stream_forever(peer, connection, b"%x\r\n" % len(chunk) + chunk + b"\r\n", limit=64 * 1024 * 1024)

    with hostile_peer(behave) as peer:
        reader, study = _reader(peer.url, 30), _study()
        with pytest.raises(ModelRequestError) as raised:
            reader.read(study)
        elapsed = time.monotonic() - peer.arrivals[0]
        sent = peer.sent
    assert sent < 32 * 1024 * 1024  # the client read the start of the error, not all of it
    assert "refused" in str(raised.value)
    assert len(str(raised.value)) < 600
    assert elapsed < 10


HOSTILE_TEXT = (
    "<think>Lungs: MSH|^~\\&|EVIL|X\rPID|1||PID-31337\r\x0b\x1c\r <b>bold</b> <![CDATA[x]]> ]]> &amp; \x00\x07"
    "\u202e gnirts desrever \u202c \u2028 \ufeff \x85 \ud800 Heart: enlarged heart. "
    + "w"
    * (1024 * 1024)  # one token of 1 MB
    + " \nSummary: Cardiomegaly \\F\\ | ^ & ~ \x1b[2J <script>alert(1)</script> \U0001f600</think>"
    "<answer>Cardiomegaly</answer>"
)


def test_a_hostile_completion_text_gives_drafts_that_pass_dciodvfy_and_hl7apy(tmp_path: Path) -> None:
    """NULs, C0/C1 controls, bidi overrides, a lone surrogate (JSON allows one), HL7 delimiters and MLLP framing
    bytes, XML-ish markup and a 1 MB token: the read succeeds and every output is valid for its format."""
    body = _completion(HOSTILE_TEXT)

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, _head(**{"Content-Length": str(len(body))}) + body)

    with hostile_peer(behave) as peer:
        reading = _reader(peer.url, 30).read(_study())
    assert isinstance(reading, Reading)
    assert reading.impression is not None
    assert "Cardiomegaly" in reading.impression
    files = build_drafts(reading, [SOURCE], settings=ReportingSettings(gsps=True), revision=1)
    for name, data in (("sr", files.sr), ("companion", files.companion)):
        assert data is not None
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(data)
        problems = [line for line in dciodvfy_lines(path) if line.startswith(("Error", "Warning"))]
        assert [line for line in problems if not line.startswith((PRIVATE_SCHEME_WARNING, DICOMDIR_WARNING))] == []
        with config.strict_reading():
            for element in dcmread(BytesIO(data)).iterall():
                _ = element.value
    assert files.hl7 is not None
    oru = files.hl7.decode("utf-8")
    assert "\x0b" not in oru
    assert "\x1c" not in oru
    assert "\x00" not in oru
    message = parse_message(oru, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.msh.msh_10.value  # parsed whole
    assert "EVIL" not in [segment.split("|")[0] for segment in oru.split("\r")]
    assert not [segment for segment in oru.split("\r") if segment.startswith("PID|1||PID-31337")]
    json.loads(files.fhir or b"{}")


@pytest.mark.parametrize(
    "usage",
    [b'{"completion_tokens": Infinity}', b'{"completion_tokens": -5}', b'{"prompt_tokens": 1e400}', b'"many"'],
)
def test_hostile_token_counts_are_a_malformed_completion(usage: bytes) -> None:
    body = b'{"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], "usage": ' + usage + b"}"

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, _head(**{"Content-Length": str(len(body))}) + body)

    with hostile_peer(behave) as peer:
        error, _, _ = _read_fails(peer)
    assert "malformed completion" in error.reason


def test_a_model_list_of_huge_names_gives_a_short_reason() -> None:
    """Without model.vllm_model the client asks the server for its models; their names go into the reason."""
    names = [{"id": "\u202e" + "m" * (512 * 1024)}, {"id": "n" * (512 * 1024)}, {"id": "o\x1b[2J"}]
    body = json.dumps({"object": "list", "data": names}).encode()

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, _head(**{"Content-Length": str(len(body))}) + body)

    with hostile_peer(behave) as peer:
        settings = load_settings(model={"backend": "vllm", "vllm_url": peer.url, "request_timeout_s": 5})
        with pytest.raises(ModelRequestError) as raised:
            StudyReader(settings.model).read(_study())
    assert "serves 3 models" in raised.value.reason
    assert "set model.vllm_model" in raised.value.reason
    assert len(raised.value.reason) < 600
    assert "\u202e" not in raised.value.reason
    assert "\x1b" not in raised.value.reason


def _answer(body: bytes, status: str = "200 OK", **headers: str) -> object:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, _head(status, **{"Content-Length": str(len(body))}, **headers) + body)

    return behave


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"choices": ' + b"[" * 60_000 + b"]" * 60_000 + b"}"],
    ids=["unclosed", "closed"],
)
def test_json_nested_past_the_parser_recursion_is_a_malformed_reply(body: bytes) -> None:
    """Before: Python's json raised RecursionError (no ValueError), which left the client as no radtrace error at
    all (the worker's read of the study died with an unexpected exception)."""
    with hostile_peer(_answer(body)) as peer:
        error, _, _ = _read_fails(peer)
    assert "JSON" in error.reason


@pytest.mark.parametrize("element", [b"[]", b'"ab"'], ids=["lists", "strings"])
def test_eight_mebibytes_of_tiny_json_values_is_refused_before_it_is_parsed(element: bytes) -> None:
    """A reply within MAX_REPLY_BYTES whose values are each a few bytes: parsed, 8 MiB of '[],' was 2.8 million
    lists, 189 MB of Python objects per request (tracemalloc), times model.max_concurrency requests at once."""
    count = (MAX_REPLY_BYTES - 64) // (len(element) + 1)
    body = b'{"choices": [' + b",".join([element] * count) + b"]}"

    with hostile_peer(_answer(body)) as peer:
        error, _, peak = _read_fails(peer, timeout_s=30)
    assert "JSON values (more than" in error.reason
    assert peak < 3 * MAX_REPLY_BYTES


def test_ten_thousand_choices_read_the_first() -> None:
    choice = {"index": 0, "message": {"role": "assistant", "content": "<answer>No finding</answer>"}}
    body = json.dumps({"choices": [choice] * 10_000, "usage": {"completion_tokens": 5}}).encode()
    with hostile_peer(_answer(body)) as peer:
        reading = _reader(peer.url, 30).read(_study())
    assert isinstance(reading, Reading)


@pytest.mark.parametrize("status", ["302 Found", "307 Temporary Redirect"])
def test_a_redirect_is_a_refusal_that_names_where_it_points_and_is_not_followed(status: str) -> None:
    """Before: the redirect's body was read as the completion (here a whole one: a draft from a reply that was no
    answer); an empty one said 'not JSON'. The client follows no redirect: the server it was told is the one."""
    body = _completion("<answer>Cardiomegaly</answer>")
    where = "http://elsewhere.invalid/v1/chat/completions"
    with hostile_peer(_answer(body, status, Location=where)) as peer:
        reader, study = _reader(peer.url), _study()
        with pytest.raises(ModelRequestError) as raised:
            reader.read(study)
        requests = len(peer.received)
    assert f"answered {status[:3]} to /v1/chat/completions" in raised.value.reason
    assert "elsewhere.invalid" in raised.value.reason
    assert "model.vllm_url" in raised.value.reason
    assert requests == 1
