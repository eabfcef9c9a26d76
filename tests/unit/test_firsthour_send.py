"""``radtrace send`` as a newcomer meets it against a real ``radtrace listen``: the quick start's default works, and
a refusal is one line giving the peer's reason in plain words and what to change (found by the first-hour
exploration: before, three pynetdicom error lines, a spinner and "association ... rejected" with a generic hint,
and the default calling AE RADTRACE was refused by the listener ``make run`` starts)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE

from radtrace.testing.abuse import ListenerProcess
from radtrace.testing.services import free_port
from tests_support import one_line_of, radtrace

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
FILM = ROOT / "tests" / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"


def make_run_callers() -> list[dict[str, str]]:
    """The callers `make run` admits (the Makefile's RUN_CALLERS)."""
    found = re.search(r"^RUN_CALLERS := (.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert found is not None
    callers: list[dict[str, str]] = json.loads(found.group(1))
    return callers


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerProcess]:
    """`radtrace listen` admitting make run's callers (and 'PACS', the harness's own), one association at a time."""
    callers = json.dumps([*make_run_callers(), {"ae_title": "PACS"}])
    with ListenerProcess(
        tmp_path_factory.mktemp("send") / "var", free_port(), allowed_callers=callers, max_associations="1"
    ) as process:
        yield process


def test_send_without_calling_ae_is_admitted_by_the_listener_make_run_starts(listener: ListenerProcess) -> None:
    result = radtrace("send", "--port", str(listener.port), str(FILM))
    assert result.returncode == 0, result.stderr
    assert "0x0000" in result.stdout


def test_a_calling_ae_the_listener_does_not_admit_is_named_with_the_setting(listener: ListenerProcess) -> None:
    result = radtrace("send", "--port", str(listener.port), "--calling-ae", "NIGHTSHIFT", str(FILM))
    assert result.returncode == 2, result.stderr
    line = one_line_of(result.stderr)
    assert f"RADTRACE at 127.0.0.1:{listener.port} refused the association" in line
    assert "calling AE title 'NIGHTSHIFT' not recognised" in line
    assert "listener.allowed_callers" in line
    assert "RADTRACE_LISTENER__ALLOWED_CALLERS" in line


def test_a_wrong_called_ae_names_the_option_and_our_listeners_title(listener: ListenerProcess) -> None:
    result = radtrace("send", "--port", str(listener.port), "--called-ae", "RADTRACE1", str(FILM))
    assert result.returncode == 2, result.stderr
    line = one_line_of(result.stderr)
    assert "called AE title 'RADTRACE1' not recognised" in line
    assert "--called-ae" in line
    assert "listener.ae_title is 'RADTRACE'" in line


def test_a_listener_at_its_association_limit_says_try_again(listener: ListenerProcess) -> None:
    peer = AE(ae_title="PACS")
    peer.add_requested_context(str(dcmread(FILM, force=True, stop_before_pixels=True).SOPClassUID))
    held = peer.associate("127.0.0.1", listener.port, ae_title="RADTRACE")
    assert held.is_established
    try:
        result = radtrace("send", "--port", str(listener.port), "--calling-ae", "PACS", str(FILM))
    finally:
        held.release()
    assert result.returncode == 1, result.stderr
    line = one_line_of(result.stderr)
    assert "local limit exceeded" in line
    assert "listener.max_associations" in line
    assert "try again" in line


@contextlib.contextmanager
def answering_http() -> Iterator[int]:
    """A port that answers whatever it is sent as an HTTP server does (uvicorn, the QA API: 400 Bad Request)."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with contextlib.suppress(OSError):
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        thread.join(timeout=10)


def test_send_to_an_http_port_says_it_is_not_the_dicom_listener() -> None:
    """The QA API's port (8080) is the one a newcomer has in the browser; sent there, the peer answers HTTP 400."""
    with answering_http() as port:
        result = radtrace("send", "--port", str(port), str(FILM))
    assert result.returncode == 1, result.stderr
    line = one_line_of(result.stderr)
    assert "answers HTTP, not DICOM" in line
    assert "listener.port (11112" in line
