"""How a failed TLS handshake on the listener's port is said (radtrace.dicom_listener.handshake_failures): the
peer's address as ``host:port`` (``[host]:port`` for IPv6), and why in words with OpenSSL's reason code."""

from __future__ import annotations

import ssl

import pytest

from radtrace.dicom_listener.handshake_failures import audit_details, describe_failure, peer_address

pytestmark = pytest.mark.unit


def test_a_peer_address_is_host_and_port_with_ipv6_in_brackets() -> None:
    assert peer_address(("192.0.2.7", 50123)) == "192.0.2.7:50123"
    assert peer_address(("2001:db8::7", 50123, 0, 0)) == "[2001:db8::7]:50123"
    assert peer_address("/run/radtrace.sock") == "/run/radtrace.sock"


def test_each_failure_is_said_in_words_with_its_reason_code() -> None:
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    plain.reason = "WRONG_VERSION_NUMBER"
    assert describe_failure(plain, 30).endswith("to the TLS port?) (WRONG_VERSION_NUMBER)")
    unknown = ssl.SSLError(1, "[SSL: SOMETHING_NEW] something new")
    unknown.reason = "SOMETHING_NEW"
    assert describe_failure(unknown, 30) == "SOMETHING_NEW"
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_INTERNAL_ERROR] tlsv1 alert internal error")
    alert.reason = "TLSV1_ALERT_INTERNAL_ERROR"
    assert describe_failure(alert, 30) == "the peer ended the handshake with an alert (TLSV1_ALERT_INTERNAL_ERROR)"
    assert describe_failure(TimeoutError("timed out"), 30) == "no handshake within 30 s (listener.acse_timeout_s)"
    assert describe_failure(ConnectionResetError(104, "Connection reset by peer"), 30) == (
        "the peer reset the connection mid-handshake"
    )
    assert describe_failure(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), 30) == (
        "the peer closed the connection mid-handshake"
    )


def test_pythons_own_reset_error_and_failures_that_are_not_the_peers_are_said_without_a_false_reason_code() -> None:
    """ssl.py raises its own SSLError (no OpenSSL library, its message as 'reason') when the peer sent data and reset
    before the handshake began; the audit said that sentence as if it were OpenSSL's reason code."""
    reset = ssl.SSLError(104, "Closed before TLS handshake with data in recv buffer.")
    reset.reason, reset.library = "Closed before TLS handshake with data in recv buffer.", None
    assert describe_failure(reset, 30) == "the peer reset the connection mid-handshake"
    assert audit_details(reset, 30) == {"detail": "the peer reset the connection mid-handshake"}
    assert describe_failure(MemoryError(), 30) == "the listener failed during the handshake (MemoryError)"
    assert describe_failure(AttributeError("'NoneType' object has no attribute 'do_handshake'"), 30) == (
        "the connection was closed mid-handshake"
    )
    openssl = ssl.SSLError(1, "[SSL: NO_SHARED_CIPHER] no shared cipher")
    openssl.reason, openssl.library = "NO_SHARED_CIPHER", "SSL"
    assert audit_details(openssl, 30)["tls_reason"] == "NO_SHARED_CIPHER"
