"""The listener's TLS files renewed on disk are used from the next association on, without a restart.

Before, the listener loaded ``listener.tls``'s certificate, key and CA bundle once at start: a hospital renewing its
certificates (certbot, a 90-day CA) had to restart radtrace, and until then every PACS that trusted only the new CA
(or whose client certificate the new CA signed) was refused. Now each TLS handshake looks at the files (a status
compared; the content read when it changed) and uses the renewed ones; associations already open go on with the
certificate they began with. Real TLS: pynetdicom and dcmtk peers that send no server name (SNI), certificates from
:func:`radtrace.testing.atna.make_pki`, files renamed over (as certbot and Ansible do) or rewritten in place.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from certificate_support import renamed_over
from listener_support import listener_env, listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.dicom_listener.scu import close_socket
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.atna import Pki
from renewal_support import new_pki_fixture, old_pki_fixture, serial_number  # noqa: F401  (the fixtures: old, new)

pytestmark = pytest.mark.integration

AE_LOG = "radtrace.dicom_listener.ae"


def _client(client: Pki | None, trusted: Pki) -> ssl.SSLContext:
    """A PACS's client context: the CA it trusts (the chain verified; no name checked, so no SNI is sent, as dcmtk's
    echoscu sends none) and its client certificate, if any. (Both test CAs have the same name: OpenSSL would check
    a certificate against the first of them only.)"""
    context = ssl.create_default_context(cafile=str(trusted.ca))
    context.check_hostname = False
    if client is not None:
        context.load_cert_chain(str(client.client_cert), str(client.client_key))
    return context


def _associate(port: int, context: ssl.SSLContext) -> Association:
    peer = AE(ae_title="PACS")
    peer.add_requested_context(Verification)
    return peer.associate("127.0.0.1", port, ae_title="RADTRACE", tls_args=(context, None))


def _presented(assoc: Association) -> int:
    """The serial number of the certificate the listener presented on ``assoc``."""
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _echo(assoc: Association) -> int:
    status = assoc.send_c_echo()
    return int(status.Status) if "Status" in status else -1


@contextmanager
def _listening(tmp_path: Path, port: int, tls: dict[str, object]) -> Iterator[None]:
    config = listener_settings(tmp_path, port, tls={"enabled": True, **tls}, acse_timeout_s=5.0)
    store = Store.from_url(config.store_url)
    upgrade(store)
    try:
        with running(config, store):
            yield
    finally:
        store.dispose()


def test_renewed_files_are_presented_from_the_next_association_and_an_open_one_goes_on(
    tmp_path: Path, listener_port: int, old: Pki, new: Pki
) -> None:
    """Mutual TLS: the server certificate, its key and the CA bundle client certificates are verified against are
    renamed over with a new CA's. The next association gets the new certificate, and a client certificate of the new
    CA is taken (one of the old CA no longer is); the association open before the renewal keeps working."""
    folder = tmp_path / "tls"
    folder.mkdir()
    files = {"certificate": folder / "server.pem", "private_key": folder / "server.key", "ca_bundle": folder / "ca.pem"}
    renewed = {"certificate": new.server_cert, "private_key": new.server_key, "ca_bundle": new.ca}
    for setting, source in (("certificate", old.server_cert), ("private_key", old.server_key), ("ca_bundle", old.ca)):
        shutil.copyfile(source, files[setting])
    tls = {name: str(path) for name, path in files.items()} | {"require_client_certificate": True}
    with _listening(tmp_path, listener_port, tls):
        before = _associate(listener_port, _client(old, old))
        assert before.is_established
        assert _presented(before) == serial_number(old.server_cert)
        assert _echo(before) == 0
        for setting, path in files.items():  # as certbot does: each file renamed over, the one open goes on
            renamed_over(path, renewed[setting])
        after = _associate(listener_port, _client(new, new))
        assert after.is_established  # before: refused, the new CA's client certificate did not verify
        assert _presented(after) == serial_number(new.server_cert)  # before: the old certificate, until a restart
        assert _echo(after) == 0
        assert _echo(before) == 0  # the association open across the renewal goes on, with its certificate
        assert _presented(before) == serial_number(old.server_cert)
        refused = _associate(listener_port, _client(old, new))  # the old CA's client certificate
        close_socket(refused)
        assert not refused.is_established  # the old CA is no longer in listener.tls.ca_bundle
        # a dcmtk peer that trusts only the new CA, with its client certificate of the new CA
        dcmtk = echoscu(
            listener_port,
            options=["+tls", str(new.client_key), str(new.client_cert), "+cf", str(new.ca)],
        )
        for assoc in (after, before):
            assoc.release()
            close_socket(assoc)
    assert dcmtk.returncode == 0, dcmtk.stderr


def test_a_renewal_caught_half_way_keeps_the_pair_loaded_before_with_one_warning(
    tmp_path: Path, listener_port: int, old: Pki, new: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """The certificate rewritten in place, its key not yet (they do not load together): associations still get the
    pair loaded before, said once in the log (the setting and the file, nothing from any association); once the key
    is there too, the new pair is presented."""
    folder = tmp_path / "tls"
    folder.mkdir()
    certificate, key = folder / "server.pem", folder / "server.key"
    shutil.copyfile(old.server_cert, certificate)
    shutil.copyfile(old.server_key, key)
    trusting_old, trusting_new = _client(None, old), _client(None, new)
    with _listening(tmp_path, listener_port, {"certificate": str(certificate), "private_key": str(key)}):
        first = _associate(listener_port, trusting_old)
        assert first.is_established
        certificate.write_bytes(new.server_cert.read_bytes())  # in place: the same file, its key not yet
        caplog.clear()  # the listener's start (INFO, when an earlier test of this process configured logging)
        with caplog.at_level(logging.INFO, logger=AE_LOG):
            half_way = [_associate(listener_port, trusting_old) for _ in range(3)]
        assert all(assoc.is_established for assoc in half_way)  # not refused: the old pair still works
        assert [_presented(assoc) for assoc in half_way] == [serial_number(old.server_cert)] * 3
        assert [_echo(assoc) for assoc in half_way] == [0] * 3
        said = [record for record in caplog.records if record.name == AE_LOG]
        assert [record.levelno for record in said] == [logging.WARNING]  # once, not at each association
        message = said[0].getMessage()
        assert message.startswith(
            "listener.tls files changed on disk but cannot be loaded (listener.tls: cannot load certificate, key or "
            "CA bundle: "
        )
        assert message.endswith("still using the ones loaded before, and trying again at each association")
        assert "PACS" not in message  # nothing of any association
        assert "RADTRACE" not in message
        caplog.clear()
        key.write_bytes(new.server_key.read_bytes())
        with caplog.at_level(logging.INFO, logger=AE_LOG):
            renewed = _associate(listener_port, trusting_new)
        assert renewed.is_established
        assert _presented(renewed) == serial_number(new.server_cert)  # before: the old certificate until a restart
        assert _echo(first) == 0
        assert [r.getMessage() for r in caplog.records if r.name == AE_LOG] == [
            "listener.tls files changed on disk: loaded again"
        ]
        for assoc in (first, *half_way, renewed):
            assoc.release()
            close_socket(assoc)


def _served_serial(port: int, trusted: Pki) -> int | None:
    """The serial of the certificate a TLS handshake with 127.0.0.1:port gets (no SNI), or None if none completes."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            _client(None, trusted).wrap_socket(raw) as sock,
        ):
            der = sock.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der).serial_number if der else None


def test_radtrace_listen_with_two_processes_serves_the_renewed_certificate_from_each(
    tmp_path: Path, listener_port: int, old: Pki, new: Pki
) -> None:
    """The command a hospital runs, its port shared by two processes (listener.processes, SO_REUSEPORT: the kernel
    spreads connections over them): after the files are renamed over, every handshake, whichever process takes it,
    presents the new certificate; nothing restarted, no traceback."""
    folder = tmp_path / "tls"
    folder.mkdir()
    certificate, key = folder / "server.pem", folder / "server.key"
    shutil.copyfile(old.server_cert, certificate)
    shutil.copyfile(old.server_key, key)
    database_url = f"sqlite:///{tmp_path / 'radtrace.db'}"
    migrated = Store.from_url(database_url)
    upgrade(migrated)
    migrated.dispose()
    env = listener_env(tmp_path, listener_port, database_url) | {
        "RADTRACE_LISTENER__PROCESSES": "2",
        "RADTRACE_LISTENER__TLS__ENABLED": "true",
        "RADTRACE_LISTENER__TLS__CERTIFICATE": str(certificate),
        "RADTRACE_LISTENER__TLS__PRIVATE_KEY": str(key),
    }
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    process = subprocess.Popen(
        [sys.executable, "-m", "radtrace", "listen"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _served_serial(listener_port, old) is None:
            assert process.poll() is None, process.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "radtrace listen did not answer TLS within 60 s"
            time.sleep(0.2)
        time.sleep(1.0)  # the second process is listening too
        assert {_served_serial(listener_port, old) for _ in range(12)} == {serial_number(old.server_cert)}
        renamed_over(certificate, new.server_cert)
        renamed_over(key, new.server_key)
        served = [_served_serial(listener_port, new) for _ in range(12)]
        assert set(served) == {serial_number(new.server_cert)}  # before: None (the old certificate, not of the new CA)
    finally:
        process.terminate()
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
    assert "Traceback" not in output, output[-3000:]
