"""A dcmtk sender whose data has filled the listener's receive window (the listener held from reading): the set-up of
the tests that check such a sender is told at once when the listener stops or its watchdog cuts it off."""

from __future__ import annotations

import fcntl
import struct
import subprocess
import termios
import threading
import time
from typing import Any

import pytest

from radtrace.dicom_listener.admission import Connection
from radtrace.dicom_listener.pdu_socket import WholePduSocket


def unread(connection: Connection) -> int:
    """Bytes the peer sent that wait in the kernel for the listener to read them."""
    assert connection.sock is not None
    return int(struct.unpack("i", fcntl.ioctl(connection.sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])


def window_filled(serving: Any, sender: subprocess.Popen[str], *, at_least: int, timeout_s: float = 30) -> Connection:
    """``sender``'s one connection to the running listener ``serving``, once at least ``at_least`` bytes wait unread
    and that stops growing (the receive window is full)."""
    deadline = time.monotonic() + timeout_s
    while not (connections := [c for c in serving.admission.connections if c.sock is not None]):
        assert sender.poll() is None, "the sender ended before it connected"
        assert time.monotonic() < deadline, "the sender never connected"
        time.sleep(0.01)
    [connection] = connections
    before, queued = -1, unread(connection)
    while queued != before or queued < at_least:  # the window is full once what waits stops growing
        assert sender.poll() is None, "the sender ended before its data filled the window"
        assert time.monotonic() < deadline, "the sender's data never filled the window"
        time.sleep(0.3)
        before, queued = queued, unread(connection)
    return connection


def reads_held_until_shut(monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener reads a connection's first 2 MB, then reads nothing more until the connection is shut (by a stop
    or the watchdog), then reads what is queued: a sender's data fills the receive window meanwhile."""
    shut = threading.Event()
    recv, shut_socket = WholePduSocket.recv, Connection.shut

    def slow_recv(self: WholePduSocket, nr_bytes: int) -> bytearray:
        if self.received_bytes > 2 << 20:
            shut.wait(30)
        return recv(self, nr_bytes)

    def shut_then_read(self: Connection, *, abort: bool = False) -> None:
        shut_socket(self, abort=abort)
        shut.set()

    monkeypatch.setattr(WholePduSocket, "recv", slow_recv)
    monkeypatch.setattr(Connection, "shut", shut_then_read)
