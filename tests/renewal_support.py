"""What the tests of TLS files renewed on disk share: the PKI installed first and the renewal's, and the serial
number of a certificate file.

A module imports the fixtures (``from renewal_support import new_pki_fixture, old_pki_fixture  # noqa: F401``):
pytest knows them as ``old`` and ``new``, each made once per module by :func:`radtrace.testing.atna.make_pki`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from radtrace.testing.atna import Pki, make_pki


@pytest.fixture(name="old", scope="module")
def old_pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The PKI installed first: a CA, its server and client certificates."""
    return make_pki(tmp_path_factory.mktemp("old-pki"))


@pytest.fixture(name="new", scope="module")
def new_pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The renewal: another CA, server and client certificate."""
    return make_pki(tmp_path_factory.mktemp("new-pki"))


def serial_number(certificate: Path) -> int:
    """The serial number of the PEM certificate at ``certificate``."""
    return x509.load_pem_x509_certificate(certificate.read_bytes()).serial_number
