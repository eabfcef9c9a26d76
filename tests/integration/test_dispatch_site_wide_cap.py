"""``dispatch.max_sends_per_destination`` caps the sends to one destination on the whole site, not per dispatcher.

Two dispatcher nodes (each its own Store, connection pool and Outbox, four sending threads each) on one PostgreSQL
database race for a backlog of ORUs to one RIS: a real MLLP server that answers each ORU after a while and counts the
connections it holds at once, as a hospital RIS that allows 2 connections does. At most the cap may be open at once,
and every ORU is delivered.

Before (the cap was counted in each process's memory): the two nodes held 2 + 2 = 4 connections to the RIS at once,
and a RIS that allows 2 would have refused the others."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hl7
import pytest
import sqlalchemy as sa

from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings, MllpDestination
from radtrace.reporting.dispatch.outbox import Outbox
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import OutboxMessage, OutboxState
from reporting_support import oru_backlog

pytestmark = pytest.mark.integration

CAP = 2
NODES = 2
THREADS_PER_NODE = 4
ORUS = 10
ANSWER_AFTER_S = 0.4  # a slow RIS: each ORU is acknowledged this long after it arrived


class CountingRis:
    """An MLLP server that holds each connection ``ANSWER_AFTER_S`` before its ACK and counts those held at once."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=32)
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self.open_now = 0
        self.most_at_once = 0
        self.received = 0
        self._stop = threading.Event()

    def serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with self._lock:
            self.open_now += 1
            self.most_at_once = max(self.most_at_once, self.open_now)
        held = True
        try:
            with connection:
                connection.settimeout(10)
                data = b""
                while not data.endswith(b"\x1c\r"):
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                time.sleep(ANSWER_AFTER_S)
                message = hl7.parse(data.strip(b"\x0b\x1c\r").decode())
                ack = str(message.create_ack("AA", message_id="ACK1")).encode()
                with self._lock:  # answered: the connection is the sender's to close, at once
                    self.received += 1
                    self.open_now, held = self.open_now - 1, False
                connection.sendall(b"\x0b" + ack + b"\x1c\r")
        finally:
            if held:
                with self._lock:
                    self.open_now -= 1

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def counting_ris() -> Iterator[CountingRis]:
    ris = CountingRis()
    thread = threading.Thread(target=ris.serve, daemon=True)
    thread.start()
    try:
        yield ris
    finally:
        ris.stop()
        thread.join(5)
        ris.listener.close()


def _all_delivered(store: Store, orus: list[int]) -> bool:
    with store.session() as session:
        return not session.scalar(
            sa.select(sa.func.count()).where(OutboxMessage.id.in_(orus), OutboxMessage.state != OutboxState.DELIVERED)
        )


def test_two_dispatcher_nodes_on_one_database_keep_to_the_cap_at_the_ris(postgres_url: str, tmp_path: Path) -> None:
    with counting_ris() as ris:
        settings = DispatchSettings(ris=MllpDestination(host="127.0.0.1", port=ris.port, timeout_s=10),
                                    max_sends_per_destination=CAP)  # fmt: skip
        first = Store.from_url(postgres_url)
        upgrade(first)
        nodes = [first, *(Store.from_url(postgres_url) for _ in range(NODES - 1))]
        try:
            outboxes = [Outbox(node, AuditRecorder(node), settings, tmp_path / "payloads") for node in nodes]
            orus = oru_backlog(first, outboxes[0], settings, ORUS, "sitewidecap00001", "RTACC-SITECAP")
            assert len(orus) == ORUS
            start = threading.Barrier(NODES * THREADS_PER_NODE)
            deadline = time.monotonic() + 60
            errors: list[BaseException] = []

            def send(outbox: Outbox) -> None:
                start.wait(10)
                try:
                    while time.monotonic() < deadline:
                        if _all_delivered(outbox.store, orus):
                            return
                        due = outbox.due()
                        if not any(outbox.deliver(outbox_id).attempted for outbox_id in due):
                            time.sleep(0.02)
                except BaseException as exc:  # reported by the test below
                    errors.append(exc)

            threads = [threading.Thread(target=send, args=(outbox,)) for outbox in outboxes
                       for _ in range(THREADS_PER_NODE)]  # fmt: skip
            began = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(90)
            took = time.monotonic() - began
            assert errors == []
            with first.session() as session:
                states = session.execute(
                    sa.select(OutboxMessage.state, OutboxMessage.attempts).where(OutboxMessage.id.in_(orus))
                ).all()
            print(f"{ORUS} ORUs, {NODES} nodes x {THREADS_PER_NODE} threads: at most {ris.most_at_once} connections "
                  f"at once at the RIS (cap {CAP}), all delivered in {took:.1f} s")  # fmt: skip
            assert ris.most_at_once == CAP, ris.most_at_once
            assert [state for state, _ in states] == [OutboxState.DELIVERED] * ORUS
            assert ris.received == ORUS  # each once: a deferred row is never attempted
            assert sum(attempts for _, attempts in states) == ORUS
        finally:
            for node in nodes:
                node.dispose()
