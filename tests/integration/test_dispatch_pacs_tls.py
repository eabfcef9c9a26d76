"""The PACS sender over DICOM TLS (PS3.15 B.1/B.9, BCP 195) against dcmtk's storescp ``+tls`` requiring a client
certificate (``--require-peer-cert``, its default): an independent TLS DICOM peer, certificates made by openssl
(:mod:`certificate_support`).

Before, a TLS PACS was sent to with this machine's CA store and no client certificate, the context built anew for
each association from nothing the operator could set: a hospital PACS that asks for mutual TLS refused every SR, a
PACS certificate of the hospital's CA needed the CA installed system-wide, and a failed handshake was said as
"no association" with nothing of TLS in it. Now ``dispatch.pacs[i]`` has ``ca_bundle``, ``server_name``,
``certificate`` and ``private_key`` (as ``dispatch.ris``), renewed files are used from the next association, a
refused handshake says why and which setting to check (in the delivery's reason and the log, no patient data), and
the certificate's end is served as ``radtrace_tls_certificate_expiry_seconds{setting="dispatch.pacs[0]"}``.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest

from certificate_support import Authority, Issued, renamed_over
from dicom_peer_support import storescp
from radtrace.config import ReportingSettings, load_settings
from radtrace.errors import PeerUnavailableError
from radtrace.reporting.dispatch.kinds import KIND_SR
from radtrace.reporting.dispatch.senders import Sender, default_senders
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.tls_renewal import TlsExpiryCollector
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

AE_TITLE = "TLSPACS"


class _Pki:
    """The hospital's CA (the PACS's server certificate and our client certificate), and another CA's pair."""

    def __init__(self, folder: Path) -> None:
        self.ca = Authority.root(folder / "ca", "hospital CA")
        self.server = self.ca.issue("server", "localhost", server=True)
        self.client = self.ca.issue("client", "RADTRACE", server=False)
        self.renewed_client = self.ca.issue("client2", "RADTRACE", server=False)
        self.other = Authority.root(folder / "other", "another CA")
        self.other_client = self.other.issue("client", "RADTRACE", server=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> _Pki:
    return _Pki(tmp_path_factory.mktemp("pacs-pki"))


@contextmanager
def _storescp(pki: _Pki, out: Path) -> Iterator[int]:
    """storescp over TLS with the hospital CA's server certificate, requiring a client certificate of that CA."""
    out.mkdir(exist_ok=True)
    with storescp("-aet", AE_TITLE, "+tls", str(pki.server.key), str(pki.server.certificate),
                  "+cf", str(pki.ca.certificate), "--require-peer-cert", "-od", str(out)) as port:  # fmt: skip
        yield port


def _files(folder: Path, ca: Path, client: Issued) -> dict[str, Path]:
    """``dispatch.pacs[0]``'s files under ``folder``, copied as an operator installs them."""
    folder.mkdir(exist_ok=True)
    files = {"ca_bundle": folder / "ca.pem", "certificate": folder / "client.pem", "private_key": folder / "client.key"}
    for setting, source in (("ca_bundle", ca), ("certificate", client.certificate), ("private_key", client.key)):
        shutil.copyfile(source, files[setting])
    return files


def _sender(tmp_path: Path, port: int, files: dict[str, Path | str]) -> Sender:
    pacs = {"ae_title": AE_TITLE, "host": "127.0.0.1", "port": port, "tls": True, **files}
    settings = load_settings(data_dir=tmp_path / "var", dispatch={"pacs": [pacs]})
    return default_senders(settings.dispatch)[KIND_SR]


def _sr() -> bytes:
    reading, sources = sr_cases()["normal"]
    return sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))


def _stored(out: Path) -> list[Path]:
    return [path for path in out.iterdir() if path.is_file()]


def test_mutual_tls_with_a_pacs_that_requires_a_client_certificate_stores_the_sr(tmp_path: Path, pki: _Pki) -> None:
    files = _files(tmp_path / "tls", pki.ca.certificate, pki.client)
    with _storescp(pki, tmp_path / "out") as port:
        send = _sender(tmp_path, port, files)
        assert send(f"{AE_TITLE}@127.0.0.1:{port}", _sr()) is None  # before: the settings did not exist
    [stored] = _stored(tmp_path / "out")
    assert pydicom.dcmread(stored).SOPInstanceUID == pydicom.dcmread(io.BytesIO(_sr())).SOPInstanceUID
    [gauge, _, _] = TlsExpiryCollector().collect()
    ends = {sample.labels["setting"]: sample.value for sample in gauge.samples}
    assert 89 * 86_400 < ends["dispatch.pacs[0]"] <= 90 * 86_400  # the client certificate's 90 days, by the setting


def test_a_pacs_certificate_of_a_ca_not_in_the_bundle_is_refused_saying_why_without_patient_data(
    tmp_path: Path, pki: _Pki, caplog: pytest.LogCaptureFixture
) -> None:
    files = _files(tmp_path / "tls", pki.other.certificate, pki.client)  # the bundle holds another CA
    payload = _sr()
    with (
        _storescp(pki, tmp_path / "out") as port,
        caplog.at_level(logging.DEBUG),
        pytest.raises(PeerUnavailableError) as refused,
    ):
        _sender(tmp_path, port, files)(f"{AE_TITLE}@127.0.0.1:{port}", payload)
    reason = refused.value.reason
    assert reason.startswith(f"{AE_TITLE}@127.0.0.1:{port}: the PACS's TLS certificate was refused (")
    assert "(certificate verify failed: self-signed certificate in certificate chain)" in reason
    assert "dispatch.pacs[0].ca_bundle (in RADTRACE_DISPATCH__PACS" in reason
    assert refused.value.retryable
    assert any(reason in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    dataset = pydicom.dcmread(io.BytesIO(payload))
    for identifier in (str(dataset.PatientName), str(dataset.PatientID), str(dataset.StudyInstanceUID)):
        assert identifier not in caplog.text
    assert _stored(tmp_path / "out") == []


@pytest.mark.parametrize(("server_name", "refused"), [("localhost", None), ("pacs.example.org", "Hostname mismatch")])
def test_the_pacs_certificate_is_checked_for_server_name(
    tmp_path: Path, pki: _Pki, server_name: str, refused: str | None
) -> None:
    """``server_name`` (default ``host``) is the name the PACS's certificate must hold, as for the RIS."""
    files: dict[str, Path | str] = {
        **_files(tmp_path / "tls", pki.ca.certificate, pki.client),
        "server_name": server_name,
    }
    with _storescp(pki, tmp_path / "out") as port:
        send = _sender(tmp_path, port, files)
        if refused is None:
            assert send(f"{AE_TITLE}@127.0.0.1:{port}", _sr()) is None
            return
        with pytest.raises(PeerUnavailableError) as failed:
            send(f"{AE_TITLE}@127.0.0.1:{port}", _sr())
    assert f"(certificate verify failed: {refused}" in failed.value.reason
    assert f"dispatch.pacs[0].server_name (now {server_name!r}) a name in it" in failed.value.reason


@pytest.mark.parametrize(("client", "alert"), [("other CA's", "TLSV1_ALERT_UNKNOWN_CA"),
                                               ("none", "TLSV13_ALERT_CERTIFICATE_REQUIRED")])  # fmt: skip
def test_our_client_certificate_refused_or_missing_is_said_naming_the_setting(
    tmp_path: Path, pki: _Pki, client: str, alert: str
) -> None:
    """TLS 1.3: the PACS judges our certificate after our handshake ended; its alert comes with the first read."""
    files = _files(tmp_path / "tls", pki.ca.certificate, pki.other_client)
    if client == "none":
        files = {"ca_bundle": files["ca_bundle"]}
    with _storescp(pki, tmp_path / "out") as port, pytest.raises(PeerUnavailableError) as refused:
        _sender(tmp_path, port, files)(f"{AE_TITLE}@127.0.0.1:{port}", _sr())
    assert refused.value.reason == (
        f"{AE_TITLE}@127.0.0.1:{port} refused our TLS client certificate, or asked for one and got none ({alert}): "
        "dispatch.pacs[0].certificate and private_key (in RADTRACE_DISPATCH__PACS) must be a certificate issued by a "
        "CA the PACS trusts, and valid now; nothing was sent"
    )
    assert _stored(tmp_path / "out") == []


def test_a_renewed_client_certificate_is_used_from_the_next_association_without_a_restart(
    tmp_path: Path, pki: _Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """The client certificate of another CA is refused; the one of the PACS's CA renamed over it (certbot, Ansible)
    is sent at the next association by the same sender, as the running dispatcher would."""
    files = _files(tmp_path / "tls", pki.ca.certificate, pki.other_client)
    with _storescp(pki, tmp_path / "out") as port:
        send = _sender(tmp_path, port, files)
        with pytest.raises(PeerUnavailableError):
            send(f"{AE_TITLE}@127.0.0.1:{port}", _sr())
        renamed_over(files["certificate"], pki.renewed_client.certificate)
        renamed_over(files["private_key"], pki.renewed_client.key)
        with caplog.at_level(logging.INFO):
            assert send(f"{AE_TITLE}@127.0.0.1:{port}", _sr()) is None  # before: the settings did not exist
    assert "dispatch.pacs[0] files changed on disk: loaded again" in caplog.messages
    assert len(_stored(tmp_path / "out")) == 1


def test_without_ca_bundle_a_ca_added_to_the_machine_store_counts_from_the_next_association(
    tmp_path: Path, pki: _Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``ca_bundle``: the PACS is verified against this machine's CA file (``SSL_CERT_FILE`` here), as before,
    when it was read at each association: the hospital's CA added to it (update-ca-certificates) counts from the
    next one, though the context is now kept between associations."""
    store = tmp_path / "store.pem"
    shutil.copyfile(pki.other.certificate, store)
    monkeypatch.setenv("SSL_CERT_FILE", str(store))
    files = _files(tmp_path / "tls", pki.ca.certificate, pki.client)
    with _storescp(pki, tmp_path / "out") as port:
        send = _sender(tmp_path, port, {"certificate": files["certificate"], "private_key": files["private_key"]})
        with pytest.raises(PeerUnavailableError, match="the PACS's TLS certificate was refused"):
            send(f"{AE_TITLE}@127.0.0.1:{port}", _sr())
        added = tmp_path / "added.pem"
        added.write_bytes(pki.other.certificate.read_bytes() + pki.ca.certificate.read_bytes())
        renamed_over(store, added)
        assert send(f"{AE_TITLE}@127.0.0.1:{port}", _sr()) is None
    assert len(_stored(tmp_path / "out")) == 1
