"""``radtrace audit forward --once`` against an audit record repository that is down ends in seconds, saying so.

Before, ``--once`` retried a repository that refused the connection for ever (1, 2, 4 ... 60 s apart: it never
returned), and against one that accepted the connection but never answered each try waited 10 s for the TCP
connection and 10 s more for the TLS handshake before the backoff ("_ssl.c:989: The handshake operation timed
out"). Now ``--once`` gives up within forwarder.ONCE_GIVE_UP_S (15 s) with one line naming the repository, why, how
many tries over how many seconds and the events still waiting; the cursor is kept, and a later ``--once`` with
the repository up (rsyslog) delivers everything.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radtrace.audit.atna.forwarder import ONCE_GIVE_UP_S, CursorFile
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.atna import Rsyslog, make_pki
from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.integration

EVENTS = 3


def seeded_data_dir(tmp_path: Path, count: int) -> Path:
    """A private data folder whose SQLite database holds ``count`` audit events."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")
    upgrade(store)
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.STUDY_QUEUED, Actor(process="p"), study_uid=f"1.2.3.{n}") for n in range(count)]
    )
    store.dispose()
    return data_dir


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port whose kernel accepts connections (into the listen backlog) that nothing ever reads or answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as server:
        yield server.getsockname()[1]


def forward_once(data_dir: Path, port: int, **extra: str) -> tuple[int, str, float]:
    env = {"RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_ATNA__HOST": "127.0.0.1",
           "RADTRACE_ATNA__PORT": str(port)} | extra  # fmt: skip
    started = time.monotonic()
    result = radtrace("audit", "forward", "--once", env=env, timeout=ONCE_GIVE_UP_S + 45)
    return result.returncode, result.stderr, time.monotonic() - started


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert "Traceback" not in stderr
    return lines[-1]


def test_once_against_a_closed_port_gives_up_in_seconds_and_a_later_once_delivers(tmp_path: Path) -> None:
    data_dir = seeded_data_dir(tmp_path, EVENTS)
    port = free_port()  # nothing listens there yet
    code, stderr, elapsed = forward_once(data_dir, port)
    assert code == 1, stderr
    line = last_line(stderr)
    assert f"ATNA repository 127.0.0.1:{port} unreachable: connection refused" in line
    assert f"(at most {ONCE_GIVE_UP_S:.0f} s)" in line
    assert f"{EVENTS} audit events wait (from seq 1)" in line
    assert elapsed < ONCE_GIVE_UP_S + 10, f"{elapsed:.1f} s"
    assert CursorFile(data_dir / "atna" / "cursor.json").read().seq == 0

    pki = make_pki(tmp_path / "pki")
    receiver = Rsyslog(tmp_path / "rsyslog", port, pki)
    receiver.start()
    try:
        code, stderr, _ = forward_once(
            data_dir, port, RADTRACE_ATNA__SERVER_NAME="localhost", RADTRACE_ATNA__CA_BUNDLE=str(pki.ca),
            RADTRACE_ATNA__CERTIFICATE=str(pki.client_cert), RADTRACE_ATNA__PRIVATE_KEY=str(pki.client_key),
            RADTRACE_ATNA__SETTLE_S="0.2",
        )  # fmt: skip
        assert code == 0, stderr
        assert f"delivered up to seq {EVENTS}" in stderr
        deadline = time.monotonic() + 10
        while len(receiver.received()) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [message.seq for message in receiver.received()] == list(range(1, EVENTS + 1))
    finally:
        receiver.stop()


def test_once_against_a_port_that_accepts_and_never_answers_gives_up_in_seconds(tmp_path: Path) -> None:
    data_dir = seeded_data_dir(tmp_path, EVENTS)
    with blackhole() as port:
        code, stderr, elapsed = forward_once(data_dir, port)
    assert code == 1, stderr
    line = last_line(stderr)
    assert f"ATNA repository 127.0.0.1:{port} did not finish the TLS handshake within" in line
    assert f"(at most {ONCE_GIVE_UP_S:.0f} s)" in line
    assert elapsed < ONCE_GIVE_UP_S + 10, f"{elapsed:.1f} s"
    assert CursorFile(data_dir / "atna" / "cursor.json").read().seq == 0
