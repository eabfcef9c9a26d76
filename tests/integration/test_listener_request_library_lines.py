"""pynetdicom's and pydicom's own lines about a bad A-ASSOCIATE-RQ stay within the listener's bound per source.

Before, each request with a control character in an AE title wrote pynetdicom's ERROR ``Invalid 'Calling AE Title'
value ...`` and then the listener's ``undecodable PDU ... ValueError: <the same message>``: the listener's line is
limited per source (dicom_listener/peer_log.py), pynetdicom's was not, so a stranger still wrote one line per
connection. A request with a non-conformant UID wrote pynetdicom's ``Non-conformant ...`` and pydicom's ``Invalid
value for VR UI`` (two to six lines) per request. Now pynetdicom's ERROR is left to the listener's line, which names
the cause, and the warnings are one per source and kind per interval. Every request is still answered.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener_support import listener_settings, running
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

REQUESTS = 10


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _associate_rq(calling: bytes, implementation_uid: bytes = b"1.2.826.0.1.3680043.9.9") -> bytes:
    context = struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x30, b"1.2.840.10008.1.1") + _item(0x40, b"1.2.840.10008.1.2")
    user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, implementation_uid)
    variable = _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context) + _item(0x50, user)
    body = struct.pack(">HH", 1, 0) + b"RADTRACE".ljust(16) + calling.ljust(16) + bytes(32) + variable
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _answer(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return sock.recv(64)[:1]


def _records(output: str) -> list[tuple[str, str]]:
    """(logger, message) of each line, in either format."""
    lines = output.splitlines()
    if lines and lines[0].startswith("{"):
        return [(record["logger"], record["message"]) for record in map(json.loads, lines)]
    return [(line.split()[3].rstrip(":"), line.split(": ", 1)[1]) for line in lines]


def _lines(output: str, logger: str) -> list[str]:
    return [message for name, message in _records(output) if name == logger]


@contextlib.contextmanager
def _warnings_not_errors() -> Iterator[None]:
    """As in the listener (logging.captureWarnings): pydicom's warnings are logged, not raised (the suite makes every
    warning an error, and the listener's DUL thread would refuse the request for it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_bad_titles_are_one_line_per_source_naming_the_cause(
    tmp_path: Path, sqlite_store: Store, listener_port: int, captured_log: io.StringIO
) -> None:
    with running(listener_settings(tmp_path, listener_port), sqlite_store):
        answers = [_answer(listener_port, _associate_rq(b"\x1b[31m\r\nFORGED%d" % n)) for n in range(REQUESTS)]
        time.sleep(0.3)  # the listener's last lines
    assert answers == [b"\x07"] * REQUESTS  # each still aborted
    output = captured_log.getvalue()
    assert _lines(output, "pynetdicom.utils") == []  # BASE: 10, one per request
    [line] = [message for _, message in _records(output) if "undecodable PDU" in message]
    assert "Invalid 'Calling AE Title' value '\\x1b[31m\\x0d\\x0aFORGED0'" in line  # the cause, escaped
    assert "must not contain control characters" in line


@pytest.mark.parametrize("calling", [b"PACS", b"STRANGER"])  # accepted, and rejected (calling AE not allowed)
def test_a_non_conformant_uid_in_requests_is_one_line_per_library_and_kind(
    tmp_path: Path, sqlite_store: Store, listener_port: int, captured_log: io.StringIO, calling: bytes
) -> None:
    request = _associate_rq(calling, implementation_uid=b"1.2.\x1b[31m\nFORGED LINE\r\n")
    with _warnings_not_errors(), running(listener_settings(tmp_path, listener_port), sqlite_store):
        answers = [_answer(listener_port, request) for _ in range(REQUESTS)]
        time.sleep(0.3)
    assert answers == [b"\x02" if calling == b"PACS" else b"\x03"] * REQUESTS  # each answered as before
    output = captured_log.getvalue()
    nonconformant = _lines(output, "pynetdicom.utils")
    assert len(nonconformant) == 1, nonconformant  # BASE: 10 (and a count line per association)
    assert "Non-conformant 'Implementation Class UID' value '1.2.\\x1b[31m\\x0aFORGED LINE" in nonconformant[0]
    assert len(_lines(output, "pydicom")) == 1, output  # BASE: 20
    assert not [
        message for _, message in _records(output) if "in the association with" in message
    ]  # no per-association count of what the bound left out
