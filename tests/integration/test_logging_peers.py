"""A hostile DICOM peer against a real listener: its log, in text and JSON, keeps one record per line, shows no raw
control character and no patient value, whatever the AE titles and element values held."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom import AE

from listener_support import listener_settings, running
from radtrace.errors import DispatchError
from radtrace.reporting.dispatch.mllp import END_BLOCK, frame, send_message
from radtrace.store.engine import Store
from radtrace.testing.studies import ImageSpec, StudySpec, make_image

pytestmark = pytest.mark.integration

FORGED = "2026-12-04 12:00:00,000 INFO    radtrace.dicom_listener: admitted"
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-31337"
PATIENT_VALUES = (PATIENT_NAME, PATIENT_ID, "Jane", "19561303x")
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL)")
RAW_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202e]")
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _associate_rq(calling: bytes, called: bytes) -> bytes:
    """An A-ASSOCIATE-RQ built byte by byte: a library SCU would refuse these AE titles before sending them."""
    context = (
        struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x30, VERIFICATION.encode()) + _item(0x40, IMPLICIT_LITTLE.encode())
    )
    variable = (
        _item(0x10, b"1.2.840.10008.3.1.1.1")
        + _item(0x20, context)
        + _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    )
    fixed = struct.pack(">HH", 1, 0) + called.ljust(16)[:16] + calling.ljust(16)[:16] + bytes(32)
    body = fixed + variable
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _hostile_association(port: int, calling: bytes, called: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_associate_rq(calling, called))
        try:
            return sock.recv(64)
        except OSError:
            return b""


def _hostile_instance(invalid_study_uid: bool) -> Dataset:
    dataset = make_image(
        StudySpec(patient_name=PATIENT_NAME, patient_id=PATIENT_ID, seed=7), ImageSpec(rows=64, columns=64)
    )
    # The peer's own bytes: control characters and a forged record inside patient elements.
    dataset[0x00100010] = DataElement(
        0x00100010, "PN", f"{PATIENT_NAME}\r\n{FORGED}\x1b[2J", validation_mode=pydicom_config.IGNORE
    )
    dataset[0x00100020] = DataElement(
        0x00100020, "LO", f"{PATIENT_ID}\u2028{FORGED}\x00", validation_mode=pydicom_config.IGNORE
    )
    dataset[0x00100030] = DataElement(0x00100030, "DA", "19561303x", validation_mode=pydicom_config.IGNORE)
    if invalid_study_uid:
        dataset[0x0020000D] = DataElement(0x0020000D, "UI", f"1.2.3\n{FORGED}", validation_mode=pydicom_config.IGNORE)
    return dataset


def test_a_hostile_peer_cannot_forge_a_listener_log_line_nor_put_a_patient_value_in_it(
    tmp_path: Path, sqlite_store: Store, listener_port: int, captured_log: io.StringIO
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    statuses: list[int] = []
    with running(settings, sqlite_store):
        for calling, called in (
            (b"EVIL", b"RADTRACE"),  # not an allowed caller
            (b"EV\n2026-12-04\x1b[2J", b"RADTRACE"),  # a newline and ANSI in its title
            (b"PACS\x00\r\n", b"RAD\x85TRACE\x7f"),
        ):
            _hostile_association(listener_port, calling, called)
        peer = AE(ae_title="PACS")
        peer.add_requested_context(_hostile_instance(False).SOPClassUID)
        assoc = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE")
        assert assoc.is_established
        for invalid in (False, True):
            status = assoc.send_c_store(_hostile_instance(invalid))
            statuses.append(int(status.Status))
        assoc.release()
        time.sleep(0.3)  # the listener's last log lines of the release
    output = captured_log.getvalue()
    lines = output.splitlines()
    assert len(lines) >= 3, output
    assert statuses[0] == 0x0000  # stored: the listener took the values as data
    assert statuses[1] != 0x0000  # the invalid UID was refused
    in_traceback = False
    for line in lines:
        assert not line.startswith(FORGED[:23]), f"a forged record: {line!r}"
        if line.startswith("{"):
            entry = json.loads(line)  # one whole JSON object per line
            assert RAW_CONTROLS.search(json.dumps(entry, ensure_ascii=False)) is None
        elif RECORD_START.match(line):
            in_traceback = False
        else:  # only a traceback (pynetdicom logs some with its errors) continues a record
            in_traceback = in_traceback or line == "Traceback (most recent call last):"
            assert in_traceback, f"a line that is neither a record nor part of a traceback: {line!r}"
    assert RAW_CONTROLS.search(output) is None
    for value in PATIENT_VALUES:
        assert value not in output, f"{value!r} leaked into: {output}"
    assert "rejected association" in output
    assert "quarantined" in output
    assert "undecodable PDU" in output


def _nak_once(text: bytes) -> tuple[int, threading.Thread]:
    """A RIS on a free port that answers the first message with an AE NAK carrying ``text`` in MSA-3."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        with server, server.accept()[0] as connection:
            received = b""
            while END_BLOCK not in received:
                received += connection.recv(65536)
            ack = b"MSH|^~\\&|RIS|H|RADTRACE|H|20261204||ACK|A1|P|2.5.1\rMSA|AE|CTRL-1|" + text + b"\r"
            connection.sendall(frame(ack))

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return port, thread


def test_a_nak_text_from_the_ris_cannot_forge_a_worker_log_line(captured_log: io.StringIO) -> None:
    """The RIS's NAK text travels in the dispatch error: in the worker's warning and in Celery's traceback.

    (CR and LF end a segment, so MSA-3 cannot hold them; every other line breaker and ESC can.)
    """
    text = f"bad message\u2028{FORGED}\x1b[2J\x85{FORGED}\x0c{FORGED}\x1c{FORGED}".encode()
    port, ris = _nak_once(text)
    message = b"MSH|^~\\&|RADTRACE|H|RIS|H|20261204||ORU^R01|CTRL-1|P|2.5.1\rPID|1||" + PATIENT_ID.encode() + b"\r"
    with pytest.raises(DispatchError) as raised:
        send_message(message, "127.0.0.1", port, timeout_s=5)
    ris.join(5)
    assert "\\u2028" in raised.value.reason  # the peer's characters did reach the error, quoted (escaped)
    logging.getLogger("radtrace.worker.tasks").warning("dispatch %s refused: %s", 7, raised.value.reason)
    # Celery's worker logs a task that failed for good this way (celery.app.trace), traceback included
    logging.getLogger("celery.app.trace").error(
        "Task %s[%s] raised unexpected: %r", "radtrace.dispatch", "t-1", raised.value, exc_info=raised.value
    )
    output = captured_log.getvalue()
    assert output.count("answered AE") >= 2
    assert not [line for line in output.splitlines() if line.startswith(FORGED[:23])], output
    assert not [line for line in output.splitlines() if RECORD_START.match(line) and "admitted" in line[:80]]
    assert RAW_CONTROLS.search(output) is None
