"""Bytes that never make an A-ASSOCIATE-RQ, then the end of the connection: the same on the TLS and the plain port.

A peer that sends bytes before any A-ASSOCIATE-RQ and then ends the connection before a whole PDU (closes, resets,
or, after a good TLS handshake, sends a record that does not decrypt, or part of a record) is logged in one WARNING
line per source and interval (:class:`~radtrace.dicom_listener.peer_log.PeerLog`) and audited
``association_rejected`` as a protocol violation, aggregated per source, reason and door
(:class:`~radtrace.dicom_listener.refusals.RefusalAudit`).

Before, on either port, such a peer got one INFO line per connection (``connection from … closed before the entire
PDU was received`` after a reset or a bad TLS record, ``closed mid-PDU`` for a cut-off PDU) or none (fewer than 6
bytes, then a close; over TLS, part of a record then a close or reset), and no audit event: 40 of them in the TLS
harness wrote no event at all.

Bytes then an immediate reset need no wait for the listener to read them: Linux keeps what arrived readable after
the reset. What never arrived cannot be judged: a peer's kernel that still holds the bytes (corked, or a small TLS
record behind Nagle's algorithm) discards them at the reset, and the listener sees a bare reset.

A bare connect-and-close or connect-and-reset (a health check: no byte sent; over TLS, after the handshake, with
or without its close_notify) is neither logged nor audited. Before, a bare reset on the plain port wrote ``connection
from … closed before the entire PDU was received``, one INFO line per source and interval.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.transport import AssociationSocket

from listener_support import audit_payloads, listener_settings, running
from radtrace.dicom_listener import pdu_socket
from radtrace.dicom_listener.ae import Listener
from radtrace.dicom_listener.pdu_socket import WholePduSocket
from radtrace.store.engine import Store
from radtrace.testing.atna import Pki, make_pki
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

#: Connections per case, all from 127.0.0.1 within one interval (the default 60 s).
CONNECTIONS = 4

#: An A-ASSOCIATE-RQ's header claiming 68 bytes, and 10 of them.
CUT_RQ = struct.pack(">BBL", 0x01, 0, 68) + bytes(10)

#: A TLS application data record's header claiming 32 bytes, and 10 of them: 15 bytes that make no record.
CUT_RECORD = b"\x17\x03\x03\x00\x20" + bytes(10)

#: ``tcpi_notsent_bytes`` in Linux's ``struct tcp_info``: bytes written that the kernel has not sent yet.
_TCPI_NOTSENT_AT = 144


def _linger_reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _short_header(sock: socket.socket) -> None:
    sock.sendall(b"\x01\x00\x00")


def _cut_rq(sock: socket.socket) -> None:
    sock.sendall(CUT_RQ)


def _bytes_then_reset(sock: socket.socket) -> None:
    """Three bytes, then the reset at once: no wait for the listener to have read them."""
    sock.sendall(b"\x01\x00\x00")
    _linger_reset(sock)


def _bad_record(sock: socket.socket) -> None:
    """After the TLS handshake, bytes that are no TLS record of this session (written beside the TLS layer)."""
    os.write(sock.fileno(), b"\x17\x03\x03\x00\x20" + bytes(32))


def _cut_record(sock: socket.socket) -> None:
    """After the TLS handshake, part of a record (written beside the TLS layer), then the close."""
    os.write(sock.fileno(), CUT_RECORD)


def _cut_record_then_reset(sock: socket.socket) -> None:
    _cut_record(sock)
    _linger_reset(sock)


ENDED = "{} bytes, then the connection ended before a whole PDU"
CUT_TLS = f"{len(CUT_RECORD)} bytes of TLS records that made no application data, then the connection ended"

#: What each peer does once connected, and what the line and the audit event say of it (on either port).
CASES: dict[str, tuple[Callable[[socket.socket], None], str]] = {
    "short-header-then-close": (_short_header, ENDED.format(3)),
    "cut-rq-then-close": (_cut_rq, ENDED.format(16)),
    "bytes-then-reset": (_bytes_then_reset, ENDED.format(3)),
    "bad-tls-record": (_bad_record, "TLS records the listener could not read (DECRYPTION_FAILED_OR_BAD_RECORD_MAC)"),
    "cut-tls-record-then-close": (_cut_record, CUT_TLS),
    "cut-tls-record-then-reset": (_cut_record_then_reset, CUT_TLS),
}
#: Cases of the TLS layer: the plain port's ``\x17`` is an unknown PDU type (test_listener_garbage_one_line).
TLS_ONLY = {"bad-tls-record", "cut-tls-record-then-close", "cut-tls-record-then-reset"}


def _connect(port: int, pki: Pki | None) -> socket.socket:
    """A connection (over TLS when ``pki``, handshaken) that sends what it is given at once, as DICOM peers do."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if pki is None:
        return raw
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.check_hostname = False
    context.load_cert_chain(pki.client_cert, pki.client_key)
    return context.wrap_socket(raw)


def _run(listener: Listener, port: int, pki: Pki | None, act: Callable[[socket.socket], None]) -> None:
    """:data:`CONNECTIONS` connections that each ``act`` then close; back once the listener has ended them all."""
    admission, opened = listener.admission, []
    open_connection = admission.open

    def counted(host: str) -> object:
        opened.append(host)
        return open_connection(host)

    setattr(admission, "open", counted)  # noqa: B010 - counts the connections accepted
    for _ in range(CONNECTIONS):
        sock = _connect(port, pki)
        act(sock)
        sock.close()
    deadline = time.monotonic() + 30
    while len(opened) < CONNECTIONS or admission.connections:  # each accepted, its threads ended: all is said
        assert time.monotonic() < deadline, "the connections' threads never ended"
        time.sleep(0.05)
    setattr(admission, "open", open_connection)  # noqa: B010


def _said_to(
    tmp_path: Path,
    store: Store,
    port: int,
    caplog: pytest.LogCaptureFixture,
    runs: list[tuple[bool, Callable[[socket.socket], None]]],
    **listener: Any,
) -> tuple[list[tuple[str, str]], int]:
    """Start a listener with a TLS port (``port``) and a plain port; for each ``(tls, act)`` of ``runs`` in turn,
    :data:`CONNECTIONS` connections that each ``act``; stop it. What the listener said at INFO and above
    meanwhile, and its plain port."""
    pki = make_pki(tmp_path / "pki")
    plain_port = free_port()
    tls = {"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key),
           "ca_bundle": str(pki.ca), "require_client_certificate": True}  # fmt: skip
    caplog.set_level("INFO", logger="radtrace.dicom_listener")
    with running(listener_settings(tmp_path, port, tls=tls, **listener), store, plain_port=plain_port) as running_:
        caplog.clear()
        for over_tls, act in runs:
            _run(running_, port if over_tls else plain_port, pki if over_tls else None, act)
        said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("radtrace.dicom_listener.")]
    return said, plain_port


def _events(store: Store) -> list[dict[str, Any]]:
    return [json.loads(p) for p in audit_payloads(store, "association_rejected")]


@pytest.mark.parametrize("tls", [True, False], ids=["tls-port", "plain-port"])
@pytest.mark.parametrize("case", list(CASES))
def test_bytes_before_the_rq_then_the_end_are_one_line_per_source_and_an_aggregated_audit(
    tmp_path: Path,
    sqlite_store: Store,
    listener_port: int,
    caplog: pytest.LogCaptureFixture,
    case: str,
    tls: bool,
) -> None:
    if case in TLS_ONLY and not tls:
        pytest.skip("the plain port's garbage is an unknown PDU type (test_listener_garbage_one_line)")
    act, detail = CASES[case]
    said, plain_port = _said_to(tmp_path, sqlite_store, listener_port, caplog, [(tls, act)])
    assert said == [("WARNING", f"connection from 127.0.0.1 ended before any A-ASSOCIATE-RQ: {detail}")], said
    events = _events(sqlite_store)
    # the first at once, the others counted (in one event at the stop, or more if the run outlasts LIVE_S)
    assert [(e["aggregated"], e["count"]) for e in events[:1]] == [(False, 1)], events
    assert all(e["aggregated"] for e in events[1:]), events
    assert sum(e["count"] for e in events[1:]) == CONNECTIONS - 1, events
    door = (listener_port, True) if tls else (plain_port, False)
    for event in events:
        assert event["reason"] == "association aborted: protocol violation", event
        assert (event["port"], event["tls"]) == door, event
    assert events[0]["detail"] == detail, events


def test_the_same_bytes_get_the_same_words_on_both_ports(
    tmp_path: Path, sqlite_store: Store, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A cut-off A-ASSOCIATE-RQ, then a close: the same line and audit detail whichever port it came to."""
    runs = [(True, _cut_rq), (False, _cut_rq)]
    said, _ = _said_to(tmp_path, sqlite_store, listener_port, caplog, runs, refusal_audit_interval_s=1e-6)
    expected = f"connection from 127.0.0.1 ended before any A-ASSOCIATE-RQ: {ENDED.format(16)}"
    assert said == [("WARNING", expected)] * (2 * CONNECTIONS), said
    events = _events(sqlite_store)
    assert {(e["detail"], e["tls"]) for e in events} == {(ENDED.format(16), True), (ENDED.format(16), False)}, events
    assert len(events) == 2 * CONNECTIONS, events


def _bare_close(sock: socket.socket) -> None:
    """Nothing sent (over TLS, after the handshake): the close follows."""


def _bare_reset(sock: socket.socket) -> None:
    _linger_reset(sock)


def _close_notify(sock: socket.socket) -> None:
    """A TLS health check that ends its session properly: its close_notify (24 bytes of TLS record), then the close."""
    assert isinstance(sock, ssl.SSLSocket)
    sock.settimeout(5)
    with contextlib.suppress(OSError, ValueError):
        sock.unwrap()  # sends close_notify, then waits for the listener's, which closes instead


#: Health checks: connect (over TLS, handshake) and end with nothing sent.
BARE: dict[str, Callable[[socket.socket], None]] = {
    "close": _bare_close,
    "reset": _bare_reset,
    "close-notify": _close_notify,
}


@pytest.mark.parametrize("tls", [True, False], ids=["tls-port", "plain-port"])
@pytest.mark.parametrize("end", list(BARE))
def test_a_bare_connect_and_end_is_neither_logged_nor_audited(
    tmp_path: Path, sqlite_store: Store, listener_port: int, caplog: pytest.LogCaptureFixture, end: str, tls: bool
) -> None:
    """A health check (connect, over TLS the handshake, then close, reset or TLS close with nothing sent): no line,
    no audit event. Before, a reset on the plain port was said in one INFO line per source and interval."""
    if end == "close-notify" and not tls:
        pytest.skip("a TLS close")
    said, _ = _said_to(tmp_path, sqlite_store, listener_port, caplog, [(tls, BARE[end])])
    assert said == [], said
    assert audit_payloads(sqlite_store, "association_rejected") == []


@pytest.mark.parametrize("tls", [True, False], ids=["tls-port", "plain-port"])
def test_bytes_the_peer_never_sent_are_a_bare_reset(
    tmp_path: Path, sqlite_store: Store, listener_port: int, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    """Bytes corked in the peer's kernel, then its reset: the kernel drops them unsent, the listener sees a bare reset.

    As a small TLS record written right after the handshake behind Nagle's algorithm, reset at once: the listener
    cannot know of bytes that never left the peer, and says nothing. Honest either way: a connection whose bytes the
    cork's timer (200 ms) let go before the reset is judged as bytes then a reset (one line, audited).
    """
    held: list[bool] = []

    def corked_then_reset(sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        _linger_reset(sock)
        sock.sendall(b"\x01\x00\x00")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_NOTSENT_AT + 4)
        held.append(struct.unpack_from("=I", info, _TCPI_NOTSENT_AT)[0] > 0)

    said, _ = _said_to(tmp_path, sqlite_store, listener_port, caplog, [(tls, corked_then_reset)])
    sent = held.count(False)
    assert len(held) == CONNECTIONS
    assert said == (
        [("WARNING", f"connection from 127.0.0.1 ended before any A-ASSOCIATE-RQ: {ENDED.format(3)}")] if sent else []
    ), said
    assert sum(e["count"] for e in _events(sqlite_store)) == sent


def test_a_record_arriving_while_the_handshake_is_counted_is_counted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 15 bytes of a cut record arrive between the kernel's two answers (bytes received, then bytes unread) that
    give what the handshake took: counted as both, they were said as 30 (1 run in 5 of the reset case above)."""
    readings = iter([100, 115])  # the kernel's count of bytes received: the record lands after the first reading
    monkeypatch.setattr(pdu_socket, "tcp_bytes_received", lambda sock: next(readings, 115))
    monkeypatch.setattr(pdu_socket, "_unread", lambda sock: 15)
    left, right = socket.socketpair()
    with (
        left,
        right,
        ssl.create_default_context().wrap_socket(
            left, server_hostname="radtrace", do_handshake_on_connect=False
        ) as tls,
    ):
        association_socket = AssociationSocket.__new__(AssociationSocket)
        association_socket.socket = tls
        sock = WholePduSocket.adopt(association_socket)
        sock.tls_ragged_end = True  # then the end, without close_notify
        assert sock.tls_bytes_without_data() == len(CUT_RECORD)
