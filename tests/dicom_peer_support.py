"""DICOM peers for tests: a pynetdicom Storage SCP that answers C-STORE with statuses chosen by the test,
:class:`RawPeer`, a hand-made upper-layer peer whose PDUs (PS3.8 9.3) can be wrong in any byte, and dcmtk's storescp
(:func:`storescp`), an independent implementation."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import Comprehensive3DSRStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt

from radtrace.testing.services import free_port
from tests_support import dicom_tool


@dataclass
class AnsweringScp:
    """Where the SCP listens; ``statuses`` are answered in order (then success); ``stored`` what succeeded."""

    ae_title: str
    port: int
    statuses: list[int] = field(default_factory=list)
    received: list[Dataset] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    ae: AE | None = None  # pynetdicom's; e.g. ``scp.ae.require_calling_aet`` may be changed while it runs


@contextmanager
def answering_scp(ae_title: str = "FAKEPACS", *, require_calling_aet: Sequence[str] = ()) -> Iterator[AnsweringScp]:
    """Run the SCP on a free local port for the duration of the block (Comprehensive 3D SR only). Given
    ``require_calling_aet``, it rejects any other calling AE as a PACS does (A-ASSOCIATE-RJ 1/1/3)."""
    ae = AE(ae_title=ae_title)
    ae.require_calling_aet = list(require_calling_aet)
    scp = AnsweringScp(ae_title, free_port(), ae=ae)
    ae.add_supported_context(Comprehensive3DSRStorage, ExplicitVRLittleEndian)

    def handle(event: evt.Event) -> int:
        dataset = event.dataset
        scp.received.append(dataset)
        status = scp.statuses.pop(0) if scp.statuses else 0x0000
        if status == 0x0000 or 0xB000 <= status <= 0xBFFF or status in (0x0107, 0x0116):  # success or warning
            scp.stored.append(str(dataset.SOPInstanceUID))
        return status

    server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        yield scp
    finally:
        server.shutdown()


# --- a raw upper-layer peer (PS3.8 9.3): PDUs built byte by byte, so that any of them can be wrong ---------------

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def item(item_type: int, body: bytes) -> bytes:
    """A variable item: type, reserved, 16-bit length, body (PS3.8 9.3.2.x)."""
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def pdu(pdu_type: int, body: bytes, *, length: int | None = None) -> bytes:
    """A PDU: type, reserved, 32-bit length (the body's unless ``length`` lies), body."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def presentation_context(context_id: int, abstract_syntax: str, *transfer_syntaxes: str) -> bytes:
    """A presentation context item of an A-ASSOCIATE-RQ."""
    syntaxes = b"".join(item(0x40, _uid(ts)) for ts in transfer_syntaxes or (IMPLICIT_LE,))
    return item(0x20, bytes((context_id, 0, 0, 0)) + item(0x30, _uid(abstract_syntax)) + syntaxes)


def user_information(max_pdu: int | None = 16384) -> bytes:
    """The user information item: maximum length (omitted when ``None``) and implementation class UID."""
    sub = b"" if max_pdu is None else item(0x51, struct.pack(">L", max_pdu))
    return item(0x50, sub + item(0x52, _uid("1.2.826.0.1.3680043.9.7433.1")))


def associate_rq(
    contexts: Sequence[bytes],
    *,
    calling: bytes = b"PACS",
    called: bytes = b"RADTRACE",
    user_info: bytes | None = None,
    extra: bytes = b"",
) -> bytes:
    """An A-ASSOCIATE-RQ PDU with these presentation context items (``extra`` items go after them)."""
    body = (
        struct.pack(">HH", 1, 0)
        + called.ljust(16)[:16]
        + calling.ljust(16)[:16]
        + bytes(32)
        + item(0x10, _uid(APPLICATION_CONTEXT))
        + b"".join(contexts)
        + extra
        + (user_information() if user_info is None else user_info)
    )
    return pdu(0x01, body)


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    """One presentation data value item: length, context ID, message control header, fragment."""
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def p_data(*pdvs: bytes) -> bytes:
    return pdu(0x04, b"".join(pdvs))


def associate_ac(request: bytes, *, max_pdu: int | None = 16384, user_items: bytes = b"") -> bytes:
    """The A-ASSOCIATE-AC a PACS would answer ``request`` (an A-ASSOCIATE-RQ PDU) with: every presentation context
    accepted in its first transfer syntax, this maximum length, and ``user_items`` after it in the user information
    item (whose 16-bit length they may overflow: the caller's business)."""
    results, at = b"", 6 + 68
    while at + 4 <= len(request):
        item_type, _, length = struct.unpack_from(">BBH", request, at)
        if item_type == 0x20:
            body = request[at + 4 : at + 4 + length]
            syntax, offset = b"", 4
            while offset + 4 <= len(body) and not syntax:
                sub_type, _, sub_length = struct.unpack_from(">BBH", body, offset)
                syntax = body[offset + 4 : offset + 4 + sub_length] if sub_type == 0x40 else b""
                offset += 4 + sub_length
            results += item(0x21, bytes((body[0], 0, 0, 0)) + item(0x40, syntax))
        at += 4 + length
    user = (b"" if max_pdu is None else item(0x51, struct.pack(">L", max_pdu))) + item(
        0x52, _uid("1.2.826.0.1.3680043.9.7433.1")
    )
    user += user_items
    user_item = struct.pack(">BBH", 0x50, 0, len(user) & 0xFFFF) + user
    return pdu(0x02, request[6 : 6 + 68] + item(0x10, _uid(APPLICATION_CONTEXT)) + results + user_item)


RELEASE_RQ: Final = pdu(0x05, bytes(4))
RELEASE_RP: Final = pdu(0x06, bytes(4))
ABORT: Final = pdu(0x07, bytes(4))


def command_set(**elements: Any) -> bytes:
    """A DIMSE command set, Implicit VR Little Endian with its group length (PS3.7 E.1)."""
    command = Dataset()
    for keyword, value in elements.items():
        setattr(command, keyword, value)
    body = _implicit_le(command)
    group = Dataset()
    group.CommandGroupLength = len(body)
    return _implicit_le(group) + body


def _implicit_le(dataset: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def echo_rq(message_id: int = 1) -> bytes:
    return command_set(
        AffectedSOPClassUID=VERIFICATION, CommandField=0x0030, MessageID=message_id, CommandDataSetType=0x0101
    )


def store_rq(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    return command_set(
        AffectedSOPClassUID=sop_class,
        CommandField=0x0001,
        MessageID=message_id,
        Priority=0,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID=sop_instance,
    )


def fragments(context_id: int, data: bytes, size: int, *, command: bool, last: bool = True) -> list[bytes]:
    """``data`` as P-DATA-TF PDUs of one PDV of at most ``size`` bytes each, the final one marked last."""
    chunks = [data[at : at + size] for at in range(0, len(data), size)] or [b""]
    flag = 0x01 if command else 0x00
    return [
        p_data(pdv(context_id, flag | (0x02 if last and n == len(chunks) - 1 else 0), chunk))
        for n, chunk in enumerate(chunks)
    ]


def read_pdu(connection: socket.socket) -> bytes:
    """One whole PDU from ``connection`` (what came before the peer closed, if it closed first)."""
    data = b""
    while len(data) < 6 or len(data) < 6 + int.from_bytes(data[2:6], "big"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def pdu_types(data: bytes) -> list[int]:
    """The types of the whole PDUs in ``data``, in order."""
    types, at = [], 0
    while at + 6 <= len(data):
        pdu_type, _, length = struct.unpack_from(">BBL", data, at)
        types.append(pdu_type)
        at += 6 + length
    return types


def store_statuses(data: bytes) -> list[int]:
    """The Status of each DIMSE response command in the P-DATA-TF PDUs of ``data``."""
    statuses, at = [], 0
    command = b""
    while at + 6 <= len(data):
        pdu_type, _, length = struct.unpack_from(">BBL", data, at)
        body = data[at + 6 : at + 6 + length]
        at += 6 + length
        if pdu_type != 0x04:
            continue
        offset = 0
        while offset + 6 <= len(body):
            (pdv_length,) = struct.unpack_from(">L", body, offset)
            control = body[offset + 5]
            fragment = body[offset + 6 : offset + 4 + pdv_length]
            offset += 4 + pdv_length
            if control & 0x01:
                command += fragment
                if control & 0x02:
                    statuses.append(int(dcmread(DicomBytesIO(command), force=True).Status))
                    command = b""
    return statuses


class RawPeer:
    """A TCP connection to the listener that speaks (or breaks) the upper layer protocol byte by byte."""

    def __init__(self, port: int, source: str = "127.0.0.1", *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.received = b""
        self.closed = False

    def send(self, *pdus: bytes) -> None:
        """Send the bytes; a peer that already closed is not an error here (the invariants judge)."""
        with contextlib.suppress(OSError):
            for data in pdus:
                self.sock.sendall(data)

    def read(self, seconds: float = 0.5, *, until_types: int = 0) -> bytes:
        """What arrives within ``seconds`` (sooner once ``until_types`` whole PDUs are in), kept in :attr:`received`."""
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            if until_types and len(pdu_types(self.received)) >= until_types:
                break
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.received += chunk
        return self.received

    def wait_closed(self, seconds: float) -> bool:
        """Whether the listener closed the connection within ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self.read(deadline - time.monotonic())
        return self.closed

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@contextmanager
def rejecting_peer(result: int, source: int, reason: int) -> Iterator[int]:
    """A port whose peer answers every A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ of these codes (PS3.8 9.3.4), any
    code, the reserved ones too, then waits for the requester to close."""
    with answering_peer(b"\x03\x00" + struct.pack(">L", 4) + bytes([0, result, source, reason])) as port:
        yield port


@contextmanager
def answering_peer(answer: bytes, *, close: bool = False) -> Iterator[int]:
    """A port whose peer answers every A-ASSOCIATE-RQ (or whatever it is sent first) with ``answer``, bytes that need
    not be DICOM (an HTTP server's status line, a few stray bytes, nothing at all), then closes when ``close``, or
    else holds the connection open until the requester closes it, as a server that waits for more does."""
    server = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def answer_each() -> None:
        while not stopping.is_set():
            with contextlib.suppress(OSError):
                connection, _ = server.accept()
                with connection:
                    connection.settimeout(15)
                    connection.recv(65536)
                    connection.sendall(answer)
                    while not close and connection.recv(65536):  # until the requester closes
                        pass

    thread = threading.Thread(target=answer_each, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stopping.set()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=20)


def read_store_request(connection: socket.socket) -> tuple[int, bytes]:
    """Read P-DATA-TF PDUs (however the bytes arrive) up to a C-STORE-RQ's last data set fragment: its presentation
    context ID and command set."""
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


#: The answers :func:`store_answering_peer` gives a C-STORE-RQ: only ``right`` and ``right-without-instance`` are the
#: C-STORE-RSP to it.
STORE_ANSWERS: Final = ("echo", "other-message", "other-instance", "right", "right-without-instance")


def _store_answer(answer: str, request: Dataset) -> bytes:
    """The command set answering ``request`` (a C-STORE-RQ's command set) as ``answer`` says, status 0000."""
    message_id, instance = int(request.MessageID), str(request.AffectedSOPInstanceUID)
    store_rsp = {"AffectedSOPClassUID": str(request.AffectedSOPClassUID), "CommandField": 0x8001}
    fields = {
        "echo": {"AffectedSOPClassUID": VERIFICATION, "CommandField": 0x8030, "MessageIDBeingRespondedTo": message_id},
        "other-message": {**store_rsp, "MessageIDBeingRespondedTo": message_id + 1, "AffectedSOPInstanceUID": instance},
        "other-instance": {**store_rsp, "MessageIDBeingRespondedTo": message_id, "AffectedSOPInstanceUID": "1.2.3.4"},
        "right": {**store_rsp, "MessageIDBeingRespondedTo": message_id, "AffectedSOPInstanceUID": instance},
        "right-without-instance": {**store_rsp, "MessageIDBeingRespondedTo": message_id},
    }[answer]
    return command_set(**fields, CommandDataSetType=0x0101, Status=0x0000)


@contextmanager
def hand_made_peer(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A local port whose accept loop runs ``handle`` on each connection in turn (10 s socket timeout; an OSError of
    its ends that connection, which is closed after); yields the port, stopped at the end."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection, contextlib.suppress(OSError):
                connection.settimeout(10)
                handle(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stopping.set()
        thread.join(timeout=5)
        server.close()


@contextmanager
def store_answering_peer(answer: str) -> Iterator[int]:
    """A port whose hand-made upper-layer peer accepts any association, reads one C-STORE-RQ and answers it as
    ``answer`` (one of :data:`STORE_ANSWERS`) says, whatever pynetdicom would allow: a C-ECHO-RSP, a C-STORE-RSP to
    another message or about another instance, or the right one; then answers an A-RELEASE-RQ."""

    def answer_one_store(connection: socket.socket) -> None:
        connection.sendall(associate_ac(read_pdu(connection)))
        context_id, command = read_store_request(connection)
        response = _store_answer(answer, dcmread(DicomBytesIO(command), force=True))
        connection.sendall(p_data(pdv(context_id, 0x03, response)))
        if read_pdu(connection)[:1] == b"\x05":  # A-RELEASE-RQ
            connection.sendall(RELEASE_RP)

    with hand_made_peer(answer_one_store) as port:
        yield port


@contextmanager
def storescp(*options: str) -> Iterator[int]:
    """dcmtk's storescp with ``options`` on a free local port: the port, once it accepts connections (RuntimeError
    where it exits first or has not within 10 s); killed at the end."""
    port = free_port()
    process = subprocess.Popen(
        [dicom_tool("storescp"), *options, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("storescp did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.kill()
        process.wait(10)
