"""The ATNA forwarder against a repository that misbehaves on real TCP connections (octet-counted syslog, RFC 6587,
as over TLS without the TLS): one that reads part of a batch and resets the connection, one that accepts and never
reads, one that reads a byte at a time, one that half-closes. Each such connection ends within the transport's
timeout as a retryable error, the cursor never moves past a row the good repository did not get, and every row
arrives at the repository that finally behaves, in order, the first after the cursor first.

The forwarder counts a batch delivered only once the peer's TCP stack acknowledged every byte and the connection
outlived ``settle_s`` (:mod:`radtrace.audit.atna.forwarder`); a reset discards what the peer's kernel held unread,
which is why a batch the peer's kernel acknowledged must not settle on a connection that then broke.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from radtrace.audit.atna.forwarder import AtnaForwarder, CursorFile
from radtrace.audit.atna.message import AuditSource
from radtrace.audit.atna.syslog import StreamTransport
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import AtnaSettings
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

ROWS = 120
FRAME = re.compile(rb"(\d+) ")
Behaviour = Callable[[socket.socket, threading.Event], bytes]


def _resets_after_part(connection: socket.socket, stop: threading.Event) -> bytes:
    """Reads 3,000 bytes of the first batch, then resets the connection (RST: what it held unread is gone)."""
    data = b""
    while len(data) < 3000:
        chunk = connection.recv(3000 - len(data))
        if not chunk:
            break
        data += chunk
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return data


def _never_reads(connection: socket.socket, stop: threading.Event) -> bytes:
    stop.wait(60)
    return b""


def _reads_a_byte_at_a_time(connection: socket.socket, stop: threading.Event) -> bytes:
    data = b""
    while not stop.wait(0.2) and (chunk := connection.recv(1)):
        data += chunk
    return data


def _half_closes(connection: socket.socket, stop: threading.Event) -> bytes:
    """Says it is done writing (FIN) at once and reads on: the forwarder takes it as gone."""
    connection.shutdown(socket.SHUT_WR)
    data = b""
    connection.settimeout(1.0)
    while not stop.is_set():
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data


def _reads_everything(connection: socket.socket, stop: threading.Event) -> bytes:
    data = b""
    connection.settimeout(0.2)
    while not stop.is_set():
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data


@dataclass
class Repository:
    """A syslog receiver whose n-th connection behaves as ``script[n]`` (the last one repeats); what each
    connection read, in order."""

    script: list[Behaviour]
    port: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    connections: list[bytes] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _serve(self, listener: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            index = len(self._threads)
            self.connections.append(b"")
            behave = self.script[min(index, len(self.script) - 1)]

            def run(connection: socket.socket = connection, index: int = index, behave: Behaviour = behave) -> None:
                with connection:
                    self.connections[index] = behave(connection, self.stop)

            thread = threading.Thread(target=run, daemon=True)
            self._threads.append(thread)
            thread.start()

    def seqs(self, index: int) -> list[int]:
        """The seq of each whole octet-counted message connection ``index`` read."""
        data, found = self.connections[index], []
        while (match := FRAME.match(data)) is not None and len(data) >= match.end() + int(match.group(1)):
            message = data[match.end() : match.end() + int(match.group(1))]
            found.append(int(message.split(b'seq="', 1)[1].split(b'"', 1)[0]))
            data = data[match.end() + int(match.group(1)) :]
        return found


@contextmanager
def repository(script: list[Behaviour]) -> Iterator[Repository]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a peer that does not read fills up at once
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    served = Repository(script, listener.getsockname()[1])
    thread = threading.Thread(target=served._serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.stop.set()
        thread.join(5)
        for worker in served._threads:
            worker.join(5)
        listener.close()


@pytest.fixture
def store(sqlite_store: Store) -> Store:
    AuditRecorder(sqlite_store).record_many(
        [AuditEvent(EventType.STUDY_QUEUED, Actor(process="p"), study_uid=f"1.2.{n}") for n in range(ROWS)]
    )
    return sqlite_store


@pytest.mark.parametrize(
    "hostile",
    [_resets_after_part, _never_reads, _reads_a_byte_at_a_time, _half_closes],
    ids=["resets-mid-batch", "never-reads", "reads-a-byte-at-a-time", "half-closes"],
)
def test_a_repository_that_breaks_each_connection_its_own_way_loses_no_row(
    store: Store, tmp_path: Path, hostile: Behaviour
) -> None:
    settings = AtnaSettings(host="127.0.0.1", transport="tcp", batch_size=50, settle_s=0.3, backoff_initial_s=0.05,
                            backoff_max_s=0.2, poll_interval_s=0.05)  # fmt: skip
    cursor = CursorFile(tmp_path / "cursor.json")
    with repository([hostile, hostile, _reads_everything]) as peer:
        transport = StreamTransport("127.0.0.1", peer.port, None, timeout_s=1.0)
        forwarder = AtnaForwarder(store, settings, cursor, transport, AuditSource("s"))
        # each broken connection must end within the transport's timeout: else this gives up, raising
        forwarder.run(threading.Event(), until_caught_up=True, give_up_after_s=30)
        time.sleep(0.3)  # the good connection's reader takes the last bytes
        peer.stop.set()
        for worker in peer._threads:
            worker.join(5)
        received = [peer.seqs(index) for index in range(len(peer.connections))]
    assert cursor.read().seq == ROWS
    good = received[2]
    # the third connection resends from the cursor, which only rows the second batch of a broken connection's
    # could not have reached: it starts where the last settled batch ended, and nothing is skipped
    assert good == list(range(good[0], ROWS + 1))
    assert good[0] == 1  # neither broken connection outlived settle_s with a batch acknowledged: none settled
    assert len(peer.connections) == 3
