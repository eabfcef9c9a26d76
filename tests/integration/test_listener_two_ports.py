"""One listener, two ports: DICOM over TLS on ``listener.port`` and without TLS on a second port (modalities that cannot
do TLS), counted together.

Before, a site needing both ran two ``radtrace listen`` processes with two data directories, each with its own
association counts and negotiation budgets: a source got the per-source share on each (report-dedupe.md: with
``max_associations_per_source = 1`` the same host held one association on each port). Here both ports are served by
the same handlers and admission: one share, one ``max_associations``, one budget per source.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE

from listener_support import audit_payloads, listener_settings, running
from radtrace.config import Settings
from radtrace.dicom_listener.ae import Listener
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.errors import ConfigError
from radtrace.store.engine import Store
from radtrace.testing.services import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("echoscu") is None or shutil.which("openssl") is None, reason="needs dcmtk, openssl"
    ),
]


def _server_pki(directory: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for localhost, with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=radtrace test CA",
        "-keyout", str(files["ca.key"]), "-out", str(files["ca.pem"]))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(files["server.key"]), "-out", str(files["server.csr"]))  # fmt: skip
    run("x509", "-req", "-in", str(files["server.csr"]), "-CA", str(files["ca.pem"]), "-CAkey", str(files["ca.key"]),
        "-CAcreateserial", "-days", "2", "-out", str(files["server.pem"]))  # fmt: skip
    return files


def _settings(tmp_path: Path, port: int, **listener: object) -> tuple[Settings, dict[str, Path]]:
    pki = _server_pki(tmp_path / "pki")
    tls = {"enabled": True, "certificate": str(pki["server.pem"]), "private_key": str(pki["server.key"])}
    return listener_settings(tmp_path, port, tls=tls, **listener), pki


def _tls_echo(port: int, pki: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    return echoscu(port, options=["+tla", "+cf", str(pki["ca.pem"])])


def test_one_listener_serves_tls_on_its_port_and_plain_dicom_on_the_other(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings, pki = _settings(tmp_path, listener_port)
    plain_port = free_port()
    with running(settings, store, plain_port=plain_port) as listener:
        assert listener.ports == [listener_port, plain_port]
        tls_on_tls = _tls_echo(listener_port, pki)
        plain_on_plain = echoscu(plain_port)
        plain_on_tls = echoscu(listener_port, timeout=60)
        tls_on_plain = _tls_echo(plain_port, pki)
    assert tls_on_tls.returncode == 0, tls_on_tls.stderr
    assert plain_on_plain.returncode == 0, plain_on_plain.stderr
    assert plain_on_tls.returncode != 0  # the TLS port takes TLS only, as before
    assert tls_on_plain.returncode != 0
    [started] = [json.loads(p) for p in audit_payloads(store, "application_started")]
    assert (started["port"], started["plain_port"]) == (listener_port, plain_port)


def test_a_source_holds_its_share_over_both_ports_not_on_each(tmp_path: Path, store: Store, listener_port: int) -> None:
    settings, pki = _settings(tmp_path, listener_port, max_associations_per_source=1)
    plain_port = free_port()
    client = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    peer = AE(ae_title="PACS")
    peer.add_requested_context("1.2.840.10008.1.1")
    with running(settings, store, plain_port=plain_port):
        held = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE", tls_args=(client, "localhost"))
        assert held.is_established  # the source's one association, over TLS
        try:
            refused = echoscu(plain_port)  # the same source on the plain port: past its share
        finally:
            held.release()
        after = echoscu(plain_port)
    assert refused.returncode != 0
    rejected = audit_payloads(store, "association_rejected")
    assert any("too many concurrent associations from this source" in p for p in rejected), rejected
    assert after.returncode == 0, after.stderr  # its share is free again once the TLS association ended


def test_a_plain_port_needs_tls_on_the_listener_port(tmp_path: Path, store: Store, listener_port: int) -> None:
    plain = listener_settings(tmp_path, listener_port)
    with pytest.raises(ConfigError, match="plain port"):
        Listener(plain, store, plain_port=free_port())
    settings, _ = _settings(tmp_path, listener_port)
    with pytest.raises(ConfigError, match="another port"):
        Listener(settings, store, plain_port=listener_port)
