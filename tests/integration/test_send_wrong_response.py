"""``radtrace send``: a peer that answers a C-STORE with some other DIMSE message has not stored the file.

Before: pynetdicom's ``send_c_store`` returns the first DIMSE message that arrives, whatever it is, and ``radtrace
send`` took its Status: a peer (or a proxy before it) answering with a C-ECHO-RSP of status 0000, or a C-STORE-RSP to
another message or about another instance, had the file reported ``0x0000`` (report-hostile open 6; f89dc82 closed it
for the PACS dispatcher). Now the check the dispatcher makes (:class:`radtrace.dicom_listener.scu.DimseAnswers`) is
``send``'s too: such a file is not sent, with a note saying what came back. Shown with a hand-made upper-layer peer
and a real film of tests/data.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from dicom_peer_support import RELEASE_RP, VERIFICATION, associate_ac, command_set, p_data, pdv, read_pdu
from radtrace.dicom_listener.scu import send_files

pytestmark = pytest.mark.integration

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"


def _store_command(connection: socket.socket) -> tuple[int, bytes]:
    """The context ID and command set of the C-STORE-RQ, its data set read to the last fragment."""
    buffer, command = b"", b""
    while True:
        while len(buffer) < 6 or len(buffer) < 6 + int.from_bytes(buffer[2:6], "big"):
            chunk = connection.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the data set")
            buffer += chunk
        end = 6 + int.from_bytes(buffer[2:6], "big")
        data, buffer = buffer[:end], buffer[end:]
        at = 6
        while at + 6 <= len(data):
            (length,) = struct.unpack_from(">L", data, at)
            context_id, control = data[at + 4], data[at + 5]
            at += 4 + length
            if control & 0x01:
                command += data[at - length + 2 : at]
            elif control & 0x02:
                return context_id, command


@contextmanager
def _peer(answer: str) -> Iterator[int]:
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
                context_id, command = _store_command(connection)
                request = dcmread(DicomBytesIO(command), force=True)
                message_id, instance = int(request.MessageID), str(request.AffectedSOPInstanceUID)
                store_rsp = {"AffectedSOPClassUID": str(request.AffectedSOPClassUID), "CommandField": 0x8001}
                fields = {
                    "echo": {"AffectedSOPClassUID": VERIFICATION, "CommandField": 0x8030,
                             "MessageIDBeingRespondedTo": message_id},
                    "other-message": {**store_rsp, "MessageIDBeingRespondedTo": message_id + 1,
                                      "AffectedSOPInstanceUID": instance},
                    "other-instance": {**store_rsp, "MessageIDBeingRespondedTo": message_id,
                                       "AffectedSOPInstanceUID": "1.2.3.4"},
                    "right": {**store_rsp, "MessageIDBeingRespondedTo": message_id, "AffectedSOPInstanceUID": instance},
                }[answer]  # fmt: skip
                response = command_set(**fields, CommandDataSetType=0x0101, Status=0x0000)
                connection.sendall(p_data(pdv(context_id, 0x03, response)))
                if read_pdu(connection)[:1] == b"\x05":  # A-RELEASE-RQ
                    connection.sendall(RELEASE_RP)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stopping.set()
        thread.join(timeout=5)
        server.close()


@pytest.mark.parametrize("answer", ["echo", "other-message", "other-instance"])
def test_an_answer_that_is_not_the_c_store_rsp_to_the_file_is_not_a_send(answer: str) -> None:
    with _peer(answer) as port:
        [result] = send_files([FILM], "127.0.0.1", port, called_ae="RAWPEER", timeout_s=5)
    assert result.status is None
    assert not result.ok
    assert result.note.startswith("RAWPEER at 127.0.0.1:")
    assert result.note.endswith("not counted as stored")
    assert {"echo": "C-ECHO-RSP", "other-message": "to message 2", "other-instance": "'1.2.3.4'"}[answer] in result.note


def test_the_c_store_rsp_to_the_file_is_a_send() -> None:
    with _peer("right") as port:
        [result] = send_files([FILM], "127.0.0.1", port, called_ae="RAWPEER", timeout_s=5)
    assert result.status == 0x0000
    assert result.ok
