"""Hostile TLS clients for the listener's TLS port, each failing the handshake (or what follows it) another way.

Used by test_listener_tls_handshake_any_failure: a ClientHello cut at every byte (then a FIN or a reset), a peer that
resets mid-handshake, a ClientHello whose server name is control characters, a client certificate of another CA, none
at all, garbage after a completed handshake, a client asking for a renegotiation (openssl s_client's ``R``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Callable, Iterator
from functools import partial

from radtrace.testing.atna import Pki

__all__ = ["client_hello", "hostile_clients"]

#: SO_LINGER on, 0 s: closing sends a TCP reset.
_RESET = struct.pack("ii", 1, 0)


def client_hello(pki: Pki, server_name: str = "pacs") -> bytes:
    """The bytes of a real ClientHello (TLS 1.2 and 1.3) naming ``server_name``, made with Python's ssl."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


def _raw(port: int, data: bytes, *, reset: bool) -> None:
    """``data`` on a new connection, then a reset or a FIN (and what the listener says, until it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, contextlib.suppress(OSError):
        sock.sendall(data)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            return
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass


def _tls(port: int, pki: Pki, certificate_of: Pki | None, *, after: bytes = b"", reset: bool = False) -> None:
    """A TLS client trusting the listener, with ``certificate_of``'s client certificate (``None``: none); ``after``:
    raw bytes (not TLS records) sent once the handshake is done; ``reset``: a reset right after the handshake."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.check_hostname = False
    if certificate_of is not None:
        context.load_cert_chain(certificate_of.client_cert, certificate_of.client_key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with contextlib.suppress(OSError), context.wrap_socket(raw) as sock:  # the wrapped socket takes raw's descriptor
        if after:
            socket.socket.sendall(sock, after)  # beside TLS, on the same descriptor
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            return
        while sock.recv(4096):
            pass
    raw.close()


def _s_client(port: int, pki: Pki, *options: str, stdin: bytes = b"") -> None:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca)]
    command += ["-cert", str(pki.client_cert), "-key", str(pki.client_key), *options]
    subprocess.run(command, input=stdin, capture_output=True, timeout=30, check=False)


def hostile_clients(port: int, pki: Pki, other: Pki, *, step: int = 1) -> Iterator[tuple[str, Callable[[], None]]]:
    """(name, run it) for each hostile client; ``other``: a PKI the listener does not trust. The ClientHello is cut
    at each of its first 16 bytes (record and handshake headers, version), then every ``step`` bytes, and before its
    last byte."""
    hello = client_hello(pki)
    for cut in sorted({*range(16), *range(16, len(hello), step), len(hello) - 1}):
        yield f"ClientHello cut at byte {cut}, FIN", partial(_raw, port, hello[:cut], reset=False)
        yield f"ClientHello cut at byte {cut}, reset", partial(_raw, port, hello[:cut], reset=True)
    at = hello.index(b"pacs")
    for name in (b"\x00\x01\x1b[", b"\r\n20", b"\xff\xfe\xfd\xfc"):
        yield f"server name {name!r}", partial(_raw, port, hello[:at] + name + hello[at + 4 :], reset=False)
    yield "client certificate of another CA", partial(_tls, port, pki, other)
    yield "no client certificate", partial(_tls, port, pki, None)
    yield "garbage after the handshake", partial(_tls, port, pki, pki, after=b"\n2026-01-01 00:00:00,000 ERROR x\n")
    record = b"\x17\x03\x03\x00\x10" + bytes(16)
    yield "a TLS record of garbage after the handshake", partial(_tls, port, pki, pki, after=record)
    yield "reset right after the handshake", partial(_tls, port, pki, pki, reset=True)
    if shutil.which("openssl") is not None:
        yield "renegotiation (TLS 1.2)", partial(_s_client, port, pki, "-tls1_2", stdin=b"R\n")
        yield "server name of control characters (s_client)", partial(_s_client, port, pki, "-servername", "a\x01b")
