"""A failed TLS handshake on the listener's TLS port, said in one log line: the peer, and why in words.

The handshake runs in the connection's own thread (:meth:`~radtrace.dicom_listener.transport.ListenerServer.
process_request_thread`). Before, a failed one was closed without a word: a modality whose CA the listener does not
trust, one that sends no client certificate, or one speaking plain DICOM to the TLS port was refused, and the log
showed nothing of it (nor did the audit log: no association was ever asked for). Each failure now writes one line,
``TLS handshake with <address>:<port> on port <listener port> failed: <why> (<OpenSSL's reason>)``, bounded per source
as the other lines a peer causes are (:class:`~radtrace.dicom_listener.peer_log.PeerLog`: the first per source per
``listener.refusal_audit_interval_s``, the next one logged saying how many were left out). Nothing in the line is the
peer's text: OpenSSL's reason codes and verification messages are its own constants, and the address is the socket's.

Each failure is audited too (:func:`audit_details`): a failed node authentication, which IHE ATNA reports as a DICOM
Security Alert of type Node Authentication (PS3.15 A.5.3.11; DCM 110113, 110126). It is recorded as the listener's
other refusals are (``association_rejected``, reason :data:`HANDSHAKE_FAILED`), aggregated per source: the first of
an interval with why, the others counted into one event at its end, so that a peer failing handshakes in a loop
cannot grow the hash-chained audit log without bound.
"""

from __future__ import annotations

import ssl
from typing import Any, Final

__all__ = ["HANDSHAKE_FAILED", "audit_details", "describe_failure", "peer_address"]

#: The :class:`~radtrace.dicom_listener.peer_log.PeerLog` kind of these lines (one per source, whatever the reason),
#: and the reason of their audit events (one group per source, whatever OpenSSL said).
HANDSHAKE_FAILED: Final = "TLS handshake failed"

_NOT_TLS: Final = "the peer does not speak TLS (plain DICOM, or another protocol, to the TLS port?)"
_NOT_TRUSTED: Final = "the peer does not trust this listener's certificate (listener.tls.certificate's CA)"
_RESET: Final = "the peer reset the connection mid-handshake"
_NOTHING_IN_COMMON: Final = "no TLS version or cipher in common (the listener takes TLS 1.2 and later)"

#: OpenSSL's reason codes, in words (the code itself ends the line: what to search the web for).
_REASONS: Final = {
    "WRONG_VERSION_NUMBER": _NOT_TLS,
    "HTTP_REQUEST": _NOT_TLS,
    "HTTPS_PROXY_REQUEST": _NOT_TLS,
    "UNKNOWN_PROTOCOL": _NOT_TLS,
    "RECORD_LAYER_FAILURE": _NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": _NOT_TLS,
    "TLSV1_ALERT_UNKNOWN_CA": _NOT_TRUSTED,
    "SSLV3_ALERT_BAD_CERTIFICATE": _NOT_TRUSTED,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": _NOT_TRUSTED,
    "TLSV1_ALERT_DECRYPT_ERROR": "the peer could not verify this listener's certificate (signed by another CA?)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer finds this listener's certificate expired (listener.tls.certificate)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "the peer sent no client certificate (listener.tls.require_client_certificate)"
    ),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "the peer sent no client certificate (listener.tls.require_client_certificate)"
    ),
    "NO_SHARED_CIPHER": _NOTHING_IN_COMMON,
    "UNSUPPORTED_PROTOCOL": _NOTHING_IN_COMMON,
    "NO_PROTOCOLS_AVAILABLE": _NOTHING_IN_COMMON,
    "VERSION_TOO_LOW": _NOTHING_IN_COMMON,
    "TLSV1_ALERT_PROTOCOL_VERSION": _NOTHING_IN_COMMON,
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer ended the handshake (no version, cipher or certificate it accepts)",
    "UNEXPECTED_EOF_WHILE_READING": "the peer closed the connection mid-handshake",
}


def describe_failure(exc: BaseException, timeout_s: float | None) -> str:
    """Why a handshake failed, in words, with OpenSSL's reason code where there is one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            "the peer's certificate was not accepted by listener.tls.ca_bundle "
            f"({exc.verify_message or 'certificate verify failed'}) (CERTIFICATE_VERIFY_FAILED)"
        )
    if isinstance(exc, ssl.SSLEOFError):
        return _REASONS["UNEXPECTED_EOF_WHILE_READING"]
    if isinstance(exc, ssl.SSLError) and _not_openssl(exc):
        return _RESET  # Python's own: "Closed before TLS handshake with data in recv buffer."
    if isinstance(exc, ssl.SSLError):
        code = exc.reason or type(exc).__name__
        words = _REASONS.get(code)
        if words is None and code.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")):
            words = "the peer ended the handshake with an alert"
        return f"{words} ({code})" if words is not None else code
    if isinstance(exc, TimeoutError):
        return f"no handshake within {timeout_s or 0:g} s (listener.acse_timeout_s)"
    if isinstance(exc, ConnectionResetError):
        return _RESET
    if isinstance(exc, BrokenPipeError):
        return "the peer closed the connection mid-handshake"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, (ValueError, AttributeError)):  # the socket shut (or closed) by the listener mid-handshake
        return "the connection was closed mid-handshake"
    return f"the listener failed during the handshake ({type(exc).__name__})"


def _not_openssl(exc: ssl.SSLError) -> bool:
    """An :class:`ssl.SSLError` that Python's ssl module made itself (no OpenSSL library, no reason code)."""
    return getattr(exc, "library", None) is None and "TLS handshake" in str(getattr(exc, "reason", "") or "")


def audit_details(exc: BaseException, timeout_s: float | None) -> dict[str, str]:
    """What the audit event of a failed handshake says beyond its reason: ``detail`` (:func:`describe_failure`) and,
    where OpenSSL gave one, ``tls_reason`` (its reason code, one of its constants: never the peer's text)."""
    details = {"detail": describe_failure(exc, timeout_s)}
    code = exc.reason if isinstance(exc, ssl.SSLError) and not _not_openssl(exc) else None
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = "CERTIFICATE_VERIFY_FAILED"
    if isinstance(code, str) and code:
        details["tls_reason"] = code
    return details


def peer_address(address: Any) -> str:
    """``host:port`` of a socket address (``[host]:port`` for IPv6), or the address as it is."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)
