"""Bytes that never make an A-ASSOCIATE-RQ, then the end of the connection: the same on the TLS and the plain port.

A peer that sends bytes before any A-ASSOCIATE-RQ and then ends the connection before a whole PDU (closes, resets,
or, after a good TLS handshake, sends a record that does not decrypt) is logged in one WARNING line per source and
interval (:class:`~radtrace.dicom_listener.peer_log.PeerLog`) and audited ``association_rejected`` as a protocol
violation, aggregated per source, reason and door (:class:`~radtrace.dicom_listener.refusals.RefusalAudit`).

Before, on either port, such a peer got one INFO line per connection (``connection from … closed before the entire
PDU was received`` after a reset or a bad TLS record, ``closed mid-PDU`` for a cut-off PDU) or none (fewer than 6
bytes, then a close), and no audit event: 40 of them in the TLS harness wrote no event at all.

A bare connect-and-close (a health check: no byte sent, the connection closed; over TLS, after the handshake) stays
as it was: no line, no audit event.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from listener_support import audit_payloads, listener_settings, running
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


def _linger_reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _bare(sock: socket.socket) -> None:
    """Connect (and, over TLS, handshake), then close with nothing sent."""


def _short_header(sock: socket.socket) -> None:
    sock.sendall(b"\x01\x00\x00")


def _cut_rq(sock: socket.socket) -> None:
    sock.sendall(CUT_RQ)


#: Set once the listener has read a connection's bytes (the reset case waits for it: a reset that overtakes them,
#: over TLS, leaves the listener no bytes at all, and that is a bare reset).
READ = threading.Event()


def _bytes_then_reset(sock: socket.socket) -> None:
    READ.clear()
    sock.sendall(b"\x01\x00\x00")
    assert READ.wait(10), "the listener never read the bytes"
    _linger_reset(sock)


def _bad_record(sock: socket.socket) -> None:
    """After the TLS handshake, bytes that are no TLS record of this session (written beside the TLS layer)."""
    os.write(sock.fileno(), b"\x17\x03\x03\x00\x20" + bytes(32))


ENDED = "{} bytes, then the connection ended before a whole PDU"

#: What each peer does once connected, and what the line and the audit event say of it (on either port).
CASES: dict[str, tuple[Callable[[socket.socket], None], str]] = {
    "short-header-then-close": (_short_header, ENDED.format(3)),
    "cut-rq-then-close": (_cut_rq, ENDED.format(16)),
    "bytes-then-reset": (_bytes_then_reset, ENDED.format(3)),
    "bad-tls-record": (_bad_record, "TLS records the listener could not read (DECRYPTION_FAILED_OR_BAD_RECORD_MAC)"),
}


def _connect(port: int, pki: Pki | None) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
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


def _tls(pki: Pki) -> dict[str, object]:
    return {"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key),
            "ca_bundle": str(pki.ca), "require_client_certificate": True}  # fmt: skip


def _said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("radtrace.dicom_listener.")]


@pytest.mark.parametrize("tls", [True, False], ids=["tls-port", "plain-port"])
@pytest.mark.parametrize("case", list(CASES))
def test_bytes_before_the_rq_then_the_end_are_one_line_per_source_and_an_aggregated_audit(
    tmp_path: Path,
    sqlite_store: Store,
    listener_port: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    tls: bool,
) -> None:
    if case == "bad-tls-record" and not tls:
        pytest.skip("the plain port's garbage is an unknown PDU type (test_listener_garbage_one_line)")
    take = WholePduSocket._take

    def taken(self: WholePduSocket, target: memoryview) -> int:
        count = take(self, target)
        if count:  # bytes of this read: an earlier connection's socket read again (empty) once set READ too early
            READ.set()
        return count

    monkeypatch.setattr(WholePduSocket, "_take", taken)
    pki = make_pki(tmp_path / "pki")
    plain_port = free_port()
    settings = listener_settings(tmp_path, listener_port, tls=_tls(pki))
    caplog.set_level("INFO", logger="radtrace.dicom_listener")
    with running(settings, sqlite_store, plain_port=plain_port) as listener:
        caplog.clear()
        act, detail = CASES[case]
        _run(listener, listener_port if tls else plain_port, pki if tls else None, act)
        said = _said(caplog)
    assert said == [("WARNING", f"connection from 127.0.0.1 ended before any A-ASSOCIATE-RQ: {detail}")], said
    events = [json.loads(p) for p in audit_payloads(sqlite_store, "association_rejected")]
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
    pki = make_pki(tmp_path / "pki")
    plain_port = free_port()
    settings = listener_settings(tmp_path, listener_port, tls=_tls(pki), refusal_audit_interval_s=1e-6)
    caplog.set_level("INFO", logger="radtrace.dicom_listener")
    with running(settings, sqlite_store, plain_port=plain_port) as listener:
        caplog.clear()
        _run(listener, listener_port, pki, _cut_rq)
        _run(listener, plain_port, None, _cut_rq)
        said = _said(caplog)
    expected = f"connection from 127.0.0.1 ended before any A-ASSOCIATE-RQ: {ENDED.format(16)}"
    assert said == [("WARNING", expected)] * (2 * CONNECTIONS), said
    events = [json.loads(p) for p in audit_payloads(sqlite_store, "association_rejected")]
    assert {(e["detail"], e["tls"]) for e in events} == {(ENDED.format(16), True), (ENDED.format(16), False)}, events
    assert len(events) == 2 * CONNECTIONS, events


def _bare_reset(sock: socket.socket) -> None:
    """Connect (and, over TLS, handshake), then reset with nothing sent."""
    _linger_reset(sock)


@pytest.mark.parametrize("tls", [True, False], ids=["tls-port", "plain-port"])
def test_a_bare_connect_and_reset_is_not_audited(
    tmp_path: Path, sqlite_store: Store, listener_port: int, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    """A health check that resets (SO_LINGER 0) with nothing sent: as before, no audit event; on the plain port one
    INFO line per source and interval, over TLS none (the reset reads as a close there)."""
    pki = make_pki(tmp_path / "pki")
    plain_port = free_port()
    settings = listener_settings(tmp_path, listener_port, tls=_tls(pki))
    caplog.set_level("INFO", logger="radtrace.dicom_listener")
    with running(settings, sqlite_store, plain_port=plain_port) as listener:
        caplog.clear()
        _run(listener, listener_port if tls else plain_port, pki if tls else None, _bare_reset)
        said = _said(caplog)
    expected = [] if tls else [("INFO", "connection from 127.0.0.1 closed before the entire PDU was received")]
    assert said == expected, said
    assert audit_payloads(sqlite_store, "association_rejected") == []


@pytest.mark.parametrize("tls", [True, False], ids=["tls-port", "plain-port"])
def test_a_bare_connect_and_close_is_neither_logged_nor_audited(
    tmp_path: Path, sqlite_store: Store, listener_port: int, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    """A health check (connect, over TLS the handshake, then close with nothing sent): no line, no audit event."""
    pki = make_pki(tmp_path / "pki")
    plain_port = free_port()
    settings = listener_settings(tmp_path, listener_port, tls=_tls(pki))
    caplog.set_level("INFO", logger="radtrace.dicom_listener")
    with running(settings, sqlite_store, plain_port=plain_port) as listener:
        caplog.clear()
        _run(listener, listener_port if tls else plain_port, pki if tls else None, _bare)
        said = _said(caplog)
    assert said == [], said
    assert audit_payloads(sqlite_store, "association_rejected") == []
