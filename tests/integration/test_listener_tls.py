"""TLS associations (PS3.15 Annex B): server certificate, and optional client-certificate verification."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from certificate_support import listener_pki
from listener_support import listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from serve_support import wait_until

pytestmark = pytest.mark.integration


def test_tls_listener_with_client_certificates(tmp_path: Path, listener_port: int) -> None:
    pki = listener_pki(tmp_path / "pki")
    tls = {
        "enabled": True,
        "certificate": str(pki["server.pem"]),
        "private_key": str(pki["server.key"]),
        "ca_bundle": str(pki["ca.pem"]),
        "require_client_certificate": True,
    }
    config = listener_settings(tmp_path, listener_port, tls=tls, acse_timeout_s=1.0)
    store = Store.from_url(config.store_url)
    upgrade(store)
    with running(config, store), socket.create_connection(("127.0.0.1", listener_port)):
        # A client that connects and says nothing holds up others for the ACSE timeout at most.
        mutual = echoscu(
            listener_port,
            options=["+tls", str(pki["client.key"]), str(pki["client.pem"]), "+cf", str(pki["ca.pem"])],
        )
        anonymous = echoscu(listener_port, options=["+tla", "+cf", str(pki["ca.pem"])])
        plain = echoscu(listener_port, timeout=60)
    store.dispose()
    assert mutual.returncode == 0, mutual.stderr
    assert anonymous.returncode != 0
    assert plain.returncode != 0


def test_tls_handshakes_are_charged_to_the_source_negotiation_budget(tmp_path: Path, listener_port: int) -> None:
    """A handshake costs the listener a private-key operation in its accepting thread, before any DUL exists: it was
    not charged, so handshakes alone (never an A-ASSOCIATE-RQ) escaped the per-source budget."""
    import ssl

    pki = listener_pki(tmp_path / "pki")
    tls = {"enabled": True, "certificate": str(pki["server.pem"]), "private_key": str(pki["server.key"])}
    # A handshake costs milliseconds, which the default rate (0.2 s a second) earns back within a moment: under
    # load the balance was full again before it was read. Earned back a thousand times slower here.
    config = listener_settings(tmp_path, listener_port, tls=tls, negotiation_cpu_rate_s=0.0002)
    store = Store.from_url(config.store_url)
    upgrade(store)
    client = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    held = []
    try:
        with running(config, store) as listener:
            for _ in range(10):  # held open: their DUL threads charge nothing until they end
                raw = socket.create_connection(("127.0.0.1", listener_port), source_address=("127.0.0.2", 0))
                held.append(client.wrap_socket(raw, server_hostname="localhost"))
            budget = listener.admission.negotiation
            # the accepting thread charges once its side of the handshake is done, a moment after the client's
            wait_until(lambda: budget.balance("127.0.0.2") < budget.burst, 10, "the handshakes charged to 127.0.0.2")
            assert budget.balance("127.0.0.3") == budget.burst
    finally:
        for sock in held:
            sock.close()
        store.dispose()
