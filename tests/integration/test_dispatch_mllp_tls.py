"""MLLP over TLS to a real TLS receiver (python-hl7's MLLP server under asyncio's TLS, certificates from
:func:`radtrace.testing.atna.make_pki`), through the production sender bound to the settings ``dispatch.ris.*``.

Before, ``dispatch.ris`` had no TLS setting: the ORU (patient name, findings) left in plain text, and a RIS that
takes MLLP over TLS only (IHE ATNA secure node, mutual authentication) could not be reached at all.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mllp_support import mllp_receiver, ris_tls
from radtrace.config import ReportingSettings, load_settings
from radtrace.errors import ConfigError, PeerUnavailableError
from radtrace.reporting.dispatch.kinds import KIND_HL7
from radtrace.reporting.dispatch.senders import default_senders
from radtrace.reporting.hl7 import build_oru
from radtrace.testing.atna import Pki, make_pki
from radtrace.testing.services import free_port
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

SR_UID = "1.2.826.0.1.3680043.8.498.99"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("ris-pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("other-pki"))  # a CA that signed nothing of this RIS


def _message() -> tuple[bytes, str]:
    reading, sources = sr_cases()["typical"]
    oru = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=SR_UID)
    return oru.encode(), oru.control_id


def _send(tmp_path: Path, port: int, timeout_s: float = 10, **ris: Any) -> str | None:
    """Send the ORU by the production HL7 sender, bound to settings with ``dispatch.ris`` = ``ris``."""
    settings = load_settings(
        data_dir=tmp_path / "var",
        dispatch={"ris": {"host": "127.0.0.1", "port": port, "timeout_s": timeout_s, **ris}},
    )
    payload, _ = _message()
    return default_senders(settings.dispatch)[KIND_HL7](f"127.0.0.1:{port}", payload)


@pytest.fixture
def mutual_ris(pki: Pki) -> Iterator[Any]:
    with mllp_receiver(["AA"], tls=ris_tls(pki, pki)) as receiver:
        yield receiver


def test_mutual_tls_delivers_the_oru_to_a_ris_that_takes_tls_only(tmp_path: Path, pki: Pki, mutual_ris: Any) -> None:
    _, control_id = _message()
    files = {"ca_bundle": pki.ca, "certificate": pki.client_cert, "private_key": pki.client_key}
    assert _send(tmp_path, mutual_ris.port, tls=True, **files) is None  # AA: delivered, no note
    assert mutual_ris.control_ids == [control_id]


def test_a_ris_certificate_of_another_ca_or_name_is_a_retryable_error_naming_the_setting(
    tmp_path: Path, pki: Pki, other_pki: Pki, mutual_ris: Any
) -> None:
    ours = {"certificate": pki.client_cert, "private_key": pki.client_key}
    with pytest.raises(PeerUnavailableError) as wrong_ca:
        _send(tmp_path, mutual_ris.port, tls=True, ca_bundle=other_pki.ca, **ours)
    assert wrong_ca.value.retryable
    where = f"127.0.0.1:{mutual_ris.port}"  # the CA's name is this RIS's CA's: OpenSSL says "signature failure"
    assert wrong_ca.value.reason.startswith(f"{where}: the RIS's TLS certificate was refused (certificate signature")
    assert wrong_ca.value.reason.endswith(
        "): dispatch.ris.ca_bundle (in RADTRACE_DISPATCH__RIS; unset: this machine's CA store) must hold the CA that "
        "signed it, and dispatch.ris.server_name (now '127.0.0.1') a name in it; nothing is sent until it verifies"
    )
    with pytest.raises(PeerUnavailableError, match=r"Hostname mismatch.*server_name \(now 'ris\.example'\)"):
        _send(tmp_path, mutual_ris.port, tls=True, ca_bundle=pki.ca, server_name="ris.example", **ours)
    assert mutual_ris.received == []  # nothing left before the RIS was verified


def test_a_ris_that_asks_for_our_certificate_and_gets_none_names_the_client_settings(
    tmp_path: Path, pki: Pki, mutual_ris: Any
) -> None:
    with pytest.raises(PeerUnavailableError) as refused:
        _send(tmp_path, mutual_ris.port, tls=True, ca_bundle=pki.ca)
    assert refused.value.retryable
    # asyncio's TLS closes without an alert: the client's TLS 1.3 handshake had ended, its ORU is discarded
    assert "asks for our client certificate" in refused.value.reason
    assert "dispatch.ris.certificate and private_key (in RADTRACE_DISPATCH__RIS) must be a certificate issued by a " \
        "CA the RIS trusts" in refused.value.reason  # fmt: skip
    assert mutual_ris.received == []


def test_tls_configured_against_a_plain_text_ris_says_so_and_sends_nothing(tmp_path: Path, pki: Pki) -> None:
    with mllp_receiver(["AA"]) as plain:
        with pytest.raises(PeerUnavailableError) as raised:
            _send(tmp_path, plain.port, timeout_s=1, tls=True, ca_bundle=pki.ca)
        assert plain.received == []  # before: no TLS setting at all, the ORU left in plain text
    assert raised.value.retryable
    assert f"127.0.0.1:{plain.port} did not complete a TLS handshake" in raised.value.reason
    assert "dispatch.ris.tls is on, and a RIS that takes plain MLLP on that port never answers TLS" in (
        raised.value.reason
    )


def test_tls_files_given_with_tls_off_are_refused_at_load(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="ca_bundle set but tls is off: set tls = true, or remove them"):
        load_settings(data_dir=tmp_path, dispatch={"ris": {"host": "h", "port": 2575, "ca_bundle": pki.ca}})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="Debian's openssl package is not installed")
@pytest.mark.parametrize(("version", "alert"), [("-tls1_2", "SSLV3_ALERT_HANDSHAKE_FAILURE"),
                                                ("-tls1_3", "TLSV13_ALERT_CERTIFICATE_REQUIRED")])  # fmt: skip
def test_a_ris_alert_refusing_our_missing_certificate_names_the_client_settings(
    tmp_path: Path, pki: Pki, version: str, alert: str
) -> None:
    """OpenSSL's own server, which (unlike asyncio's) sends its alert: during the handshake in TLS 1.2, after it in
    TLS 1.3."""
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", str(port), "-cert", str(pki.server_cert), "-key", str(pki.server_key),
         "-CAfile", str(pki.ca), "-Verify", "1", version, "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        with pytest.raises(PeerUnavailableError) as refused:
            _send(tmp_path, port, timeout_s=5, tls=True, ca_bundle=pki.ca)
    finally:
        server.kill()
        server.wait(5)
        assert server.stdin is not None  # kept open: s_server reads it while a client is connected
        server.stdin.close()
    assert refused.value.retryable
    assert f"({alert}): the RIS refused our client certificate, or asked for one and got none: dispatch.ris." \
        "certificate and private_key (in RADTRACE_DISPATCH__RIS) must be a certificate issued by a CA the RIS " \
        "trusts, and valid now" in refused.value.reason  # fmt: skip
