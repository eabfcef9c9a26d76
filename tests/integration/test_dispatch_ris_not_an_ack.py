"""A RIS (or an interface engine between) that answers the ORU with a message that is not an acknowledgment.

Before: any answer holding an MSA segment with our control ID and ``AA`` counted as delivered, whatever the message
was: an interface engine that routes another channel's ``ADT^A01`` (or our own ORU, looped back) onto the connection,
with an MSA in it, had the draft marked delivered although the RIS never acknowledged it (found with a fake RIS
answering ``ADT^A01`` to ``radtrace serve``). Now the answer's MSH-9 must name an ``ACK`` (HL7 v2.5.1 2.9.2: the
original-mode acknowledgment of an ORU^R01 is ``ACK^R01^ACK``); any other message type is a retryable error that names
it, quoted, so the delivery is tried again and, if the RIS keeps answering so, fails with that reason. An MSH that
names no type at all (a hand-written ACK) is still read by its MSA, as before.
"""

from __future__ import annotations

import re
import socket

import pytest

from private_servers import HostilePeer, hostile_peer, read_mllp_message
from radtrace.errors import DispatchError
from radtrace.reporting.dispatch.mllp import Ack, frame, send_message

pytestmark = pytest.mark.integration

CONTROL_ID = "RT-5c01d2"
MESSAGE = f"MSH|^~\\&|RADTRACE|H|RIS|H|20261206||ORU^R01^ORU_R01|{CONTROL_ID}|P|2.5.1\rOBR|1\r".encode()


def _answer(message_type: str, separator: str = "|") -> bytes:
    s = separator
    return (
        f"MSH{s}^~\\&{s}RIS{s}H{s}RADTRACE{s}H{s}20261206{s}{s}{message_type}{s}A1{s}P{s}2.5.1\r"
        f"MSA{s}AA{s}{CONTROL_ID}\r"
    ).encode()


def _send_answered(answer: bytes) -> Ack | Exception:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        peer.write(connection, frame(answer))

    with hostile_peer(behave, read=read_mllp_message) as peer:
        try:
            return send_message(MESSAGE, peer.host, peer.port, timeout_s=5)
        except DispatchError as exc:
            return exc


@pytest.mark.parametrize(
    "message_type",
    ["ADT^A01^ADT_A01", "ORU^R01^ORU_R01", "ORM^O01", "\x1b[2JINFO forged\u202e"],
    ids=["adt", "our-oru-looped-back", "orm", "hostile-text"],
)
def test_an_answer_that_is_not_an_ack_is_not_a_delivery_and_names_its_type(message_type: str) -> None:
    outcome = _send_answered(_answer(message_type))
    assert isinstance(outcome, DispatchError), outcome
    assert outcome.retryable
    assert "not an ACK" in outcome.reason
    assert re.search(r"the answer from 127\.0\.0\.1:\d+ is a ", outcome.reason), outcome.reason  # the RIS named
    assert repr(message_type.split("^")[0])[1:-1] in outcome.reason  # named, quoted
    assert not any(char in outcome.reason for char in "\x1b\r\n\u202e")


@pytest.mark.parametrize(
    ("message_type", "separator"),
    [("ACK", "|"), ("ACK^R01", "|"), ("ACK^R01^ACK", "|"), ("ack^r01", "|"), ("ACK^R01^ACK", "#"), ("", "|")],
    ids=["ack", "ack-r01", "ack-r01-ack", "lower-case", "other-field-separator", "no-message-type"],
)
def test_every_form_of_an_ack_is_still_a_delivery(message_type: str, separator: str) -> None:
    outcome = _send_answered(_answer(message_type, separator))
    assert isinstance(outcome, Ack), outcome
    assert outcome.code == "AA"
