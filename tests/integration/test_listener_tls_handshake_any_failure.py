"""Whatever ends a TLS handshake on the listener's port, the connection is closed and forgotten the same way: one
escaped line per source and interval, an ``association_rejected`` audit, no traceback, no thread left, descriptors and
its half-open place given back.

The handshake (ListenerServer._handshake) caught OSError, ValueError and AttributeError only. Hostile clients
(tests/tls_hostile_support.py: a ClientHello cut at every byte then a FIN or a reset, server names of control
characters, client certificates of another CA or none, garbage after the handshake, a renegotiation) raise nothing
else from Python's ssl (ssl.SSLError and its subclasses, ConnectionResetError, TimeoutError; AttributeError when the
watchdog shuts the socket mid-handshake; Python's own SSLError 'Closed before TLS handshake with data in recv buffer.'
for data then a reset, whose sentence the audit gave as OpenSSL's reason code). Anything else (a MemoryError near the
process's limit, a failure in the listener's own code there) escaped the connection's thread: a traceback on stderr,
the socket left to the garbage collector, no line, no audit, and the connection's half-open place kept until the
negotiation deadline: with ``listener.max_half_open`` such failures in a row, the listener refused every connection.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from listener_support import audit_payloads, listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store
from radtrace.testing.atna import make_pki
from tls_hostile_support import hostile_clients

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("echoscu") is None, reason="needs dcmtk")]

MAX_HALF_OPEN = 32  # the clients that reset do not wait for the listener: a few are half-open at once
INJECTED = MAX_HALF_OPEN + 2
#: The ClientHello (517 bytes) is cut at each of its first 16 bytes, then every this many (every byte: 1; 30 s here).
CUT_STEP = 16


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _steady(count: Callable[[], int]) -> int:
    """``count()`` once it stopped falling (the last association's thread and sockets ending)."""
    last = count()
    for _ in range(100):
        time.sleep(0.05)
        if (now := count()) >= last:
            return now
        last = now
    return last


def _settle(count: Callable[[], int], target: int) -> int:
    """``count()`` once it is back to ``target`` (threads and sockets end just after their peer saw the close)."""
    for _ in range(100):
        if (now := count()) <= target:
            return now
        time.sleep(0.05)
    return count()


def _tls_client_from(source: str, port: int) -> None:
    """A TLS client from ``source`` that trusts nothing: it reads until the listener closes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0)) as raw:
        try:
            with context.wrap_socket(raw) as sock:
                while sock.recv(4096):
                    pass
        except OSError:
            pass


def test_every_failed_handshake_is_one_line_an_audit_and_no_traceback_and_gives_everything_back(
    tmp_path: Path,
    sqlite_store: Store,
    listener_port: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pki, other = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other")
    tls = {"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key),
           "ca_bundle": str(pki.ca), "require_client_certificate": True}  # fmt: skip
    settings = listener_settings(
        tmp_path, listener_port, tls=tls, max_half_open=MAX_HALF_OPEN, negotiation_timeout_s=60,
        negotiation_cpu_burst_s=60, negotiation_cpu_rate_s=1,
    )  # fmt: skip
    trusted = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]
    caplog.set_level(logging.INFO)
    uncaught: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_type.__name__))
    with running(settings, sqlite_store) as listener:
        assert echoscu(listener_port, options=trusted).returncode == 0
        threads, descriptors = _steady(threading.active_count), _steady(_descriptors)
        hostile = 0
        for _name, run in hostile_clients(listener_port, pki, other, step=CUT_STEP):
            run()
            hostile += 1

        handshake = ssl.SSLSocket.do_handshake

        def failing(sock: ssl.SSLSocket, *args: Any) -> None:
            if sock.server_side and sock.getpeername()[0] == "127.0.0.2":
                raise MemoryError
            handshake(sock, *args)

        monkeypatch.setattr(ssl.SSLSocket, "do_handshake", failing)
        for _ in range(INJECTED):  # more than max_half_open: before, each kept its place
            _tls_client_from("127.0.0.2", listener_port)
        monkeypatch.setattr(ssl.SSLSocket, "do_handshake", handshake)
        done = echoscu(listener_port, options=trusted, timeout=20)
        assert done.returncode == 0, done.stdout[-300:] + done.stderr[-300:]
        assert _settle(threading.active_count, threads) <= threads
        assert _settle(_descriptors, descriptors) <= descriptors
        assert listener.admission.connections == [] or all(c.closing_since for c in listener.admission.connections)
    assert uncaught == []  # before: MemoryError, once per injected failure
    output = caplog.text
    assert "Traceback" not in output
    assert "ERROR x" not in output
    assert "\x1b" not in output
    lines = [line for line in output.splitlines() if "TLS handshake with" in line]
    assert [line.split("TLS handshake with ")[1].split(":")[0] for line in lines] == ["127.0.0.1", "127.0.0.2"], lines
    assert lines[1].endswith("failed: the listener failed during the handshake (MemoryError)"), lines
    events = [json.loads(p) for p in audit_payloads(sqlite_store, "association_rejected")]
    waiting = "too many connections waiting to associate"
    violation = "association aborted: protocol violation"  # TLS records it could not read, after the handshake
    assert {e["reason"] for e in events} <= {"TLS handshake failed", waiting, violation}, events
    # raw bytes beside TLS, a forged record, a renegotiation refused (openssl): before, none was audited
    broke_tls = 3 if shutil.which("openssl") is not None else 2
    assert sum(e["count"] for e in events if e["reason"] == violation) == broke_tls, events
    assert sum(e["count"] for e in events if e["reason"] == waiting) < 10, events  # a few resets at once, at most
    counted = sum(e["count"] for e in events)
    cut_hellos = hostile - 12  # the ClientHello cut at each byte, with a FIN and with a reset
    assert cut_hellos + 3 + 2 + INJECTED <= counted <= hostile + INJECTED, (hostile, counted)
    first = [e for e in events if not e["aggregated"] and e["reason"] not in (waiting, violation)]
    assert len(first) == 2, first
    assert first[1]["detail"] == "the listener failed during the handshake (MemoryError)", first
    assert all("Closed before" not in e.get("tls_reason", "") for e in events)
