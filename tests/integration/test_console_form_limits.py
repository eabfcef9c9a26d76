"""A form body is read only up to the console's limit (16 KiB): a stranger posting an endless body to the sign-in
form, or to a decision URL without a session, is answered as soon as the limit is passed, instead of the server
holding the whole body in memory first (read_form read all of it, then measured it).

Against uvicorn on a local port, with a raw socket: the body is sent in 64 KiB chunks and never finished; the
answer must come while the sender is still sending.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from console_support import console_settings, serving
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

CHUNK = b"x" * 65536


def _answer_to_an_endless_body(url: str, path: str, *, declared: int | None) -> bytes:
    address = urlsplit(url)
    framing = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    with socket.create_connection((address.hostname, address.port), timeout=5) as peer:
        peer.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     f"{framing}\r\n\r\n".encode())  # fmt: skip
        for _ in range(4):  # 256 KiB of a body that never ends
            peer.sendall(CHUNK if declared is not None else b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        try:
            return peer.recv(200)  # the server answers before the body ends, or not at all (timeout)
        except TimeoutError:
            return b""


@pytest.mark.parametrize("path", ["/console/login", "/console/studies/1.2.3/1/impression"])
@pytest.mark.parametrize("declared", [None, 1 << 30], ids=["chunked", "content-length"])
def test_an_endless_form_is_answered_once_past_the_limit(
    sqlite_store: Store, tmp_path: Path, path: str, declared: int | None
) -> None:
    with serving(sqlite_store, console_settings(tmp_path, sqlite_store)) as url:
        answer = _answer_to_an_endless_body(url, path, declared=declared)
    status = answer.split(b"\r\n", 1)[0]
    assert status == (
        b"HTTP/1.1 413 Request Entity Too Large" if path == "/console/login" else b"HTTP/1.1 401 Unauthorized"
    )
