"""A peer dripping a request body holds no turn at being answered: the real ``radtrace api`` reads a body (up to
``api.max_body_bytes``) before the request waits its turn, for the console's forms as for the API.

Before: the console's forms were read by the console, inside the request's turn (FairShare), so 32 connections
dripping a form from 8 addresses held all 32 turns, and 8 dripping the sign-in form held all 8 sign-ins, for
``api.body_timeout_s``: a client from another address waited for their 408s (/work/notes/hostile-http/dribble.py:
GET /console/login answered after 27.9 s, a sign-in refused 503 after 9.4 s).
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import running_api

pytestmark = pytest.mark.integration

INNOCENT = "127.0.7.1"  # not 127.0.0.1, which uvicorn trusts as a proxy
BODY_TIMEOUT_S = 4.0


def _drip(port: int, source: str, path: str) -> socket.socket:
    """A form POST from ``source`` whose body (2,000 bytes declared) stops after its first byte."""
    peer = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    peer.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: 2000\r\n\r\na".encode()
    )
    return peer


@pytest.fixture(scope="module")
def api_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data_dir = tmp_path_factory.mktemp("http-slow-bodies")
    store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")
    upgrade(store)
    store.dispose()
    env = {"RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_API__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with running_api(env, data_dir / "api.log") as api:
        yield api.port


def test_forms_dripped_from_many_addresses_hold_no_turn_and_no_sign_in(api_port: int) -> None:
    """8 sign-in forms (2 from each of 4 addresses: the sign-ins checked at once) and 40 forms to a decision URL
    without a session (4 from each of 10 addresses: more than the 32 turns), each stopped after one byte."""
    dripping = [_drip(api_port, f"127.0.8.{n + 1}", "/console/login") for n in range(4) for _ in range(2)]
    decision = "/console/studies/1.2.3/1/findings"
    dripping += [_drip(api_port, f"127.0.8.{n + 11}", decision) for n in range(10) for _ in range(4)]
    try:
        time.sleep(0.5)  # before: they had all reached the console, and held every turn
        transport = httpx.HTTPTransport(local_address=INNOCENT)
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", transport=transport, timeout=30) as client:
            page = client.get("/console/login")
            sign_in = client.post("/console/login", data={"username": "a", "password": "b", "csrf_token": "c"})
        # Answered while every dripping form still waits for its body (before: only after their 408s freed turns).
        answered, _, _ = select.select(dripping, [], [], 0)
        assert answered == []
        assert page.status_code == 200
        assert sign_in.status_code == 403  # checked (no CSRF cookie); before: 503, too many sign-ins being checked
        assert "CSRF" in sign_in.text
        # The dripping forms are still bounded: 408 once body_timeout_s has passed.
        for peer in dripping:
            peer.settimeout(BODY_TIMEOUT_S + 10)
            assert peer.recv(200).startswith(b"HTTP/1.1 408 ")
    finally:
        for peer in dripping:
            with contextlib.suppress(OSError):
                peer.close()


def test_a_form_past_its_limit_is_still_refused_by_the_console_and_one_declared_past_it_at_once(api_port: int) -> None:
    """Read before its turn (up to the console's 16 KiB), a longer form still reaches the console, which refuses it
    in its own words; one declared longer is refused on its Content-Length, its body not waited for."""
    body = b"username=" + b"a" * (80 * 1024)
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
        answer = client.post(
            "/console/login", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
    assert answer.status_code == 413
    assert "form too large" in answer.text
    with socket.create_connection(("127.0.0.1", api_port), timeout=BODY_TIMEOUT_S / 2) as peer:
        peer.sendall(b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
        assert peer.recv(200).startswith(b"HTTP/1.1 413 ")  # not a 408 after body_timeout_s
