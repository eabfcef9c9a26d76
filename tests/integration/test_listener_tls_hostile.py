"""Hostile peers on the listener's TLS port: a connection that never starts its TLS handshake must not hold up
anyone else's.

Before, the server side of the handshake ran in the accepting thread (pynetdicom's way, bounded by radtrace at the
ACSE timeout): one silent TCP connection to the TLS port held every other TLS connection until that deadline
(a legitimate C-ECHO took 29.8 s behind it), and a peer opening one again each time kept the TLS port shut.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from listener_support import audit_payloads, listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store
from radtrace.testing.atna import make_pki
from radtrace.testing.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("echoscu") is None, reason="needs dcmtk")]


def _tls_echo(port: int, ca: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = echoscu(port, options=["+tla", "+cf", str(ca), "-to", "60"], timeout=90)
    return done, time.monotonic() - started


def test_silent_connections_to_the_tls_port_hold_up_no_one_and_are_cut_at_the_negotiation_deadline(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = {"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key)}
    settings = listener_settings(tmp_path, listener_port, tls=tls, acse_timeout_s=20, negotiation_timeout_s=3)
    plain_port = free_port()
    with running(settings, store, plain_port=plain_port):
        silent = [socket.create_connection(("127.0.0.1", listener_port), timeout=30) for _ in range(3)]
        try:
            time.sleep(0.3)  # accepted: before, the first one's handshake held the accepting thread
            done, seconds = _tls_echo(listener_port, pki.ca)
            assert done.returncode == 0, done.stderr
            assert seconds < 5, f"a TLS C-ECHO took {seconds:.1f} s behind silent connections"
            assert echoscu(plain_port).returncode == 0
            for sock in silent:  # the negotiation deadline (3 s) shuts each, its handshake never begun
                sock.settimeout(15)
                assert sock.recv(1) == b""
        finally:
            for sock in silent:
                sock.close()
        time.sleep(1.5)  # the watchdog's next sweep writes nothing more; the stop writes the counts
    timed_out = [
        json.loads(p)
        for p in audit_payloads(store, "association_rejected")
        if "negotiation_timeout_s" in json.loads(p)["reason"]
    ]
    assert sum(p["count"] for p in timed_out) == 3, timed_out
    assert {(p["port"], p["tls"], p["established"]) for p in timed_out if not p["aggregated"]} == {
        (listener_port, True, False)
    }
