"""The MLLP client against a broken or hostile RIS (raw sockets): every send ends within its timeout, reads at most
1 MiB of answer, keeps the error reason short whatever the ACK holds, and never counts a bad answer as delivered."""

from __future__ import annotations

import re
import socket
import struct
import time

import pytest

from private_servers import HostilePeer, drip, hostile_peer, read_mllp_message, stream_forever
from radtrace.errors import DispatchError, PeerUnavailableError
from radtrace.reporting.dispatch.mllp import MAX_ACK_BYTES, frame, message_control_id, send_message

pytestmark = pytest.mark.integration

CONTROL_ID = "RT-7f3a9c"
MESSAGE = f"MSH|^~\\&|RADTRACE|H|RIS|H|20261205||ORU^R01^ORU_R01|{CONTROL_ID}|P|2.5.1\rOBR|1\r".encode()
TIMEOUT_S = 1.0
#: What a send ended by its 1 s deadline, or at once, may take: a third of the 30 s or more the wrong behaviour costs
#: here (the peers hold on for 30 s, the ACK drips for 40 s, the at-once cases' timeout is 30 s). A deadline plus a
#: loaded machine's slack (2 s) was the bound, and the drip lasted 4 s: too close on both sides.
CUT_OFF_S = 10.0
RAW = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")


def _ack(code: str = "AA", control_id: str = CONTROL_ID, rest: str = "") -> bytes:
    return f"MSH|^~\\&|RIS|H|RADTRACE|H|20261205||ACK^R01|A1|P|2.5.1\rMSA|{code}|{control_id}{rest}\r".encode()


def _send(peer: HostilePeer, message: bytes = MESSAGE, timeout_s: float = TIMEOUT_S) -> tuple[object, float]:
    started = time.monotonic()
    try:
        outcome: object = send_message(message, peer.host, peer.port, timeout_s=timeout_s)
    except (DispatchError, PeerUnavailableError) as exc:
        outcome = exc
    return outcome, time.monotonic() - started


def _serve(behave: object) -> object:
    return hostile_peer(behave, read=read_mllp_message)  # type: ignore[arg-type]


def test_an_ack_that_never_ends_is_cut_at_one_mebibyte() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        stream_forever(peer, connection, b"\x0b" + b"x" * 65535, limit=256 * 1024 * 1024)

    with _serve(behave) as peer:
        error, elapsed = _send(peer, timeout_s=30)
        sent = peer.sent
    assert isinstance(error, DispatchError)
    assert error.retryable
    assert f"the ACK from {peer.host}:{peer.port} is larger than 1 MiB" in error.reason  # the RIS named
    assert elapsed < 10
    assert sent < 32 * MAX_ACK_BYTES


def test_an_ack_dripped_one_byte_at_a_time_ends_at_the_timeout() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        drip(peer, connection, frame(_ack()), every_s=0.5)  # each byte within the 1 s read timeout

    with _serve(behave) as peer:
        error, elapsed = _send(peer)
    assert isinstance(error, DispatchError)
    assert "within 1 s" in error.reason
    assert elapsed < CUT_OFF_S


def test_a_ris_that_accepts_and_never_reads_ends_at_the_timeout() -> None:
    """A message bigger than the socket buffers: sending it blocks too, within the same deadline."""
    big = MESSAGE + b"OBX|1|TX|X||" + b"y" * (32 * 1024 * 1024) + b"\r"

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.stop.wait(30)

    with hostile_peer(behave, read=lambda connection: b"") as peer:
        error, elapsed = _send(peer, big)
    assert isinstance(error, DispatchError)
    assert error.retryable
    assert elapsed < CUT_OFF_S


@pytest.mark.parametrize("where", ["control-id", "code"])
def test_a_megabyte_field_in_the_ack_gives_a_short_error_reason(where: str) -> None:
    """The reason goes to the outbox row, the audit event, the console and the worker's log: bounded."""
    huge = "\u202e" + "Z" * (600 * 1024)
    ack = _ack(control_id=huge) if where == "control-id" else _ack(code=huge)

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, frame(ack))

    with _serve(behave) as peer:
        error, _ = _send(peer)
    assert isinstance(error, DispatchError)
    assert error.retryable
    assert len(error.reason) < 400
    assert "\u202e" not in error.reason  # quoted: escaped, not a raw bidi override


def test_a_nak_with_only_an_err_segment_names_the_ris_error() -> None:
    ack = _ack("AE") + b"ERR||PID^1^3|103^Table value not found^HL70357|E\r"

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, frame(ack))

    with _serve(behave) as peer:
        error, _ = _send(peer)
    assert isinstance(error, DispatchError)
    assert error.retryable
    assert "answered AE" in error.reason
    assert "Table value not found" in error.reason


def test_a_valid_ack_followed_by_garbage_is_a_delivery() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, frame(_ack()) + b"\x00\xff garbage \x0b\x1c" * 1000)

    with _serve(behave) as peer:
        ack, _ = _send(peer)
    assert not isinstance(ack, Exception)
    assert getattr(ack, "code", None) == "AA"


def test_a_connection_reset_after_the_message_is_retryable() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST

    with _serve(behave) as peer:
        started = time.monotonic()
        with pytest.raises(PeerUnavailableError) as raised:
            send_message(MESSAGE, peer.host, peer.port, timeout_s=30)
        elapsed = time.monotonic() - started
    assert raised.value.retryable
    assert elapsed < CUT_OFF_S  # not the 30 s timeout waited out


def test_each_retry_sends_the_same_control_id() -> None:
    """At-least-once: a RIS that dropped the first ACK sees the same MSH-10 again and can discard the repeat."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if len(peer.received) > 1:
            peer.write(connection, frame(_ack()))
        else:  # the first ACK is lost: the client times out
            peer.stop.wait(2)

    with _serve(behave) as peer:
        first, _ = _send(peer, timeout_s=0.5)
        second, _ = _send(peer)
        received = list(peer.received)
    assert isinstance(first, DispatchError)
    assert getattr(second, "code", None) == "AA"
    assert [message_control_id(data.strip(b"\x0b\x1c\r")) for data in received] == [CONTROL_ID, CONTROL_ID]


ANSWERS = {
    "garbage": frame(b"\x00\xff\x1b[2J\r\n2026-12-05 INFO forged \xe2\x80\xae not HL7"),
    "no-msa": frame(_ack().split(b"\rMSA")[0] + b"\r"),
    "msa-without-id": frame(_ack().split(b"\rMSA")[0] + b"\rMSA|AA\r"),
    "utf-16": frame(_ack().decode().encode("utf-16")),
    "start-block-then-close": b"\x0b",
}


@pytest.mark.parametrize("answer", ANSWERS, ids=list(ANSWERS))
def test_an_answer_that_is_no_ack_is_retryable_at_once_with_a_short_plain_reason(answer: str) -> None:
    """Nothing delivered, nothing waited for past the answer, and the reason (outbox row, audit, console) holds
    none of the peer's bytes raw."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, ANSWERS[answer])

    with _serve(behave) as peer:
        error, elapsed = _send(peer, timeout_s=30)
    assert isinstance(error, DispatchError | PeerUnavailableError)
    assert error.retryable
    assert elapsed < CUT_OFF_S  # the peer closed: not the 30 s timeout waited out
    assert len(error.reason) < 200
    assert RAW.search(error.reason) is None, error.reason
    if answer == "utf-16":
        assert "UTF-16" in error.reason


def test_a_start_block_and_then_silence_ends_at_the_timeout() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        if peer.write(connection, b"\x0b" + _ack()):  # all but the end block
            peer.stop.wait(30)

    with _serve(behave) as peer:
        error, elapsed = _send(peer)
    assert isinstance(error, DispatchError)
    assert "within 1 s" in error.reason
    assert elapsed < CUT_OFF_S


#: A NAK whose text (MSA-3, echoing what the RIS was sent, or its own message) carries a segment break and a positive
#: MSA of its own; the same in ERR; a NAK frame followed by an AA frame on the same connection.
INJECTED = {
    "cr-in-msa-3": frame(_ack("AE", rest=f"|bad value\rMSA|AA|{CONTROL_ID}")),
    "lf-in-msa-3": frame(_ack("AE", rest=f"|bad value\nMSA|AA|{CONTROL_ID}")),
    "cr-in-err": frame(_ack("AE") + f"ERR||PID^1|103^x\rMSA|AA|{CONTROL_ID}\r".encode()),
    "end-block-in-msa-3": frame(_ack("AE", rest="|x\x1c\r")) + frame(_ack("AA")),
    "nak-frame-then-ack-frame": frame(_ack("AE")) + frame(_ack("AA")),
}


@pytest.mark.parametrize("answer", INJECTED, ids=list(INJECTED))
def test_a_nak_carrying_an_injected_positive_msa_is_not_a_delivery(answer: str) -> None:
    """The first MSA of the first frame is the answer: text after a segment break (or a second frame) cannot turn the
    RIS's NAK into AA, and the reason quotes none of it raw."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, INJECTED[answer])

    with _serve(behave) as peer:
        error, _ = _send(peer)
    assert isinstance(error, DispatchError)
    assert error.retryable
    assert "answered AE" in error.reason
    assert RAW.search(error.reason) is None, error.reason
