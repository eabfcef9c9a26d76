"""Real certificate files for the start-up TLS checks: a self-signed certificate and its key, valid when asked."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


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
