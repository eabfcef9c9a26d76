"""A PACS that answers our C-STORE with some other DIMSE response: never counted as stored.

Before: pynetdicom hands ``send_c_store`` the first DIMSE message that arrives, whatever it is: a PACS (or a proxy
in front of it) answering with a C-ECHO-RSP of status 0000, or with a C-STORE-RSP for another message or another
instance, had the SR counted as delivered though nothing said it was stored. The MLLP side was found so against a
fake RIS answering ``ADT^A01``; this is the same hole on the DICOM side, shown with a hand-made upper-layer peer. Now
the answer must be a C-STORE-RSP to our message (Message ID Being Responded To) about our instance (Affected SOP
Instance UID, where the PACS gives one); anything else is a retryable error that says what came back.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from dicom_peer_support import RELEASE_RP, associate_ac, command_set, p_data, pdv, read_pdu
from radtrace.config import DicomDestination, ReportingSettings
from radtrace.errors import DispatchError
from radtrace.reporting.dispatch.cstore import StoreResult, store_instance
from radtrace.reporting.sr import build_sr, sr_bytes
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

VERIFICATION = "1.2.840.10008.1.1"


def _payload() -> bytes:
    reading, sources = sr_cases()["normal"]
    return sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))


def _store_request(connection: socket.socket) -> tuple[int, bytes]:
    """Read P-DATA-TF PDUs (however the bytes arrive) until the data set's last fragment: the context ID and the
    request's command set."""
    buffer, command = b"", b""
    while True:
        while len(buffer) < 6 or len(buffer) < 6 + int.from_bytes(buffer[2:6], "big"):
            chunk = connection.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the data set")
            buffer += chunk
        end = 6 + int.from_bytes(buffer[2:6], "big")
        data, buffer = buffer[:end], buffer[end:]
        if data[0] != 0x04:
            raise ConnectionError(f"no P-DATA: {data[:1].hex()}")
        at = 6
        while at + 6 <= len(data):
            (length,) = struct.unpack_from(">L", data, at)
            context_id, control = data[at + 4], data[at + 5]
            fragment = data[at + 6 : at + 4 + length]
            at += 4 + length
            if control & 0x01:
                command += fragment
            elif control & 0x02:
                return context_id, command


@contextmanager
def _pacs(answer: str) -> Iterator[DicomDestination]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            with connection, contextlib.suppress(OSError):
                connection.settimeout(10)
                connection.sendall(associate_ac(read_pdu(connection)))
                context_id, command = _store_request(connection)
                request = dcmread(DicomBytesIO(command), force=True)
                sop_class, sop_instance = str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID)
                message_id = int(request.MessageID)
                store_rsp = {"AffectedSOPClassUID": sop_class, "CommandField": 0x8001}
                fields = {
                    "echo": {"AffectedSOPClassUID": VERIFICATION, "CommandField": 0x8030,
                             "MessageIDBeingRespondedTo": message_id},
                    "other-message": {**store_rsp, "MessageIDBeingRespondedTo": message_id + 1,
                                      "AffectedSOPInstanceUID": sop_instance},
                    "other-instance": {**store_rsp, "MessageIDBeingRespondedTo": message_id,
                                       "AffectedSOPInstanceUID": "1.2.3.4"},
                    "right": {**store_rsp, "MessageIDBeingRespondedTo": message_id,
                              "AffectedSOPInstanceUID": sop_instance},
                    "right-without-instance": {**store_rsp, "MessageIDBeingRespondedTo": message_id},
                }[answer]  # fmt: skip
                response = command_set(**fields, CommandDataSetType=0x0101, Status=0x0000)
                connection.sendall(p_data(pdv(context_id, 0x03, response)))
                if read_pdu(connection)[:1] == b"\x05":  # A-RELEASE-RQ
                    connection.sendall(RELEASE_RP)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield DicomDestination(ae_title="RAWPACS", host="127.0.0.1", port=server.getsockname()[1])
    finally:
        stopping.set()
        thread.join(timeout=5)
        server.close()


@pytest.mark.parametrize("answer", ["echo", "other-message", "other-instance"])
def test_a_response_that_is_not_our_c_store_rsp_is_not_a_delivery(answer: str) -> None:
    with _pacs(answer) as destination, pytest.raises(DispatchError) as caught:
        store_instance(_payload(), destination, calling_ae_title="RADTRACE", timeout_s=5)
    assert caught.value.retryable
    assert "not counted as stored" in caught.value.reason
    assert len(caught.value.reason) < 300


@pytest.mark.parametrize("answer", ["right", "right-without-instance"])
def test_our_c_store_rsp_is_a_delivery_with_or_without_the_instance_uid(answer: str) -> None:
    with _pacs(answer) as destination:
        result = store_instance(_payload(), destination, calling_ae_title="RADTRACE", timeout_s=5)
    assert result == StoreResult(0x0000)
