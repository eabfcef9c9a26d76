"""Syslog for audit messages: RFC 5424 framing, sent over TLS (RFC 5425) or UDP (RFC 5426).

IHE ATNA (ITI TF-2, Record Audit Event) carries each DICOM audit message as the MSG of one RFC 5424 syslog
message, facility 10 (security/authorization), MSGID ``IHE+RFC-3881``. radtrace adds one structured data
element, ``[radtrace@32473 seq="…" hash="…"]``, naming the audit row, so a repository (or a person) can
recognise a message sent twice. (32473 is the private enterprise number RFC 5612 reserves for documentation;
a site that registers its own can change :data:`SD_ID`.)

Over a stream (TLS, or plain TCP for tests) every message is octet-counted (RFC 5425 section 4.3:
``MSG-LEN SP SYSLOG-MSG``); over UDP each datagram holds one message, no count (RFC 5426 section 3.1).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import re
import select
import socket
import ssl
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from radtrace.errors import PermanentError, RetryableError
from radtrace.tls_renewal import RenewedContext

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SD_ID",
    "StreamTransport",
    "SyslogHeader",
    "SyslogTransport",
    "SyslogUnavailableError",
    "UdpTransport",
    "frame",
    "octet_counted",
    "room_for_message",
]

log = logging.getLogger(__name__)

SD_ID: Final = "radtrace@32473"
MSGID: Final = "IHE+RFC-3881"
FACILITY_AUTH: Final = 10  # security/authorization messages (RFC 5424 table 1), as IHE ATNA asks
SEVERITY_NOTICE: Final = 5
SEVERITY_WARNING: Final = 4
BOM: Final = b"\xef\xbb\xbf"  # RFC 5424 MSG-UTF8 begins with a byte order mark
MAX_UDP_PAYLOAD: Final = 65507
#: The largest SYSLOG-MSG sent (header, structured data and the audit message, in bytes): rsyslog's default
#: maxMessageSize. RFC 5425 section 4.3.1 asks receivers to take 2048 bytes and says they SHOULD take 8192. Over
#: TLS, rsyslog cuts a longer message there and reads the rest of its frame as further messages (no structured
#: data, XML cut anywhere): the repository would hold a broken message and garbage under no seq. The default of
#: ``atna.max_message_bytes``, and its least: every message fits it with its values cut (worst case 7,520 bytes).
MAX_MESSAGE_BYTES: Final = 8096
_PRINTUSASCII: Final = re.compile(r"[^\x21-\x7e]")
_OUTSIDE_VALIDITY: Final = frozenset({9, 10})  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


class SyslogUnavailableError(RetryableError):
    """The repository cannot be reached, refused us, or the connection broke: retried with backoff."""


@dataclass(frozen=True)
class SyslogHeader:
    """The constant part of the RFC 5424 header: HOSTNAME, APP-NAME, PROCID (each PRINTUSASCII, bounded)."""

    hostname: str
    app_name: str = "radtrace"
    procid: str = "-"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hostname", _PRINTUSASCII.sub("_", self.hostname)[:255] or "-")
        object.__setattr__(self, "app_name", _PRINTUSASCII.sub("_", self.app_name)[:48] or "-")
        object.__setattr__(self, "procid", _PRINTUSASCII.sub("_", self.procid)[:128] or "-")


def frame(
    header: SyslogHeader, message: bytes, *, seq: int, row_hash: str, timestamp: datetime, failure: bool
) -> bytes:
    """One RFC 5424 SYSLOG-MSG carrying ``message`` (UTF-8 XML): the row's seq and hash in structured data."""
    severity = SEVERITY_WARNING if failure else SEVERITY_NOTICE
    stamp = timestamp.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    # Both come from the audit row: a row edited in the database may hold any text, which must not close the
    # element and add structured data of its own (RFC 5424 section 6.3.3: escape '"', '\\' and ']').
    structured = f'[{SD_ID} seq="{_param_value(str(seq))}" hash="{_param_value(row_hash)}"]'
    head = f"<{FACILITY_AUTH * 8 + severity}>1 {stamp} {header.hostname} {header.app_name} {header.procid} {MSGID} "
    return f"{head}{structured} ".encode("ascii") + BOM + message


def room_for_message(
    header: SyslogHeader,
    *,
    seq: int,
    row_hash: str,
    timestamp: datetime,
    failure: bool,
    limit: int = MAX_MESSAGE_BYTES,
) -> int:
    """How many bytes the audit message may take in a :func:`frame` that stays within ``limit`` bytes
    (``atna.max_message_bytes``; :data:`MAX_MESSAGE_BYTES`, the default, is the smallest the forwarder takes)."""
    empty = frame(header, b"", seq=seq, row_hash=row_hash, timestamp=timestamp, failure=failure)
    return limit - len(empty)


def _param_value(text: str) -> str:
    """An RFC 5424 PARAM-VALUE: '"', '\\' and ']' escaped, control characters and non-ASCII as \\xNN."""
    # Cut before escaping: a cut escape would leave a backslash that escapes the closing quote.
    escaped = text[:128].replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    return re.sub(r"[^\x20-\x7e]", lambda m: f"\\\\x{ord(m.group()):02x}", escaped)


def octet_counted(syslog_message: bytes) -> bytes:
    """RFC 5425 section 4.3 (and RFC 6587 3.4.1) framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(syslog_message), syslog_message)


class SyslogTransport(Protocol):
    """Where framed messages go. ``send`` returns once the peer's TCP stack has acknowledged every byte."""

    acknowledged: bool  # False for UDP: nothing tells us a datagram arrived

    def connect(self, timeout_s: float | None = None) -> None: ...
    def send(self, messages: Sequence[bytes]) -> None: ...
    def alive(self) -> bool: ...
    def close(self) -> None: ...


def _unacknowledged_bytes(sock: socket.socket) -> int:
    """Bytes written but not yet acknowledged by the peer (Linux SIOCOUTQ); 0 where the ioctl is missing."""
    buffer = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buffer, True)
    except OSError:
        return 0
    return buffer[0]


class StreamTransport:
    """Octet-counted syslog over TLS (RFC 5425) or, with ``context=None``, plain TCP.

    With a :class:`~radtrace.tls_renewal.RenewedContext`, each connection (the first, and every reconnection after a
    failure) uses the TLS files as they are on disk then: an ``atna.certificate``, ``private_key`` or ``ca_bundle``
    renewed is used from the next connection on, without a restart; the connection open goes on with the files it
    began with."""

    acknowledged = True

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | RenewedContext | None,
        *,
        server_name: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.context = host, port, context
        self.server_name = server_name or host
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None

    def connect(self, timeout_s: float | None = None) -> None:
        """Open the connection (and the TLS session) within :attr:`timeout_s`, or ``timeout_s`` if that is shorter,
        in all: one deadline for the TCP connection and the handshake, so a peer that accepts and never answers
        costs that long, not twice. :class:`SyslogUnavailableError` if that fails, saying which step and why."""
        self.close()
        budget = self.timeout_s if timeout_s is None else max(0.001, min(timeout_s, self.timeout_s))
        deadline = time.monotonic() + budget
        where = f"ATNA repository {self.host}:{self.port}"
        try:
            raw = socket.create_connection((self.host, self.port), timeout=budget)
        except TimeoutError as exc:
            raise SyslogUnavailableError(f"{where} did not accept the connection within {budget:.1f} s") from exc
        except ConnectionRefusedError as exc:
            raise SyslogUnavailableError(f"{where} unreachable: connection refused") from exc
        except OSError as exc:
            raise SyslogUnavailableError(f"{where} unreachable: {exc.strerror or exc}") from exc
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(max(0.001, deadline - time.monotonic()))  # what is left of the budget, for the handshake
            context = self.context.get() if isinstance(self.context, RenewedContext) else self.context
            sock = context.wrap_socket(raw, server_hostname=self.server_name) if context else raw
            sock.settimeout(self.timeout_s)
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            why = exc.verify_message or exc.reason
            hint = self._refusal_hint(exc)
            raise SyslogUnavailableError(
                f"{where} certificate refused ({why}): {hint}; nothing is sent until it verifies"
            ) from exc
        except TimeoutError as exc:
            raw.close()
            raise SyslogUnavailableError(f"{where} did not finish the TLS handshake within {budget:.1f} s") from exc
        except OSError as exc:
            raw.close()
            raise SyslogUnavailableError(f"{where} unreachable: {exc}") from exc
        self._sock = sock

    def _refusal_hint(self, exc: ssl.SSLCertVerificationError) -> str:
        """What to check for a repository certificate that did not verify, naming the settings."""
        settings = (
            "atna.ca_bundle (RADTRACE_ATNA__CA_BUNDLE) must hold the CA that signed the repository's current "
            f"certificate, and atna.server_name (RADTRACE_ATNA__SERVER_NAME, now {self.server_name!r}) a name in it"
        )
        if exc.verify_code in _OUTSIDE_VALIDITY:
            outside = "the repository's certificate is outside its validity dates: renew it there (or check this clock)"
            return f"{outside}; {settings}"
        return settings

    def send(self, messages: Sequence[bytes]) -> None:
        """Write the messages octet-counted, then wait until the peer's TCP stack acknowledged all of them."""
        if self._sock is None:
            raise SyslogUnavailableError("not connected")
        sock = self._sock
        try:
            sock.sendall(b"".join(octet_counted(message) for message in messages))
            deadline = time.monotonic() + self.timeout_s
            while _unacknowledged_bytes(sock) > 0:
                if time.monotonic() > deadline or not self.alive():
                    raise SyslogUnavailableError(f"ATNA repository {self.host}:{self.port} stopped acknowledging")
                time.sleep(0.0005)
        except OSError as exc:
            self.close()
            raise SyslogUnavailableError(f"ATNA repository {self.host}:{self.port}: {exc}") from exc

    def alive(self) -> bool:
        """False once the peer closed or reset the connection.

        A syslog receiver sends no application data, but a TLS 1.3 server does send records after the handshake
        (NewSessionTicket, e.g. OpenSSL-based receivers): readable is not closed. Whatever is readable is read
        without blocking; only an orderly close (no bytes) or an error means the connection is gone.
        """
        sock = self._sock
        if sock is None:
            return False
        try:
            readable, _, failed = select.select([sock], [], [sock], 0)
        except (OSError, ValueError):
            return False
        if failed:
            return False
        if not readable:
            return True
        try:
            sock.setblocking(False)
            data = sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return True  # only TLS records without application data (session tickets)
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self.timeout_s)
        return bool(data)

    def close(self) -> None:
        """Close the connection, if open."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


class UdpTransport:
    """One datagram per message (RFC 5426). Nothing acknowledges a datagram: delivery is best effort."""

    acknowledged = False

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._sock: socket.socket | None = None

    def connect(self, timeout_s: float | None = None) -> None:
        """Resolve the peer and open the socket (nothing to wait for: ``timeout_s`` is not needed)."""
        self.close()
        try:
            family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.connect(address)
        except OSError as exc:
            raise SyslogUnavailableError(f"ATNA repository {self.host}:{self.port} unreachable: {exc}") from exc
        self._sock = sock

    def send(self, messages: Sequence[bytes]) -> None:
        """Send each message as one datagram; a message larger than a datagram can carry is refused."""
        if self._sock is None:
            raise SyslogUnavailableError("not connected")
        for message in messages:
            if len(message) > MAX_UDP_PAYLOAD:
                raise PermanentError(f"audit message of {len(message)} bytes does not fit a UDP datagram; use TLS")
            try:
                self._sock.send(message)
            except OSError as exc:
                self.close()
                raise SyslogUnavailableError(f"ATNA repository {self.host}:{self.port}: {exc}") from exc

    def alive(self) -> bool:
        """A UDP socket is alive while open."""
        return self._sock is not None

    def close(self) -> None:
        """Close the socket, if open."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
