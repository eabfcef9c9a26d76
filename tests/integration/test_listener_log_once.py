"""One connection of garbage bytes to the listener is one log line, not two.

Found trying radtrace from outside: 5,000 random bytes starting 0x06 were logged twice, when the fast path aborted
the association ("aborted the association with …: PDU of type 0x06 claims … bytes") and again when the watchdog
shut the socket a second later ("cut off a connection from …: PDU of type 0x06 claims … bytes"): a scan of the
port doubled the lines an operator reads, and the second says nothing the first did not. Now the line written
where the abort is decided is the only one; a connection the watchdog cuts for a deadline still gets its own line.

Each case is a socket that sends 200 bytes (seeded random, with the first byte chosen: a PDU type the listener does
not know, an A-RELEASE-RP claiming more than a control PDU may as the first PDU, an A-ASSOCIATE-RQ of the right
length whose content does not decode) to an in-process listener, then waits until the listener has closed the
connection.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import time
from pathlib import Path

import pytest

from listener_support import listener_settings, running
from radtrace.dicom_listener.admission import ABORT_GRACE_S, WATCHDOG_INTERVAL_S
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def _garbage(first: bytes, seed: int) -> bytes:
    rest = random.Random(seed).randbytes(200 - len(first))
    return first + rest


CASES = {
    "unknown PDU type": (_garbage(b"\xab", 1), "unknown PDU type 0xAB"),
    "A-RELEASE-RP claiming too much": (
        _garbage(b"\x06\x00\x7f\x00\x00\x00", 2),
        "A-RELEASE-RP (PDU type 0x06) before any A-ASSOCIATE-RQ",  # refused before its length is read
    ),
    "A-ASSOCIATE-RQ that does not decode": (_garbage(b"\x01\x00" + struct.pack(">I", 194), 3), "type 0x01"),
}


def _send_until_closed(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # an A-ABORT may come first; then the listener shuts the socket
            try:
                if not sock.recv(4096):
                    break
            except ConnectionResetError:
                break
        else:
            pytest.fail("the listener did not close the connection within 10 s")
    time.sleep(ABORT_GRACE_S + 4 * WATCHDOG_INTERVAL_S)  # the watchdog's sweeps after the shut: nothing more


@pytest.mark.parametrize("case", list(CASES))
def test_one_connection_of_garbage_is_one_log_line(
    case: str, tmp_path: Path, store: Store, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    data, says = CASES[case]
    with running(listener_settings(tmp_path, listener_port), store):
        time.sleep(0.5)  # the listener's own start-up lines are not this connection's
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="radtrace"):
            _send_until_closed(listener_port, data)
            lines = [
                f"{r.name} {r.levelname} {r.getMessage()}"
                for r in caplog.records
                if r.name.startswith("radtrace.dicom_listener") and "127.0.0.1" in r.getMessage()
            ]
    assert len(lines) == 1, lines
    assert says in lines[0], lines
    assert "\n" not in lines[0], lines  # the peer's bytes never start a line of their own
