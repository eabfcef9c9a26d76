"""The listener does not take a renewed certificate that is not valid yet: PACS go on getting the one in use.

Before, a certificate dropped in early (or read by a clock stepped back) was presented from the next association
on, and every PACS that checks it refused the handshake ("certificate is not yet valid") until its start. Now the
pair in use stays, one warning says why, and ``radtrace_tls_certificate_valid_from_seconds{certificate="renewed"}``
says when it will be valid. Real TLS against the real listener; certificates made by ``openssl ca``.
"""

from __future__ import annotations

import socket
import ssl
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certificate_support import Authority, renamed_over
from listener_support import listener_settings, running
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration


def _presented(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate the listener presents to a PACS that checks it."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


def test_a_renewed_certificate_not_valid_yet_is_not_presented_and_the_one_in_use_goes_on(
    tmp_path: Path, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    ca = Authority.root(tmp_path / "ca", "radtrace test CA")
    now = ca.issue("now", "localhost", server=True)
    early = ca.issue("early", "localhost", server=True, start=timedelta(days=1), end=timedelta(days=91))
    live = tmp_path / "live"
    live.mkdir()
    certificate, key = renamed_over(live / "server.pem", now.certificate), renamed_over(live / "server.key", now.key)
    pacs = ssl.create_default_context(cafile=str(ca.certificate))
    config = listener_settings(
        tmp_path, listener_port, tls={"enabled": True, "certificate": str(certificate), "private_key": str(key)}
    )
    store = Store.from_url(config.store_url)
    upgrade(store)
    try:
        with running(config, store), caplog.at_level("WARNING", logger="radtrace.dicom_listener.ae"):
            assert _presented(listener_port, pacs) == now.serial
            renamed_over(certificate, early.certificate)
            renamed_over(key, early.key)
            for _ in range(3):  # before: SSLCertVerificationError, certificate is not yet valid
                assert _presented(listener_port, pacs) == now.serial
    finally:
        store.dispose()
    said = [record.getMessage() for record in caplog.records if "not valid before" in record.getMessage()]
    assert len(said) == 1
    assert said[0].startswith(f"listener.tls files changed on disk but their certificate {certificate} is not valid")
