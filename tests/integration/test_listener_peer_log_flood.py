"""A stranger's flood of refused associations and protocol garbage against a real listener: each is still refused and
audited, but the log takes one line per source and kind, not one per connection (1,000 refusals wrote 1,000
warnings of ~400 bytes in 6 s before, without end)."""

from __future__ import annotations

import io
import json
import socket
import struct
import time
from pathlib import Path

import pytest

from listener_support import audit_payloads, listener_settings, running
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

FLOOD = 40
TITLES = 4


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _associate_rq(calling: bytes) -> bytes:
    context = struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x30, b"1.2.840.10008.1.1") + _item(0x40, b"1.2.840.10008.1.2")
    user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9.9")
    variable = _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context) + _item(0x50, user)
    body = struct.pack(">HH", 1, 0) + b"RADTRACE".ljust(16) + calling.ljust(16) + bytes(32) + variable
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _answer(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return sock.recv(64)


def test_a_flood_of_refusals_from_one_source_is_refused_and_audited_in_full_but_logged_once(
    tmp_path: Path, sqlite_store: Store, listener_port: int, captured_log: io.StringIO
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, sqlite_store):
        rejected = [_answer(listener_port, _associate_rq(b"STRANGER%d" % (n % TITLES)))[:1] for n in range(FLOOD)]
        aborted = [_answer(listener_port, b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n")[:1] for _ in range(FLOOD)]
        time.sleep(0.3)  # the listener's last lines
    assert rejected == [b"\x03"] * FLOOD  # every one still answered A-ASSOCIATE-RJ
    assert aborted == [b"\x07"] * FLOOD  # and every HTTP request A-ABORT
    output = captured_log.getvalue()
    for title in range(TITLES):  # one line per calling AE title: a title corrected by hand is logged at once
        assert output.count(f"rejected association from 'STRANGER{title}' at 127.0.0.1") == 1, output
    assert output.count("rejected association from") == TITLES, output
    assert output.count("aborted the association with 127.0.0.1: unknown PDU type 0x47") == 1, output
    payloads = [json.loads(p) for p in audit_payloads(sqlite_store, "association_rejected")]
    counted = sum(p.get("count", 1) for p in payloads if p["reason"] == "calling AE title not allowed")
    assert counted == FLOOD  # the audit log still counts every refusal (the flush at stop writes the rest)
