"""The watchdog's sweep never forgets a connection whose socket is still open."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from radtrace.config import ListenerSettings
from radtrace.dicom_listener.admission import ABORT_GRACE_S, Admission, Connection

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_connection_whose_association_thread_ended_is_shut_as_it_is_forgotten() -> None:
    """After an abort the association thread can end while pynetdicom's DUL still waits in Sta13 for the peer to
    close (up to the ACSE timeout, 30 s): forgotten without being shut, its socket stayed open all that time."""
    clock = _Clock()
    admission = Admission(ListenerSettings(), clock=clock)
    ours, peer = socket.socketpair()
    try:
        connection = admission.open("10.0.0.1")
        assert isinstance(connection, Connection)
        connection.sock = ours
        connection.assoc = SimpleNamespace(is_established=False, is_alive=lambda: False, ident=1)  # started, ended
        clock.now += ABORT_GRACE_S + 0.1
        admission.sweep()
        assert admission.connections == []
        peer.settimeout(1)
        assert peer.recv(10) == b""  # shut: the peer sees the end at once
    finally:
        ours.close()
        peer.close()
