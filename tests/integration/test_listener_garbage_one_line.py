"""Garbage sent once a connection is open (after a good TLS handshake, or on the plain port) is one log line per
association, bounded per source as the other lines a peer causes.

Before, garbage after a successful TLS handshake wrote two: the abort's warning (``aborted the association with …:
unknown PDU type 0x47``) and, when the aborted connection then closed, an INFO ``connection from … closed before the
entire PDU was received``, the second not bounded per source at all.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path

import pytest

from listener_support import listener_settings, running
from radtrace.dicom_listener.ae import Listener
from radtrace.store.engine import Store
from radtrace.testing.atna import Pki, make_pki
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

GARBAGE = b"GET / HTTP/1.1\r\nHost: radtrace\r\n\r\n"


def _send_garbage(port: int, pki: Pki | None, *, read: bool) -> None:
    """Connect (with a TLS handshake the listener accepts when ``pki``), send :data:`GARBAGE`, then read until the
    listener closes (``read``) or close at once."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock: socket.socket = raw
    if pki is not None:
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.check_hostname = False
        context.load_cert_chain(pki.client_cert, pki.client_key)
        sock = context.wrap_socket(raw)
    with sock:
        sock.sendall(GARBAGE)
        if read:
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass


def _lines(listener: Listener, caplog: pytest.LogCaptureFixture, port: int, pki: Pki | None) -> list[str]:
    """The listener's lines about each kind of peer: three that read the answer, three that go at once."""
    admission, opened = listener.admission, []
    open_connection = admission.open

    def counted(host: str) -> object:
        opened.append(host)
        return open_connection(host)

    setattr(admission, "open", counted)  # noqa: B010 - counts the connections accepted
    for read in (True, True, True, False, False, False):
        _send_garbage(port, pki, read=read)
    deadline = time.monotonic() + 30
    while len(opened) < 6 or admission.connections:  # each accepted, its threads ended: all is said
        assert time.monotonic() < deadline, "the associations' threads never ended"
        time.sleep(0.05)
    return [r.getMessage() for r in caplog.records if r.name.startswith("radtrace.dicom_listener.")]


@pytest.mark.parametrize("tls", [True, False], ids=["after-tls-handshake", "plain-port"])
def test_garbage_in_an_open_connection_is_one_line_per_association(
    tmp_path: Path, sqlite_store: Store, listener_port: int, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    """Each line logged (the interval made 1 µs): six associations, six lines, each the abort's."""
    pki = make_pki(tmp_path / "pki")
    settings = listener_settings(
        tmp_path,
        listener_port,
        refusal_audit_interval_s=1e-6,
        tls={"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key),
             "ca_bundle": str(pki.ca), "require_client_certificate": True},
    )  # fmt: skip
    plain_port = free_port()
    caplog.set_level("INFO", logger="radtrace.dicom_listener")
    with running(settings, sqlite_store, plain_port=plain_port) as listener:
        caplog.clear()
        said = _lines(listener, caplog, listener_port if tls else plain_port, pki if tls else None)
    assert said == ["aborted the association with 127.0.0.1: unknown PDU type 0x47"] * 6, said


def test_garbage_from_one_source_is_one_line_per_interval(
    tmp_path: Path, sqlite_store: Store, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Six associations sending garbage after a good TLS handshake, within one interval (60 s): one line."""
    pki = make_pki(tmp_path / "pki")
    settings = listener_settings(
        tmp_path,
        listener_port,
        tls={"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key),
             "ca_bundle": str(pki.ca), "require_client_certificate": True},
    )  # fmt: skip
    caplog.set_level("INFO", logger="radtrace.dicom_listener")
    with running(settings, sqlite_store) as listener:
        caplog.clear()
        said = _lines(listener, caplog, listener_port, pki)
    assert said == ["aborted the association with 127.0.0.1: unknown PDU type 0x47"], said
