"""The MLLP client against an independent receiver (python-hl7's MLLP server and ACK builder)."""

from __future__ import annotations

import time

import pytest

from mllp_support import mllp_receiver
from radtrace.config import ReportingSettings
from radtrace.errors import DispatchError, DispatchRejectedError, PeerUnavailableError
from radtrace.reporting.dispatch.mllp import send_message
from radtrace.reporting.hl7 import build_oru
from radtrace.testing.services import free_port
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

SR_UID = "1.2.826.0.1.3680043.8.498.99"


def _message(name: str = "typical") -> tuple[bytes, str]:
    reading, sources = sr_cases()[name]
    oru = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=SR_UID)
    return oru.encode(), oru.control_id


@pytest.mark.parametrize("code", ["AA", "CA"])
def test_positive_ack_is_delivered_and_the_receiver_has_the_whole_message(code: str) -> None:
    payload, control_id = _message("long-trace")
    with mllp_receiver([code]) as receiver:
        ack = send_message(payload, receiver.host, receiver.port, timeout_s=5)
    assert (ack.code, ack.control_id) == (code, control_id)
    [received] = receiver.received
    assert str(received) == payload.decode("utf-8")
    assert len(received.segments("OBX")) > 250


def test_application_error_is_retryable_and_the_retry_reuses_the_control_id() -> None:
    payload, control_id = _message()
    with mllp_receiver(["AE", "AA"]) as receiver:
        with pytest.raises(DispatchError, match="answered AE") as raised:
            send_message(payload, receiver.host, receiver.port, timeout_s=5)
        assert raised.value.retryable
        ack = send_message(payload, receiver.host, receiver.port, timeout_s=5)
    assert ack.code == "AA"
    assert receiver.control_ids == [control_id, control_id]


@pytest.mark.parametrize("code", ["AR", "CR"])
def test_rejection_is_permanent(code: str) -> None:
    payload, _ = _message()
    with mllp_receiver([code]) as receiver, pytest.raises(DispatchRejectedError, match=f"rejected.*{code}") as raised:
        send_message(payload, receiver.host, receiver.port, timeout_s=5)
    assert not raised.value.retryable


def test_ack_for_another_control_id_is_not_a_delivery() -> None:
    payload, control_id = _message()
    with mllp_receiver(["wrong-id"]) as receiver, pytest.raises(DispatchError, match="SOMETHING-ELSE") as raised:
        send_message(payload, receiver.host, receiver.port, timeout_s=5)
    assert raised.value.retryable
    assert control_id in str(raised.value)


def test_no_ack_in_time_is_a_retryable_timeout() -> None:
    payload, _ = _message()
    with mllp_receiver(["silent"]) as receiver:
        started = time.monotonic()
        with pytest.raises(DispatchError, match=r"no ACK .* within 0.5 s") as raised:
            send_message(payload, receiver.host, receiver.port, timeout_s=0.5)
        # the silent receiver never answers (the wrong behaviour: waiting for ever); 20 timeouts, not 6, for a busy
        # machine
        assert time.monotonic() - started < 10
    assert raised.value.retryable


def test_connection_dropped_without_ack_is_retryable() -> None:
    payload, _ = _message()
    with mllp_receiver(["close"]) as receiver, pytest.raises(PeerUnavailableError):
        send_message(payload, receiver.host, receiver.port, timeout_s=5)


def test_connection_refused_is_retryable() -> None:
    payload, _ = _message()
    with pytest.raises(PeerUnavailableError, match="refused") as raised:
        send_message(payload, "127.0.0.1", free_port(), timeout_s=2)
    assert raised.value.retryable
