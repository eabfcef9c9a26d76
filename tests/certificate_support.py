"""Real certificate files for the TLS tests: made by the ``openssl`` command line (:class:`Authority`: a root or
intermediate CA and the certificates it issues, with any dates), and a self-signed pair (:func:`certificate_pair`).

``openssl ca`` signs with the dates asked (``-startdate`` / ``-enddate``): a certificate that ended yesterday, or
that starts tomorrow (a renewal dropped in early, a clock stepped back), is the file a hospital would have."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Authority", "Issued", "certificate_pair", "listener_pki", "renamed_over"]

_CONFIG = """[ca]
default_ca = here
[here]
database = {folder}/index.txt
new_certs_dir = {folder}/issued
serial = {folder}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
[ca_ext]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server_ext]
basicConstraints = CA:false
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
authorityKeyIdentifier = keyid:always
[client_ext]
basicConstraints = CA:false
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid:always
"""


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y%m%d%H%M%S}Z"


def _serial(certificate: Path) -> int:
    return x509.load_pem_x509_certificate(certificate.read_bytes()).serial_number


@dataclass(frozen=True)
class Issued:
    """A certificate (PEM), its key (PEM, no passphrase) and serial number; ``chain``: the certificate followed by
    the intermediates up to (not including) the root, as a server's chain file holds them."""

    certificate: Path
    key: Path
    serial: int
    chain: Path


@dataclass(frozen=True)
class Authority:
    """A CA in ``folder`` (its ``ca.pem`` and ``ca.key``, and ``openssl ca``'s database) that issues certificates."""

    folder: Path
    certificate: Path
    key: Path
    #: the intermediates between it and its root, its own certificate first (empty for a root)
    intermediates: tuple[Path, ...] = ()

    @classmethod
    def root(
        cls, folder: Path, name: str, *, start: timedelta = timedelta(days=-1), end: timedelta = timedelta(days=365)
    ) -> Authority:
        """A self-signed root named ``name`` valid from ``now + start`` to ``now + end``."""
        authority = cls._prepared(folder)
        _openssl("req", "-new", "-key", authority.key, "-subj", f"/CN={name}", "-out", folder / "ca.csr")
        authority._sign(folder / "ca.csr", authority.certificate, "ca_ext", start, end, self_signed=True)
        return authority

    def intermediate(
        self, folder: Path, name: str, *, start: timedelta = timedelta(days=-1), end: timedelta = timedelta(days=365)
    ) -> Authority:
        """An intermediate CA named ``name`` signed by this one, valid from ``now + start`` to ``now + end``."""
        prepared = self._prepared(folder)
        _openssl("req", "-new", "-key", prepared.key, "-subj", f"/CN={name}", "-out", folder / "ca.csr")
        self._sign(folder / "ca.csr", prepared.certificate, "ca_ext", start, end)
        return Authority(folder, prepared.certificate, prepared.key, (prepared.certificate, *self.intermediates))

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        server: bool,
        start: timedelta = timedelta(days=-1),
        end: timedelta = timedelta(days=90),
    ) -> Issued:
        """A server (localhost, 127.0.0.1) or client certificate for ``common_name`` and its key, valid from
        ``now + start`` to ``now + end``, as ``<name>.pem`` / ``<name>.key`` (and ``<name>.chain.pem``)."""
        key, csr = self.folder / f"{name}.key", self.folder / f"{name}.csr"
        certificate, chain = self.folder / f"{name}.pem", self.folder / f"{name}.chain.pem"
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        _openssl("req", "-new", "-key", key, "-subj", f"/CN={common_name}", "-out", csr)
        self._sign(csr, certificate, "server_ext" if server else "client_ext", start, end)
        chain.write_bytes(b"".join(path.read_bytes() for path in (certificate, *self.intermediates)))
        return Issued(certificate, key, _serial(certificate), chain)

    @classmethod
    def _prepared(cls, folder: Path) -> Authority:
        (folder / "issued").mkdir(parents=True, exist_ok=True)
        (folder / "index.txt").write_text("")
        (folder / "serial").write_text(f"{int.from_bytes(os.urandom(8), 'big') | 1 << 62:X}\n")
        (folder / "openssl.cnf").write_text(_CONFIG.format(folder=folder))
        authority = cls(folder, folder / "ca.pem", folder / "ca.key")
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", authority.key)
        return authority

    def _sign(
        self, csr: Path, out: Path, extensions: str, start: timedelta, end: timedelta, *, self_signed: bool = False
    ) -> None:
        now = datetime.now(UTC)
        _openssl(
            "ca", "-batch", "-notext", "-config", self.folder / "openssl.cnf", "-keyfile", self.key,
            *(["-selfsign"] if self_signed else ["-cert", self.certificate]), "-extensions", extensions,
            "-startdate", _when(now + start), "-enddate", _when(now + end), "-in", csr, "-out", out,
        )  # fmt: skip


def listener_pki(folder: Path) -> dict[str, Path]:
    """A CA (``ca.pem``) that issued a server certificate for localhost and 127.0.0.1 (``server.pem``,
    ``server.key``: ``listener.tls``'s files) and a client certificate for a PACS (``client.pem``, ``client.key``)."""
    ca = Authority.root(folder, "radtrace test CA")
    server, client = ca.issue("server", "localhost", server=True), ca.issue("client", "PACS", server=False)
    return {
        "ca.pem": ca.certificate, "server.pem": server.certificate, "server.key": server.key,
        "client.pem": client.certificate, "client.key": client.key,
    }  # fmt: skip


def renamed_over(target: Path, source: Path) -> Path:
    """``source`` copied over ``target`` as certbot and Ansible do (written beside it, renamed over it)."""
    staged = target.with_name(f".{target.name}.new")
    shutil.copyfile(source, staged)
    os.replace(staged, target)
    return target


def certificate_pair(
    folder: Path, name: str, start: datetime, end: datetime, passphrase: bytes | None = None
) -> tuple[Path, Path]:
    """A self-signed certificate valid from ``start`` to ``end`` and its key (encrypted with ``passphrase`` if
    given), as ``<name>.pem`` and ``<name>.key`` in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "radtrace.example")])
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )  # fmt: skip
    (folder / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return folder / f"{name}.pem", folder / f"{name}.key"
