"""MLLP client: send one HL7 v2 message and check its ACK (HL7 v2.5.1 Appendix C, MLLP release 1).

Framing is ``0x0B <message> 0x1C 0x0D``. The answer must be an ACK (MSH-9) whose MSA-2 equals the message's
MSH-10; then MSA-1 decides: ``AA``/``CA`` delivered; ``AE``/``CE`` an error on the receiver's side that may pass
(retry); ``AR``/``CR`` rejected for good. No answer within the timeout, a refused or dropped connection, an ACK for
another message, another kind of message, or one that cannot be read are all retryable: the outbox sends the same
bytes again, so the receiver sees the same control ID and can discard the duplicate.

This module is a thin edge: every socket error leaves it as a radtrace error.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Final

from radtrace.config import MllpDestination
from radtrace.errors import DispatchError, DispatchRejectedError, PeerUnavailableError
from radtrace.reporting.dispatch.outcomes import PeerRefusedError, PeerRefusedForNowError
from radtrace.tls_keys import tls_context

__all__ = [
    "END_BLOCK",
    "START_BLOCK",
    "Ack",
    "frame",
    "message_control_id",
    "parse_ack",
    "ris_tls_context",
    "send_message",
]

log = logging.getLogger(__name__)

START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c\x0d"
MAX_ACK_BYTES: Final = 1024 * 1024
_QUOTED_CHARS: Final = 64  # of an ACK's code or control ID in an error reason
_TEXT_CHARS: Final = 200  # of its MSA-3 / ERR text
_ACCEPTED: Final = {"AA", "CA"}
_RETRY: Final = {"AE", "CE"}
_REJECTED: Final = {"AR", "CR"}
_PLAIN_HINT: Final = (
    "dispatch.ris.tls is on, and a RIS that takes plain MLLP on that port never answers TLS: give its TLS port, or "
    "ask the RIS team whether it listens there (nothing was sent)"
)
_OUR_CERTIFICATE: Final = (
    "dispatch.ris.certificate and private_key (in RADTRACE_DISPATCH__RIS) must be a certificate issued by a CA the "
    "RIS trusts, and valid now"
)
_CLIENT_HINT: Final = f"the RIS refused our client certificate, or asked for one and got none: {_OUR_CERTIFICATE}"
#: TLS 1.3 finishes the client's handshake before the RIS judges its certificate; one that refuses it may just close
_CLOSED_OVER_TLS: Final = (
    f"over TLS, a RIS that asks for our client certificate closes so when it refuses it or got none: {_OUR_CERTIFICATE}"
)


@dataclass(frozen=True)
class Ack:
    """What the receiver answered: MSA-1 code, MSA-2 control ID, MSA-3 / ERR text (its first 201 characters: one
    past what an error reason quotes, to show that it was cut)."""

    code: str
    control_id: str
    text: str


def frame(message: bytes) -> bytes:
    """Wrap a message in MLLP start and end blocks."""
    return START_BLOCK + message + END_BLOCK


def _segments(message: str) -> list[list[str]]:
    lines = message.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return [line.split(line[3]) if len(line) > 3 else [line] for line in lines if line.strip()]


def message_control_id(message: bytes) -> str:
    """MSH-10 of an ER7 message (the field separator is MSH's fourth character)."""
    segments = _segments(message.decode("utf-8", errors="replace"))
    if not segments or segments[0][0] != "MSH" or len(segments[0]) < 10:
        raise DispatchRejectedError("outbound HL7 message has no MSH-10 control ID")
    return segments[0][9]  # MSH-1 is the separator itself, so MSH-10 is index 9


def _message_type(msh: list[str]) -> str:
    """MSH-9.1 (the message code) of a split MSH segment; '' when it has none."""
    if len(msh) < 9:
        return ""
    component = msh[1][:1] or "^"  # MSH-2's first character
    return msh[8].split(component)[0].strip()


def parse_ack(data: bytes, where: str = "the RIS") -> Ack:
    """Read MSA (and ERR) from an ACK. Raises :class:`DispatchError` if there is no MSA, or if the answer's MSH
    names a message other than an ``ACK`` (an interface engine routing another channel's message, or ours looped
    back, onto the connection: its MSA acknowledges nothing). ``where``: the RIS (``host:port``), named in the
    reason: a site with several interfaces reads which one answered so from the reason alone."""
    segments = _segments(data.decode("utf-8", errors="replace"))
    msh = next((s for s in segments if s[0] == "MSH"), None)
    if msh is not None and (kind := _message_type(msh)) and kind.upper() != "ACK":  # none said: read the MSA
        raise DispatchError(f"the answer from {where} is a {_quoted(kind)} message, not an ACK (MSH-9)")
    msa = next((s for s in segments if s[0] == "MSA"), None)
    if msa is None or len(msa) < 3:
        # ER7 is text in an encoding whose delimiters are ASCII bytes; NULs are UTF-16 (or no text at all)
        said = " (it holds NUL bytes: UTF-16, or not text)" if b"\x00" in data else ""
        raise DispatchError(f"the ACK from {where} has no MSA segment with a code and control ID{said}")
    text = msa[3] if len(msa) > 3 else ""
    err = next((s for s in segments if s[0] == "ERR"), None)
    if err is not None and not text:
        text = "|".join(err[1:])
    return Ack(code=msa[1].strip().upper(), control_id=msa[2].strip(), text=text[: _TEXT_CHARS + 1])


def _quoted(value: str, limit: int = _QUOTED_CHARS) -> str:
    """A value from the peer for an error reason: at most ``limit`` characters, quoted (repr escapes controls,
    line and paragraph separators and bidi overrides, so it cannot end a line nor turn the text around)."""
    return repr(value[:limit] + ("…" if len(value) > limit else ""))


def _said(ack: Ack) -> str:
    """``: '<the RIS's text>'`` for an error reason, or nothing. The text is the RIS's own (it may echo the
    message, patient data included): the reason shows it to the console and the audit, quoted; logs never carry
    a reason with it (:mod:`radtrace.reporting.dispatch.outbox` logs the row's state only)."""
    return f": {_quoted(ack.text, _TEXT_CHARS)}" if ack.text.strip() else ""


def ris_tls_context(ris: MllpDestination) -> ssl.SSLContext | None:
    """The client context of ``dispatch.ris`` (None: not over TLS). It never asks for a passphrase: a key with one,
    or a file it cannot load, is a :class:`~radtrace.errors.ConfigError` naming the setting."""
    if not ris.tls:
        return None
    return tls_context(ris.ca_bundle, ris.certificate, ris.private_key, setting="dispatch.ris.")


def _tls_why(exc: ssl.SSLError) -> str:
    return str(getattr(exc, "verify_message", None) or exc.reason or exc.strerror or exc)


def _secured(
    raw: socket.socket, context: ssl.SSLContext, server_name: str, where: str, timeout_s: float
) -> ssl.SSLSocket:
    """The TLS session over ``raw`` (its timeout: what is left of the send's deadline), or a retryable error
    that says why and which setting to check."""
    try:
        return context.wrap_socket(raw, server_hostname=server_name)
    except ssl.SSLCertVerificationError as exc:
        raise PeerUnavailableError(
            f"{where}: the RIS's TLS certificate was refused ({_tls_why(exc)}): dispatch.ris.ca_bundle (in "
            "RADTRACE_DISPATCH__RIS; unset: this machine's CA store) must hold the CA that signed it, and "
            f"dispatch.ris.server_name (now {server_name!r}) a name in it; nothing is sent until it verifies"
        ) from exc
    except TimeoutError as exc:
        raise PeerUnavailableError(
            f"{where} did not complete a TLS handshake within {timeout_s:g} s: {_PLAIN_HINT}"
        ) from exc
    except (ssl.SSLError, ConnectionError) as exc:
        why = _tls_why(exc) if isinstance(exc, ssl.SSLError) else (exc.strerror or str(exc))
        hint = _CLIENT_HINT if _about_our_certificate(exc) else _PLAIN_HINT
        raise PeerUnavailableError(f"{where} did not complete a TLS handshake ({why}): {hint}") from exc


def _about_our_certificate(exc: OSError) -> bool:
    """The RIS's TLS alert says it refused our certificate (or that we sent none)."""
    reason = str(getattr(exc, "reason", "") or "")
    return any(word in reason for word in ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE"))


def _read_block(sock: socket.socket, deadline: float, where: str) -> bytes:
    buffer = b""
    while END_BLOCK not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("connection closed before the ACK was complete")
        buffer += chunk
        if len(buffer) > MAX_ACK_BYTES:
            raise DispatchError(f"the ACK from {where} is larger than 1 MiB")
    start = buffer.find(START_BLOCK)
    return buffer[start + 1 if start >= 0 else 0 : buffer.index(END_BLOCK)]


def send_message(
    message: bytes,
    host: str,
    port: int,
    *,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> Ack:
    """Send one message and return its positive ACK; over TLS with ``tls`` (the RIS's certificate checked for
    ``server_name``, default ``host``: the settings ``dispatch.ris.*``, :func:`ris_tls_context`).

    Raises :class:`PeerUnavailableError` (cannot connect, connection dropped, no TLS session: its certificate
    refused, or a RIS that does not speak TLS there), :class:`DispatchError` (no ACK in time, an ACK for another
    control ID, an unreadable ACK), :class:`.outcomes.PeerRefusedForNowError` (AE/CE: retried) or
    :class:`.outcomes.PeerRefusedError` (AR/CR), both a DispatchError / DispatchRejectedError as before.
    """
    control_id = message_control_id(message)
    where = f"{host}:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(max(deadline - time.monotonic(), 0.001))  # one deadline for connect, TLS, send and ACK
            with _secured(raw, tls, server_name or host, where, timeout_s) if tls is not None else raw as sock:
                sock.sendall(frame(message))
                reply = _read_block(sock, deadline, where)
    except TimeoutError as exc:
        raise DispatchError(f"no ACK from {where} within {timeout_s:g} s") from exc
    except ConnectionRefusedError as exc:
        raise PeerUnavailableError(f"MLLP connection to {where} refused") from exc
    except ssl.SSLError as exc:  # after the handshake: e.g. TLS 1.3 tells a refused client certificate only now
        hint = _CLIENT_HINT if _about_our_certificate(exc) else _CLOSED_OVER_TLS
        raise PeerUnavailableError(f"MLLP over TLS to {where} failed ({_tls_why(exc)}): {hint}") from exc
    except OSError as exc:
        closed = f" ({_CLOSED_OVER_TLS})" if tls is not None and isinstance(exc, ConnectionError) else ""
        raise PeerUnavailableError(f"MLLP connection to {where} failed: {exc.strerror or exc}{closed}") from exc
    ack = parse_ack(reply, where)
    if ack.control_id != control_id:
        raise DispatchError(f"ACK from {where} is for control ID {_quoted(ack.control_id)}, not {control_id!r}")
    if ack.code in _ACCEPTED:
        log.info("HL7 message %s accepted by %s (%s)", control_id, where, ack.code)
        return ack
    # AR/CR and AE/CE: the RIS answered, and did not take the message (outcomes.PeerRefusalError)
    if ack.code in _REJECTED:
        raise PeerRefusedError(f"{where} rejected the message ({ack.code}){_said(ack)}", destination=where,
                               code=ack.code, refused="the message")  # fmt: skip
    if ack.code in _RETRY:
        raise PeerRefusedForNowError(f"{where} answered {ack.code}{_said(ack)}", destination=where, code=ack.code,
                                     refused="the message")  # fmt: skip
    raise DispatchError(f"{where} answered an unknown acknowledgment code {_quoted(ack.code)}")
