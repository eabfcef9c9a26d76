"""The ATNA forwarder's TLS files renewed on disk are used from its next connection on, without a restart.

Before, ``atna.ca_bundle``, ``certificate`` and ``private_key`` were loaded once when the forwarder started: after a
renewal (the repository's certificate from a new CA, radtrace's client certificate of it) every reconnection was
refused until someone restarted ``radtrace audit forward`` (or serve), and the audit trail waited. Now each connection
(the first, and each one after a failure) uses the files as they are then; the connection open goes on. Real TLS: a
receiver that asks for a client certificate and records the serial of the one each connection presented.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from radtrace.audit.atna.forwarder import transport_for
from radtrace.config import AtnaSettings
from radtrace.testing.atna import Pki, free_port
from renewal_support import new_pki_fixture, old_pki_fixture, serial_number  # noqa: F401  (the fixtures: old, new)

pytestmark = pytest.mark.integration

FORWARDER = "radtrace.audit.atna.forwarder"


def _server_context(pki: Pki, client_ca: Pki) -> ssl.SSLContext:
    """The repository's: ``pki``'s server certificate, client certificates of ``client_ca`` taken. (One CA: both
    test CAs have the same name, and OpenSSL would check a certificate against the first of them only.)"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.load_verify_locations(str(client_ca.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class Repository:
    """A TLS syslog receiver: for each connection, the serial of the client certificate and the bytes received."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context  # the one the next connection is accepted with (the repository's renewal: replaced)
        self.server = socket.create_server(("127.0.0.1", free_port()))
        self.port = int(self.server.getsockname()[1])
        self.connections: list[tuple[int, bytearray]] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw, self.context), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket, context: ssl.SSLContext) -> None:
        with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True) as sock:
            der = sock.getpeercert(binary_form=True)
            received = bytearray()
            self.connections.append((x509.load_der_x509_certificate(der).serial_number if der else -1, received))
            while data := sock.recv(65536):
                received += data
        raw.close()

    def close(self) -> None:
        self.server.close()
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def _repository(context: ssl.SSLContext) -> Iterator[Repository]:
    repository = Repository(context)
    try:
        yield repository
    finally:
        repository.close()


def _files(folder: Path, pki: Pki) -> dict[str, Path]:
    folder.mkdir()
    files = {"ca_bundle": folder / "ca.pem", "certificate": folder / "client.pem", "private_key": folder / "client.key"}
    for setting, source in (("ca_bundle", pki.ca), ("certificate", pki.client_cert), ("private_key", pki.client_key)):
        shutil.copyfile(source, files[setting])
    return files


def _settings(port: int, files: dict[str, Path]) -> AtnaSettings:
    return AtnaSettings(
        enabled=True, transport="tls", host="127.0.0.1", port=port, server_name="localhost", **files
    )  # fmt: skip


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_renewed_files_are_used_from_the_next_connection_and_the_open_one_goes_on(
    tmp_path: Path, old: Pki, new: Pki
) -> None:
    """The repository renews too (its certificate of the new CA, client certificates of the new CA taken): radtrace's
    CA bundle, certificate and key renamed over on disk are used by the reconnection, not by the open connection."""
    files = _files(tmp_path / "tls", old)
    with _repository(_server_context(old, old)) as repository:
        transport = transport_for(_settings(repository.port, files))
        transport.connect()
        transport.send([b"<85>1 one"])
        renewed = {"ca_bundle": new.ca, "certificate": new.client_cert, "private_key": new.client_key}
        for setting, source in renewed.items():  # renamed over, as certbot and Ansible do
            staged = files[setting].with_name(f".{files[setting].name}.new")
            shutil.copyfile(source, staged)
            os.replace(staged, files[setting])
        transport.send([b"<85>1 two"])  # the connection open across the renewal goes on
        repository.context = _server_context(new, new)  # the repository's renewal: its certificate, its clients'
        transport.close()
        transport.connect()  # before: refused, the repository's new CA not in the bundle loaded at start
        transport.send([b"<85>1 three"])
        _wait_for(lambda: len(repository.connections) == 2 and repository.connections[1][1].endswith(b"three"))
        transport.close()
    assert [serial for serial, _ in repository.connections] == [
        serial_number(old.client_cert),
        serial_number(new.client_cert),
    ]
    assert bytes(repository.connections[0][1]) == b"9 <85>1 one9 <85>1 two"


def test_a_renewal_caught_half_way_keeps_the_pair_loaded_before_with_one_warning(
    tmp_path: Path, old: Pki, new: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """The client certificate rewritten in place, its key not yet: reconnections still present the pair loaded
    before, said once in the log; once the key is there too, the new pair is presented."""
    files = _files(tmp_path / "tls", old)
    with _repository(_server_context(old, old)) as repository:
        transport = transport_for(_settings(repository.port, files))
        transport.connect()
        files["certificate"].write_bytes(new.client_cert.read_bytes())  # in place: the same file, its key not yet
        with caplog.at_level(logging.INFO, logger=FORWARDER):
            for _ in range(3):
                transport.close()
                transport.connect()  # not refused: the pair loaded before still works
                transport.send([b"<85>1 x"])
        said = [record for record in caplog.records if record.name == FORWARDER]
        assert [record.levelno for record in said] == [logging.WARNING]  # once, not at each connection
        message = said[0].getMessage()
        assert message.startswith("atna files changed on disk but cannot be loaded (cannot load atna.certificate ")
        assert message.endswith("still using the ones loaded before, and trying again at each connection")
        caplog.clear()
        files["private_key"].write_bytes(new.client_key.read_bytes())
        repository.context = _server_context(old, new)  # takes client certificates of the new CA only
        with caplog.at_level(logging.INFO, logger=FORWARDER):
            transport.close()
            transport.connect()
            transport.send([b"<85>1 y"])
        _wait_for(lambda: len(repository.connections) == 5 and repository.connections[4][1].endswith(b"y"))
        transport.close()
    assert [r.getMessage() for r in caplog.records if r.name == FORWARDER] == [
        "atna files changed on disk: loaded again"
    ]
    old_serial, new_serial = serial_number(old.client_cert), serial_number(new.client_cert)
    assert [serial for serial, _ in repository.connections] == [old_serial] * 4 + [new_serial]
