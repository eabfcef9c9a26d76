"""A failed TLS handshake on the listener's TLS port is one line of its log: the peer's address and port, and why.

Before, each was closed without a word (the handshake runs in the connection's thread, which dropped every
exception): a modality sending no client certificate, one whose certificate the CA bundle does not sign, one that does
not trust the listener's certificate, or one speaking plain DICOM to the TLS port was refused, and ``radtrace listen``
logged nothing of it (nor did the audit log, no association having been asked for). The lines are bounded per source
as the other lines a peer causes (:mod:`radtrace.dicom_listener.peer_log`), and no byte a peer sends reaches them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from listener_support import listener_env, listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu, storescu
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.atna import Pki, make_pki
from radtrace.testing.studies import ImageSpec, StudySpec, make_image, write_study

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("echoscu") is None or shutil.which("openssl") is None, reason="needs dcmtk, openssl"
    ),
]

#: A peer's bytes that would read as a second log line if they reached one.
FORGED = b"\r\n2026-01-01 00:00:00,000 ERROR   radtrace.dicom_listener.ae: forged by the peer\r\n"


def _raw(port: int, data: bytes) -> int:
    """Send ``data`` on a new TCP connection and wait for the listener to close it; the local port it came from."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        local_port = int(sock.getsockname()[1])
        sock.sendall(data)
        with contextlib.suppress(OSError):  # the listener may have shut it already (ENOTCONN, a reset)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        return local_port


def _wait_for_lines(log_path: Path, after: int, count: int) -> None:
    """Wait until the log holds ``count`` lines after its first ``after`` characters (at most 30 s)."""
    deadline = time.monotonic() + 30
    while len(log_path.read_text()[after:].splitlines()) < count:
        assert time.monotonic() < deadline, f"not {count} lines: {log_path.read_text()[after:]}"
        time.sleep(0.05)


def _tls_env(tmp_path: Path, port: int, database_url: str, pki: Pki, **more: str) -> dict[str, str]:
    tls = {
        "RADTRACE_LISTENER__TLS__ENABLED": "true",
        "RADTRACE_LISTENER__TLS__CERTIFICATE": str(pki.server_cert),
        "RADTRACE_LISTENER__TLS__PRIVATE_KEY": str(pki.server_key),
        "RADTRACE_LISTENER__TLS__CA_BUNDLE": str(pki.ca),
        "RADTRACE_LISTENER__TLS__REQUIRE_CLIENT_CERTIFICATE": "true",
    }
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    return environment | listener_env(tmp_path, port, database_url) | tls | more


def test_each_failed_tls_handshake_is_one_line_naming_the_peer_and_why(tmp_path: Path, listener_port: int) -> None:
    """Real peers, each failing its handshake another way, against ``radtrace listen`` (its log is its stderr): one
    line each, no traceback, nothing of what they sent. Lines are bounded per source and interval; the interval is
    made 1 ms here so that each of them, all from 127.0.0.1, is logged."""
    pki, other = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other")
    database_url = f"sqlite:///{tmp_path / 'radtrace.db'}"
    migrated = Store.from_url(database_url)
    upgrade(migrated)
    migrated.dispose()
    (image,) = write_study([make_image(StudySpec(), ImageSpec(), 1, 1)], tmp_path / "in")
    env = _tls_env(tmp_path, listener_port, database_url, pki, RADTRACE_LISTENER__REFUSAL_AUDIT_INTERVAL_S="0.001")
    trusted = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]
    log_path = tmp_path / "listen.log"
    with log_path.open("wb") as log:
        listener = subprocess.Popen([sys.executable, "-m", "radtrace", "listen"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while echoscu(listener_port, options=trusted).returncode != 0:
            assert listener.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        started = log_path.read_text()
        peers = [
            ["echoscu", "+tla", "+cf", str(pki.ca)],
            ["storescu", "+tla", "+cf", str(pki.ca)],
            ["echoscu", "+tls", str(other.client_key), str(other.client_cert), "+cf", str(pki.ca)],
            ["echoscu", "+tls", str(pki.client_key), str(pki.client_cert)],
            ["echoscu", "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(other.ca)],
            ["echoscu"],
            ["openssl", "s_client", "-connect", f"127.0.0.1:{listener_port}"],
        ]
        # One peer at a time, each once the line of the one before is written: the lines are bounded per source
        # and interval, and two failures within the 1 ms interval (a connection's line is written after its
        # socket is closed, so the next peer's can come first) made one of them a count, not a line.
        for number, peer in enumerate(peers, start=1):
            if peer[0] == "echoscu":
                echoscu(listener_port, options=peer[1:])
            elif peer[0] == "storescu":
                storescu([image], listener_port, options=peer[1:])
            else:
                subprocess.run(peer, input=b"", capture_output=True, timeout=30, check=False)
            _wait_for_lines(log_path, len(started), number)
        cut_short = _raw(listener_port, bytes.fromhex("16030100c8010000c40303"))  # a ClientHello's start, then FIN
        _wait_for_lines(log_path, len(started), len(peers) + 1)
        garbage = _raw(listener_port, b"hello" + FORGED * 20)
        _wait_for_lines(log_path, len(started), len(peers) + 2)
        assert echoscu(listener_port, options=trusted).returncode == 0  # and a good one: no line
        listener.send_signal(signal.SIGTERM)
        listener.wait(30)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    output = log_path.read_text()
    lines = [
        text for text in output[len(started) :].splitlines() if not text.endswith("listener stopping on signal 15")
    ]
    assert "Traceback" not in output
    assert "forged" not in output
    assert len(lines) == len(peers) + 2, "\n".join(lines)  # one line per failed handshake, no other
    line = re.compile(
        rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING radtrace\.dicom_listener\.transport: TLS handshake with "
        rf"127\.0\.0\.1:(\d+) on port {listener_port} failed: (.+)$"
    )
    said: dict[int, str] = {}
    for text in lines:
        found = line.match(text)
        assert found is not None, text
        said[int(found.group(1))] = found.group(2)
    assert said.pop(cut_short) == "the peer closed the connection mid-handshake"
    assert said.pop(garbage).endswith("(WRONG_VERSION_NUMBER)")
    codes = sorted(why.rsplit("(", 1)[-1].rstrip(")") for why in said.values())
    assert codes == sorted(
        [
            "PEER_DID_NOT_RETURN_A_CERTIFICATE",  # echoscu without a client certificate
            "PEER_DID_NOT_RETURN_A_CERTIFICATE",  # storescu without one
            "CERTIFICATE_VERIFY_FAILED",  # a client certificate of another CA
            "TLSV1_ALERT_UNKNOWN_CA",  # a peer that trusts no CA
            "TLSV1_ALERT_DECRYPT_ERROR",  # a peer that trusts another CA (of the same name)
            "WRONG_VERSION_NUMBER",  # plain DICOM to the TLS port
            "PEER_DID_NOT_RETURN_A_CERTIFICATE",  # openssl s_client without one
        ]
    ), said


def test_failed_handshakes_from_one_source_are_one_line_per_interval_the_next_saying_how_many_were_left_out(
    tmp_path: Path, sqlite_store: Store, listener_port: int, captured_log: io.StringIO
) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = {"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key)}
    settings = listener_settings(tmp_path, listener_port, tls=tls, refusal_audit_interval_s=5.0)
    with running(settings, sqlite_store):
        started = time.monotonic()
        for _ in range(10):  # plain text to the TLS port, ten times at once
            _raw(listener_port, b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n")
        time.sleep(max(5.5 - (time.monotonic() - started), 0))  # the interval has ended
        _raw(listener_port, b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n")
        time.sleep(0.3)  # its line
    output = captured_log.getvalue()
    assert output.count("TLS handshake with 127.0.0.1:") == 2, output
    assert output.count("(9 more like it from this source not logged in the last") == 1, output
    assert "Traceback" not in output
