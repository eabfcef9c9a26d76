"""A TLS session resumed from before a certificate renewal gets the renewed certificate, not the old one.

Before, the listener's server context (the one pynetdicom wraps each accepted socket with) was built once at start
and only the handshake moved to the renewed context (its server-name callback). OpenSSL decides a resumption before
that callback, against the first context's session cache and ticket keys: a PACS resuming a session it began before
the renewal was let in on it, its old certificate (and a client certificate verified against the old CA bundle)
standing until its next full handshake, by TLS 1.2 session ID or ticket and TLS 1.3 ticket alike. Now each accepted
socket is wrapped by the context in use: a renewal is a new context, with its own session cache and ticket keys,
and a session from before it is not resumed (a full handshake, the renewed certificate). Sessions begun after the
renewal still resume. Real TLS associations (pynetdicom, a C-ECHO each) against the real listener; certificates from
:mod:`certificate_support`.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from certificate_support import Authority, renamed_over
from listener_support import listener_settings, running
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration


class _Offering(ssl.SSLContext):
    """A PACS's client context that offers ``session`` (pynetdicom's ``tls_args`` take a context, not a session)."""

    session: ssl.SSLSession | None = None

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return super().wrap_socket(sock, *args, **(kwargs | {"session": self.session}))


def _connect(port: int, context: _Offering, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession, bool, int]:
    """One association (a C-ECHO, released) to the listener offering ``session``: the session it ends with,
    whether it was resumed, and the serial number of the certificate the listener's session stands on."""
    context.session = session
    peer = AE(ae_title="PACS")
    peer.add_requested_context(Verification)
    assoc = peer.associate("127.0.0.1", port, ae_title="RADTRACE", tls_args=(context, "localhost"))
    assert assoc.is_established
    try:
        assert int(assoc.send_c_echo().Status) == 0  # its answer read: TLS 1.3's session tickets with it
        tls = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        assert isinstance(tls, ssl.SSLSocket)
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        assert tls.session is not None
        return tls.session, tls.session_reused, x509.load_der_x509_certificate(der).serial_number
    finally:
        assoc.release()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_session_from_before_a_renewal_is_not_resumed_and_the_next_one_is(
    tmp_path: Path, listener_port: int, version: ssl.TLSVersion
) -> None:
    ca = Authority.root(tmp_path / "ca", "radtrace test CA")
    old, new = ca.issue("old", "localhost", server=True), ca.issue("new", "localhost", server=True)
    live = tmp_path / "live"
    live.mkdir()
    certificate, key = renamed_over(live / "server.pem", old.certificate), renamed_over(live / "server.key", old.key)
    client = _Offering(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile=str(ca.certificate))
    client.maximum_version = version  # a PACS that speaks only this version
    config = listener_settings(
        tmp_path, listener_port, tls={"enabled": True, "certificate": str(certificate), "private_key": str(key)}
    )
    store = Store.from_url(config.store_url)
    upgrade(store)
    try:
        with running(config, store):
            first, resumed, serial = _connect(listener_port, client, None)
            assert (resumed, serial) == (False, old.serial)
            again, resumed, serial = _connect(listener_port, client, first)
            assert (resumed, serial) == (True, old.serial)  # resumption works: what the renewal must not carry over
            renamed_over(certificate, new.certificate)
            renamed_over(key, new.key)
            after, resumed, serial = _connect(listener_port, client, again)
            assert (resumed, serial) == (False, new.serial)  # before: resumed, on the old certificate
            _, resumed, serial = _connect(listener_port, client, after)
            assert (resumed, serial) == (True, new.serial)  # a session of the renewed context resumes
    finally:
        store.dispose()
