"""The receive path's pieces: PDV splitting, the hashing thread, read-ahead, and the threads' wake-ups."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import select
import socket
import struct
import threading
import time
from types import SimpleNamespace

import pytest
from pynetdicom.transport import AssociationSocket

from radtrace.dicom_listener.transport import (
    _READ_AHEAD,
    REACTOR_IDLE_S,
    WholePduSocket,
    _Hasher,
    _pdv_items,
    _ReactorGate,
    _Wake,
)


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">L", len(data) + 2) + bytes((context_id, control)) + data


def test_pdvs_are_found_with_their_context_control_header_and_data() -> None:
    body = bytearray(_pdv(1, 0x03, b"command") + _pdv(3, 0x00, b"data") + _pdv(3, 0x02, b""))
    items = _pdv_items(body)
    assert items is not None
    assert [(cx, control, bytes(body[start:end])) for cx, control, start, end in items] == [
        (1, 0x03, b"command"),
        (3, 0x00, b"data"),
        (3, 0x02, b""),
    ]


def test_a_malformed_body_is_left_to_pynetdicom() -> None:
    good = _pdv(1, 0x00, b"abcd")
    assert _pdv_items(bytearray()) is None  # no PDV at all
    assert _pdv_items(bytearray(good[:-1])) is None  # the item runs past the PDU
    assert _pdv_items(bytearray(good + b"\x00\x00")) is None  # a stray partial item header
    assert _pdv_items(bytearray(struct.pack(">L", 1) + b"\x01")) is None  # shorter than its own header


def test_the_hasher_hashes_chunks_in_order_and_stops_when_closed() -> None:
    hasher = _Hasher()
    chunks = [bytes([n]) * (5000 + n) for n in range(50)]
    digest = hashlib.sha256(b"meta")
    for chunk in chunks:
        hasher.update(digest, memoryview(chunk))
    hasher.wait()
    assert digest.hexdigest() == hashlib.sha256(b"meta" + b"".join(chunks)).hexdigest()
    thread = hasher._thread
    assert thread is not None
    assert thread.is_alive()
    hasher.close()
    thread.join(5)
    assert not thread.is_alive()
    hasher.wait()  # nothing queued, no thread: returns at once


def test_the_read_ahead_socket_returns_exactly_what_was_sent_however_it_is_asked_for() -> None:
    payload = os.urandom(3 * _READ_AHEAD + 12345)
    ours, theirs = socket.socketpair()
    sender = threading.Thread(target=lambda: (theirs.sendall(payload), theirs.close()))
    sender.start()
    assoc = SimpleNamespace(dul=SimpleNamespace(event_queue=queue.Queue()))  # what the socket touches
    fast = WholePduSocket.adopt(AssociationSocket(assoc, client_socket=ours))  # type: ignore[arg-type]
    # PDU headers, bodies below and above the read-ahead size, and a read past the end of the data.
    sizes = [6, 131072, 6, 1, _READ_AHEAD + 7, 2 * _READ_AHEAD, len(payload)]
    received = bytearray()
    for size in sizes:
        chunk = fast.recv(size)
        received += chunk
        if len(chunk) < size:
            break
    sender.join(5)
    ours.close()
    assert bytes(received) == payload
    assert len(chunk) < size  # the peer closed: what there was, as pynetdicom's recv returns


def test_the_reactor_gate_waits_for_a_poke_and_never_lets_a_paused_reactor_run() -> None:
    gate = _ReactorGate()
    started = time.monotonic()
    assert gate.wait() is True  # no work: returns after the idle time
    assert time.monotonic() - started >= REACTOR_IDLE_S * 0.9
    gate.poke()
    started = time.monotonic()
    assert gate.wait() is True
    assert time.monotonic() - started < REACTOR_IDLE_S  # work waiting: at once

    gate.clear()  # another thread pauses the reactor
    returned = threading.Event()
    waiter = threading.Thread(target=lambda: (gate.wait(), returned.set()))
    waiter.start()
    gate.poke()
    assert not returned.wait(3 * REACTOR_IDLE_S)  # poked, but paused: it stays put
    gate.set()
    assert returned.wait(5)
    waiter.join(5)


def test_a_wake_rings_the_reader_and_draining_silences_it() -> None:
    wake = _Wake()
    try:
        assert select.select([wake.reader], [], [], 0)[0] == []
        wake.ring()
        wake.ring()
        assert select.select([wake.reader], [], [], 1)[0] == [wake.reader]
        wake.drain()
        assert select.select([wake.reader], [], [], 0)[0] == []
    finally:
        wake.close()
    wake.ring()  # closed: ignored, the association is gone


def test_a_claimed_length_is_never_allocated_before_its_bytes_arrive() -> None:
    from radtrace.dicom_listener.admission import BufferBudget
    from radtrace.dicom_listener.transport import PduRefusedError

    ours, theirs = socket.socketpair()
    theirs.sendall(b"x" * 1000)
    theirs.close()
    assoc = SimpleNamespace(dul=SimpleNamespace(event_queue=queue.Queue()))
    fast = WholePduSocket.adopt(AssociationSocket(assoc, client_socket=ours))  # type: ignore[arg-type]
    fast.budget = BufferBudget(256 * 1024)
    got = fast.recv(4 * 1024**3)  # a 4 GiB claim: what arrived, in a buffer the size of what arrived
    assert bytes(got) == b"x" * 1000
    assert fast.budget.peak <= 64 * 1024  # never more than one read-ahead's worth for 1000 bytes
    fast.give_back()
    assert fast.budget.held == 0
    ours.close()

    ours, theirs = socket.socketpair()

    def send_more_than_the_budget() -> None:
        with theirs, contextlib.suppress(OSError):  # the reader gives up before the end
            theirs.sendall(b"y" * (2 * 1024 * 1024))

    sender = threading.Thread(target=send_more_than_the_budget)
    sender.start()
    fast = WholePduSocket.adopt(AssociationSocket(assoc, client_socket=ours))  # type: ignore[arg-type]
    fast.budget = BufferBudget(1024 * 1024)
    try:
        with pytest.raises(PduRefusedError, match="budget"):
            fast.recv(2 * 1024 * 1024)
    finally:
        ours.close()
        sender.join(5)
