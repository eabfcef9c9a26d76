"""The dates of every certificate a TLS setting's files hold, while the service runs (radtrace.tls_renewal).

Before: a renewed certificate that was not valid yet (dropped in early, or this machine's clock stepped back) was
taken at once, and every peer that checks it refused the connection (the dates were read only at start); only the
first certificate of a chain file was read for its end, so an intermediate that had ended (every peer's handshake
fails the same) left the gauge green; and a public CA bundle as ``ca_bundle`` (Debian's, with roots that ended
years ago) served a negative CA gauge, firing RadtraceTlsCaExpiring for roots that verify nothing. Certificates made
by ``openssl ca`` (:mod:`certificate_support`); Debian's own bundle.
"""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from certificate_support import Authority, renamed_over
from radtrace import tls_renewal
from radtrace.preflight.tls import certificate_files_check
from radtrace.tls_keys import tls_context
from radtrace.tls_renewal import CHECK_EVERY_S, RenewedContext, watch_tls_expiry

pytestmark = pytest.mark.unit

DAY = 86_400.0
LOGGER = "test.tls_chain_dates"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _renewed(certificate: Path, key: Path, ca_bundle: Path) -> RenewedContext:
    """The RIS sender's context over the files, as senders.default_senders makes it."""
    return RenewedContext(
        lambda: tls_context(ca_bundle, certificate, key, setting="dispatch.ris."), (ca_bundle, certificate, key),
        "dispatch.ris", logger=logging.getLogger(LOGGER), certificate=certificate, ca_bundle=ca_bundle,
    )  # fmt: skip


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    watch_tls_expiry(registry)
    return registry


def test_a_renewal_not_valid_yet_is_not_taken_said_once_served_and_taken_once_valid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = Authority.root(tmp_path / "ca", "radtrace dates CA")
    now, early = (
        ca.issue("now", "radtrace-client", server=False),
        ca.issue("early", "radtrace-client", server=False, start=timedelta(days=2), end=timedelta(days=92)),
    )
    live = tmp_path / "live"
    live.mkdir()
    certificate, key = renamed_over(live / "client.pem", now.certificate), renamed_over(live / "client.key", now.key)
    renewed = _renewed(certificate, key, ca.certificate)
    registry = _registry()
    before = renewed.get()
    renamed_over(certificate, early.certificate)
    renamed_over(key, early.key)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        kept = [renewed.get() for _ in range(5)]
    assert all(context is before for context in kept)  # before: the renewed pair, refused by every peer for 2 days
    [said] = caplog.records
    assert said.levelno == logging.WARNING
    assert said.getMessage().startswith(f"dispatch.ris files changed on disk but their certificate {certificate} is")
    assert "not valid before" in said.getMessage()
    assert "still using the ones loaded before" in said.getMessage()
    waiting = registry.get_sample_value(
        "radtrace_tls_certificate_valid_from_seconds", {"setting": "dispatch.ris", "certificate": "renewed"}
    )
    assert waiting == pytest.approx(2 * DAY, abs=120)  # before: no such series
    # three days on: the renewed pair is valid, and taken at the next look at the files' content
    wall, monotonic = tls_renewal._wall_ns(), tls_renewal._monotonic()
    monkeypatch.setattr(tls_renewal, "_wall_ns", lambda: wall + int(3 * DAY * 1e9))
    monkeypatch.setattr(tls_renewal, "_monotonic", lambda: monotonic + CHECK_EVERY_S + 1)
    assert renewed.get() is not before
    assert registry.get_sample_value(
        "radtrace_tls_certificate_valid_from_seconds", {"setting": "dispatch.ris", "certificate": "in_use"}
    ) == pytest.approx(-DAY, abs=120)  # valid since a day (by the clock moved on)
    assert renewed.starts().keys() == {"in_use"}


def test_an_intermediate_of_the_chain_file_that_ended_is_served_and_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Our certificate ends in 90 days, the intermediate it was issued by (sent in the same file) ended yesterday:
    every peer refuses the chain, as if ours had ended."""
    root = Authority.root(tmp_path / "root", "radtrace dates root")
    intermediate = root.intermediate(tmp_path / "issuing", "radtrace issuing CA", start=timedelta(days=-300),
                                     end=timedelta(days=-1))  # fmt: skip
    ours = intermediate.issue("client", "radtrace-client", server=False, start=timedelta(days=-2))
    renewed = _renewed(ours.chain, ours.key, root.certificate)
    registry = _registry()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(5):
            renewed.get()
        left = registry.get_sample_value("radtrace_tls_certificate_expiry_seconds", {"setting": "dispatch.ris"})
    assert left == pytest.approx(-DAY, abs=120)  # before: 90 days, the first certificate of the file only
    [said] = caplog.records
    assert said.levelno == logging.ERROR
    assert said.getMessage().startswith(
        f"dispatch.ris certificate {ours.chain}: its intermediate 'CN=radtrace issuing CA' expired on "
    )


@pytest.mark.skipif(not SYSTEM_BUNDLE.exists(), reason="no Debian CA bundle (ca-certificates) here")
def test_debian_s_ca_bundle_serves_its_first_root_to_end_not_one_that_ended_years_ago(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Debian's bundle as ``dispatch.ris.ca_bundle`` (a RIS with a public certificate): the roots in it that ended
    are one info line; the gauge is the first of the others to end, so RadtraceTlsCaExpiring (below 14 days) stays
    quiet."""
    with warnings.catch_warnings():  # a root of the bundle has a serial of 0
        warnings.simplefilter("ignore")
        roots = x509.load_pem_x509_certificates(SYSTEM_BUNDLE.read_bytes())
    wall = tls_renewal._wall_ns() / 1e9
    ended = [root for root in roots if root.not_valid_after_utc.timestamp() <= wall]
    valid = [root.not_valid_after_utc.timestamp() for root in roots if root.not_valid_after_utc.timestamp() > wall]
    if not ended or not valid:
        pytest.skip("this bundle holds no root that ended (or none that did not)")
    ca = Authority.root(tmp_path / "ca", "radtrace dates CA")
    ours = ca.issue("client", "radtrace-client", server=False)
    renewed = _renewed(ours.certificate, ours.key, SYSTEM_BUNDLE)
    registry = _registry()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(5):
            renewed.get()
        left = registry.get_sample_value("radtrace_tls_ca_expiry_seconds", {"setting": "dispatch.ris"})
    assert left is not None
    assert left == pytest.approx(min(valid) - wall, abs=120)  # before: negative, the first root that ended
    [said] = caplog.records
    assert said.levelno == logging.INFO
    assert said.getMessage().startswith(
        f"dispatch.ris ca_bundle {SYSTEM_BUNDLE}: {len(ended)} of its {len(roots)} CAs ended ("
    )


def test_the_start_up_check_names_an_intermediate_of_the_chain_file_that_ended(tmp_path: Path) -> None:
    """``radtrace listen``'s TLS certificate check: our certificate is valid for 90 days, the intermediate sent with
    it ended yesterday. Before: "ok, valid until" our certificate's end."""
    root = Authority.root(tmp_path / "root", "radtrace dates root")
    intermediate = root.intermediate(tmp_path / "issuing", "radtrace issuing CA", start=timedelta(days=-300),
                                     end=timedelta(days=-1))  # fmt: skip
    ours = intermediate.issue("server", "localhost", server=True, start=timedelta(days=-2))
    check = certificate_files_check(
        "TLS certificate", "listener.tls.", ours.chain, ours.key, None, server=True,
        refused_by="a PACS that checks it refuses TLS associations",
    )  # fmt: skip
    assert check.status == "warning"
    assert (
        f"listener.tls.certificate (RADTRACE_LISTENER__TLS__CERTIFICATE) {ours.chain}: its intermediate "
        "'CN=radtrace issuing CA' expired on " in check.detail
    )
    assert "a PACS that checks it refuses TLS associations" in check.detail


def test_a_certificate_in_use_not_valid_yet_by_the_clock_is_one_error_and_a_positive_gauge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The service started (or this machine's clock was stepped back) with a certificate that starts in six hours:
    nothing else to use, so it is used, and said: once in the log, and by the gauge RadtraceTlsCertificateNotValidYet
    reads. Before: said only by the start-up check."""
    ca = Authority.root(tmp_path / "ca", "radtrace dates CA")
    later = ca.issue("later", "radtrace-client", server=False, start=timedelta(hours=6))
    renewed = _renewed(later.certificate, later.key, ca.certificate)
    registry = _registry()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(5):
            assert renewed.get() is not None
        starts = registry.get_sample_value(
            "radtrace_tls_certificate_valid_from_seconds", {"setting": "dispatch.ris", "certificate": "in_use"}
        )
    assert starts == pytest.approx(6 * 3_600, abs=120)
    [said] = caplog.records
    assert said.levelno == logging.ERROR
    assert said.getMessage().startswith(f"dispatch.ris certificate {later.certificate} is not valid before ")
    assert "peers that check it refuse the connection" in said.getMessage()
