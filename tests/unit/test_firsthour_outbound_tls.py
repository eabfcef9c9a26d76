"""The outbound TLS settings are judged at start, by the process that uses them, naming the setting and its
variable: the ATNA forwarder's CA bundle and client certificate (``radtrace audit forward``, serve's table) and the
CA store a TLS PACS is checked against (the dispatcher, the worker, serve). One function judges every certificate
(:func:`radtrace.preflight.tls.certificate_files_check`), the listener's too.

Found at review: ``radtrace audit forward`` with a missing ``atna.ca_bundle`` ended in a FileNotFoundError traceback
(exit 1: serve restarted it for ever), a client certificate expired or ending tomorrow started without a word, and an
``SSL_CERT_FILE`` naming a missing file left every TLS PACS delivery failing "certificate verify failed" at night.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certificate_support import certificate_pair as _pair
from radtrace.config import Settings, load_settings
from radtrace.preflight import run_preflight
from radtrace.preflight.tls import atna_tls_check, pacs_tls_check, ris_tls_check, tls_check
from tests_support import radtrace

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 5, 18, 0, tzinfo=UTC)
ATNA = "atna.{0} (RADTRACE_ATNA__{1})"


def _atna(folder: Path, **files: Path) -> Settings:
    return load_settings(data_dir=folder / "var", atna={"enabled": True, "host": "127.0.0.1", **files})


def _judged(folder: Path, **files: Path) -> tuple[str, str, bool]:
    check = atna_tls_check(_atna(folder, **files), now=NOW)
    assert check is not None
    assert check.name == "ATNA TLS"
    return check.status, check.detail, check.config_error


def test_each_atna_tls_mistake_names_the_setting_its_variable_and_what_to_do(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path, "client", NOW - timedelta(days=30), NOW + timedelta(days=300))
    ca, _ = _pair(tmp_path, "ca", NOW - timedelta(days=30), NOW + timedelta(days=3000))
    assert _judged(tmp_path, ca_bundle=ca, certificate=cert, private_key=key) == (
        "ok", f"{cert}, valid until 2027-10-01", False,
    )  # fmt: skip
    assert _judged(tmp_path, ca_bundle=ca) == ("ok", str(ca), False)
    assert atna_tls_check(load_settings(data_dir=tmp_path, atna={"enabled": True, "host": "h", "ca_bundle": ca,
                                                                 "transport": "udp"})) is None  # fmt: skip

    missing = tmp_path / "missing-ca.pem"  # before: FileNotFoundError traceback at the first connection, exit 1
    assert _judged(tmp_path, ca_bundle=missing) == (
        "failed", f"{ATNA.format('ca_bundle', 'CA_BUNDLE')} {missing} does not exist: correct the path, or put the "
        "file there", True,
    )  # fmt: skip
    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"\x30\x82\x01\x00 not a certificate")
    status, detail, config_error = _judged(tmp_path, ca_bundle=not_pem)
    assert (status, config_error) == ("failed", True)
    assert detail.startswith(f"{ATNA.format('ca_bundle', 'CA_BUNDLE')} {not_pem} holds no PEM CA certificate")

    _, other_key = _pair(tmp_path, "other", NOW - timedelta(days=30), NOW + timedelta(days=300))
    assert _judged(tmp_path, certificate=cert, private_key=other_key) == (
        "failed", f"{ATNA.format('private_key', 'PRIVATE_KEY')} {other_key} is not the key of "
        f"{ATNA.format('certificate', 'CERTIFICATE')} {cert}: give the key the certificate was issued for", True,
    )  # fmt: skip

    locked_cert, locked_key = _pair(tmp_path, "locked", NOW - timedelta(days=1), NOW + timedelta(days=300), b"pw")
    status, detail, config_error = _judged(tmp_path, certificate=locked_cert, private_key=locked_key)
    assert (status, config_error) == ("failed", True)
    assert detail.startswith(f"{ATNA.format('private_key', 'PRIVATE_KEY')} {locked_key} is encrypted with a passphrase")

    old_cert, old_key = _pair(tmp_path, "expired", NOW - timedelta(days=400), NOW - timedelta(days=2))
    status, detail, config_error = _judged(tmp_path, certificate=old_cert, private_key=old_key)
    assert (status, config_error) == ("warning", False)  # before: started without a word
    assert detail.startswith(f"{ATNA.format('certificate', 'CERTIFICATE')} {old_cert} expired on 2026-12-03 18:00 UTC "
                             "(this machine's clock says 2026-12-05 18:00 UTC): an audit record repository that asks "
                             "for it refuses the connection")  # fmt: skip

    ending_cert, ending_key = _pair(tmp_path, "ending", NOW - timedelta(days=80), NOW + timedelta(days=13, hours=1))
    assert _judged(tmp_path, certificate=ending_cert, private_key=ending_key) == (
        "warning", f"{ATNA.format('certificate', 'CERTIFICATE')} {ending_cert} expires on 2026-12-18 19:00 UTC, in "
        "13 day(s): renew it before then", False,
    )  # fmt: skip


def test_serve_and_the_dispatcher_judge_the_outbound_tls_the_listener_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-bundle.pem"
    settings = load_settings(
        data_dir=tmp_path / "var",
        dispatch={"pacs": [{"ae_title": "PLAIN", "host": "h", "port": 104},
                           {"ae_title": "SECURE", "host": "h", "port": 2762, "tls": True}]},
        atna={"enabled": True, "host": "127.0.0.1", "ca_bundle": missing},
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(missing))  # before: every delivery "certificate verify failed"
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    def judged(service: str) -> dict[str, tuple[str, str]]:
        checks = run_preflight(settings, service)  # type: ignore[arg-type]
        return {c.name: (c.status, c.detail) for c in checks if c.name in ("PACS TLS", "ATNA TLS")}

    pacs = ("failed", f"dispatch.pacs[1].tls: the PACS certificate is checked against the CA file SSL_CERT_FILE="
            f"{missing}, which does not exist: correct the path, or put the file there; or unset SSL_CERT_FILE for "
            "this machine's CA store")  # fmt: skip
    assert judged("dispatcher") == {"PACS TLS": pacs}
    assert judged("worker") == {"PACS TLS": pacs}  # the default worker takes gpu and dispatch
    assert judged("serve")["ATNA TLS"][0] == "failed"
    assert judged("serve")["PACS TLS"] == pacs
    assert judged("listener") == {}

    empty = tmp_path / "empty.pem"
    empty.write_text("# no certificate here\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))  # a folder without hashed CA files
    check = pacs_tls_check(settings)
    assert check is not None
    assert check.status == "warning"
    assert check.detail.startswith(f"dispatch.pacs[1].tls: this machine's CA store (file {empty}, folder {tmp_path}) "
                                   "holds no CA certificate, so every PACS certificate fails to verify")  # fmt: skip


def test_a_ris_over_tls_without_its_own_ca_bundle_has_this_machines_ca_store_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, ``dispatch.ris.tls`` without ``ca_bundle`` was judged by nothing at start (the PACS's check looked at
    the CA store for TLS PACS only): an SSL_CERT_FILE naming a missing file failed every ORU's handshake."""
    missing = tmp_path / "no-such-bundle.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(missing))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    plain_certificate, plain_key = _pair(tmp_path, "client", NOW - timedelta(days=1), NOW + timedelta(days=90))
    for client in ({}, {"certificate": plain_certificate, "private_key": plain_key}):
        settings = load_settings(data_dir=tmp_path / "var",
                                 dispatch={"ris": {"host": "h", "port": 2575, "tls": True, **client}})  # fmt: skip
        check = ris_tls_check(settings)
        assert check is not None, client
        assert (check.name, check.status, check.detail) == (
            "RIS TLS", "failed", f"dispatch.ris.tls (no dispatch.ris.ca_bundle): the RIS certificate is checked "
            f"against the CA file SSL_CERT_FILE={missing}, which does not exist: correct the path, or put the file "
            "there; or unset SSL_CERT_FILE for this machine's CA store",
        )  # fmt: skip
        assert judged_names(settings, "dispatcher") == {"RIS TLS"}

    monkeypatch.delenv("SSL_CERT_FILE")
    settings = load_settings(data_dir=tmp_path / "var", dispatch={"ris": {"host": "h", "port": 2575, "tls": True}})
    check = ris_tls_check(settings)
    assert check is not None
    assert check.status in ("ok", "warning")  # this machine's store, whatever it holds
    assert check.detail.startswith("dispatch.ris.tls (no dispatch.ris.ca_bundle): ")


def judged_names(settings: object, service: str) -> set[str]:
    return {c.name for c in run_preflight(settings, service) if c.name.endswith("TLS")}  # type: ignore[arg-type]


def test_audit_forward_refuses_a_missing_ca_bundle_in_one_log_line_with_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_ATNA__ENABLED": "true",
           "RADTRACE_ATNA__HOST": "127.0.0.1", "RADTRACE_ATNA__CA_BUNDLE": str(missing)}  # fmt: skip
    assert radtrace("db", "upgrade", env=env, timeout=90).returncode == 0
    result = radtrace("audit", "forward", "--once", env=env, timeout=90)
    assert result.returncode == 2, result.stderr  # before: 1, a FileNotFoundError traceback (serve restarted it)
    assert "Traceback" not in result.stderr
    *logged, last = result.stderr.strip().splitlines()
    assert logged[-1].endswith(f"start-up check 'ATNA TLS' failed: atna.ca_bundle (RADTRACE_ATNA__CA_BUNDLE) {missing} "
                               "does not exist: correct the path, or put the file there")  # fmt: skip
    assert last == "radtrace: atna forwarder not started: start-up checks failed (ATNA TLS); see the log lines above"


def _bundle(folder: Path, name: str, *validity: tuple[timedelta, timedelta]) -> Path:
    """A CA bundle of self-signed certificates, each valid from NOW + start to NOW + end (each radtrace.example)."""
    pems = [
        _pair(folder, f"{name}-{i}", NOW + start, NOW + end)[0].read_bytes() for i, (start, end) in enumerate(validity)
    ]
    (bundle := folder / f"{name}.pem").write_bytes(b"".join(pems))
    return bundle


def test_an_atna_ca_bundle_out_of_date_is_said_with_its_dates_and_refused_only_when_every_ca_expired(
    tmp_path: Path,
) -> None:
    day = timedelta(days=1)
    mixed = _bundle(tmp_path, "mixed", (-900 * day, 900 * day), (-900 * day, -2 * day), (-80 * day, 10 * day),
                    (2 * day, 900 * day))  # fmt: skip
    status, detail, config_error = _judged(tmp_path, ca_bundle=mixed)
    assert (status, config_error) == ("warning", False)  # before: ("ok", str(mixed)): only a client certificate's dates
    assert detail == (
        f"{ATNA.format('ca_bundle', 'CA_BUNDLE')} {mixed}: 3 of its 4 CA certificate(s) out of date or ending soon: "
        "'CN=radtrace.example' expired on 2026-12-03 18:00 UTC; 'CN=radtrace.example' expires on 2026-12-15 18:00 UTC, "
        "in 10 day(s); 'CN=radtrace.example' is not valid before 2026-12-07 18:00 UTC (this machine's clock says "
        "2026-12-05 18:00 UTC); a peer certificate they signed fails to verify then: install their renewed certificates"
    )
    cert, key = _pair(tmp_path, "client", NOW - 30 * day, NOW + 300 * day)  # a good client certificate: still said
    assert _judged(tmp_path, ca_bundle=mixed, certificate=cert, private_key=key) == ("warning", detail, False)

    dead = _bundle(tmp_path, "dead", (-900 * day, -2 * day), (-400 * day, -1 * day))
    status, detail, config_error = _judged(tmp_path, ca_bundle=dead)
    assert (status, config_error) == ("failed", True)  # exit 2: nothing could ever be delivered
    assert detail == (
        f"{ATNA.format('ca_bundle', 'CA_BUNDLE')} {dead}: every CA certificate in it has expired "
        "('CN=radtrace.example' expired on 2026-12-03 18:00 UTC; 'CN=radtrace.example' expired on 2026-12-04 18:00 "
        "UTC; this machine's clock says 2026-12-05 18:00 UTC), so no certificate the peer shows can verify against it "
        "(OpenSSL refuses a chain whose CA has expired): nothing would be delivered; install the CA's renewed "
        "certificate, or correct the clock if wrong (timedatectl)"
    )

    # the listener's bundle (client certificates of PACS) all expired: a warning, its plain port still works
    server_cert, server_key = _pair(tmp_path, "server", NOW - 30 * day, NOW + 300 * day)
    listener = load_settings(data_dir=tmp_path / "var", listener={"tls": {
        "enabled": True, "certificate": server_cert, "private_key": server_key, "ca_bundle": dead}})  # fmt: skip
    check = tls_check(listener, now=NOW)
    assert check is not None
    assert (check.status, check.config_error) == ("warning", False)
    assert check.detail.startswith(f"listener.tls.ca_bundle (RADTRACE_LISTENER__TLS__CA_BUNDLE) {dead}: every CA ")
    assert check.detail.endswith("): every client certificate is refused; install the CA's renewed certificate")


def test_the_ris_tls_files_are_judged_by_whoever_sends_the_oru(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path, "ris-client", NOW - timedelta(days=1), NOW + timedelta(days=300), b"pw")
    ca, _ = _pair(tmp_path, "ris-ca", NOW - timedelta(days=30), NOW + timedelta(days=3000))
    ris = {"host": "ris", "port": 2575, "tls": True, "ca_bundle": ca, "certificate": cert, "private_key": key}
    settings = load_settings(data_dir=tmp_path / "var", dispatch={"ris": ris})

    def judged(service: str) -> list[tuple[str, str, bool]]:
        checks = run_preflight(settings, service)  # type: ignore[arg-type]
        return [(c.status, c.detail, c.config_error) for c in checks if c.name == "RIS TLS"]

    refused = ("failed", f"dispatch.ris.private_key (in RADTRACE_DISPATCH__RIS) {key} is encrypted with a passphrase, "
               "which a service cannot be asked for: give it the key without one (openssl pkey -in KEY -out PLAIN.key; "
               "keep it readable by the service's user only)", True)  # fmt: skip
    assert judged("dispatcher") == [refused]  # before: no check; the first ORU at night found it
    assert judged("worker") == [refused]
    assert judged("serve") == [refused]
    assert judged("listener") == []
    assert ris_tls_check(load_settings(data_dir=tmp_path, dispatch={"ris": {"host": "ris", "port": 2575}})) is None
