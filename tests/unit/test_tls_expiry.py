"""A running service says when its TLS certificate, or a CA of its bundle, is about to end: a gauge and the log.

Before, only the start-up checks (:mod:`radtrace.preflight.tls`) said a certificate ending within 14 days: a
listener, RIS sender or ATNA forwarder running for months never said that its certificate ends in 3 days, nor that a
CA of its bundle had expired, until the peers refused it. Now each :class:`~radtrace.tls_renewal.RenewedContext`
reads its certificate's and its CA bundle's ``notAfter`` when it (re)loads; a process's registry serves
``radtrace_tls_certificate_expiry_seconds{setting}`` and ``radtrace_tls_ca_expiry_seconds{setting}`` computed at each
scrape, and each use says one warning a day (and one error once ended) per setting. Real certificates, real
contexts built by radtrace's own ``tls_context``; files renamed over as certbot does.
"""

from __future__ import annotations

import logging
import ssl
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from certificate_support import Authority, renamed_over
from radtrace import tls_renewal
from radtrace.tls_keys import tls_context
from radtrace.tls_renewal import EXPIRY_WARNING, SAY_AGAIN_S, RenewedContext, watch_tls_expiry

pytestmark = pytest.mark.unit

DAY = 86_400.0
CERTIFICATE = "radtrace_tls_certificate_expiry_seconds"
AUTHORITY = "radtrace_tls_ca_expiry_seconds"
LOGGER = "test.tls_expiry"


def _pki(folder: Path, *, certificate_days: float, ca_days: float = 365) -> dict[str, Path]:
    """A CA ending in ``ca_days`` that signed a client certificate ending in ``certificate_days`` (negative: ended
    then), its key, under ``folder``: the CA bundle, certificate and key of a setting."""
    ca = Authority.root(folder, f"radtrace expiry CA {folder.name}", start=timedelta(days=-400),
                        end=timedelta(days=ca_days))  # fmt: skip
    client = ca.issue("client", "radtrace-client", server=False, start=timedelta(days=-300),
                      end=timedelta(days=certificate_days))  # fmt: skip
    return {"ca_bundle": ca.certificate, "certificate": client.certificate, "private_key": client.key}


def _renewed(files: dict[str, Path], setting: str = "dispatch.ris") -> RenewedContext:
    """The RIS sender's context over ``files``, as senders.default_senders makes it."""

    def build() -> ssl.SSLContext:
        return tls_context(files["ca_bundle"], files["certificate"], files["private_key"], setting=f"{setting}.")

    return RenewedContext(
        build, (files["ca_bundle"], files["certificate"], files["private_key"]), setting,
        logger=logging.getLogger(LOGGER), certificate=files["certificate"], ca_bundle=files["ca_bundle"],
    )  # fmt: skip


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    watch_tls_expiry(registry)
    watch_tls_expiry(registry)  # once, however often asked (the listener restarted in the same process)
    return registry


def _gauge(registry: CollectorRegistry, name: str, setting: str) -> float | None:
    return registry.get_sample_value(name, {"setting": setting})


def test_a_certificate_ending_in_two_days_is_served_and_said_once_not_at_each_send(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _pki(tmp_path / "tls", certificate_days=2, ca_days=10)
    renewed = _renewed(files)
    registry = _registry()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(50):  # 50 ORUs
            assert renewed.get() is not None
        left = _gauge(registry, CERTIFICATE, "dispatch.ris")
        ca_left = _gauge(registry, AUTHORITY, "dispatch.ris")
    assert left is not None
    assert abs(left - 2 * DAY) < 120, left  # before: no such series
    assert ca_left is not None
    assert abs(ca_left - 10 * DAY) < 120, ca_left
    said = [record for record in caplog.records if record.name == LOGGER]
    assert [record.levelno for record in said] == [logging.WARNING, logging.WARNING]  # the certificate, the CA
    certificate, authority = (record.getMessage() for record in said)
    assert certificate.startswith(f"dispatch.ris certificate {files['certificate']} expires on ")
    assert ", in 1 day(s) 23 hour(s): renew it before then (used from the next send on" in certificate
    assert authority.startswith(f"dispatch.ris ca_bundle {files['ca_bundle']}: its CA 'CN=radtrace expiry CA tls' ")
    assert ", in 9 day(s) 23 hour(s)" in authority
    exposition = generate_latest(registry).decode()
    assert f'{CERTIFICATE}{{setting="dispatch.ris"}} ' in exposition


def test_it_is_said_again_a_day_later_and_a_renewed_file_moves_the_gauge_at_the_next_scrape(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _pki(tmp_path / "tls", certificate_days=2)
    renewed = _renewed(files)
    registry = _registry()
    clock = [1000.0]
    monkeypatch.setattr(tls_renewal, "_monotonic", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        renewed.get()
        clock[0] += SAY_AGAIN_S - 60  # 23 h 59 min later: not yet
        renewed.get()
        assert len(caplog.records) == 1
        clock[0] += 60
        renewed.get()
        assert len(caplog.records) == 2  # a day later: said again
    caplog.clear()
    before = _gauge(registry, CERTIFICATE, "dispatch.ris")
    assert before is not None
    assert before < 2 * DAY
    renewal = _pki(tmp_path / "renewal", certificate_days=90)
    for field in ("ca_bundle", "certificate", "private_key"):
        renamed_over(files[field], renewal[field])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        after = _gauge(registry, CERTIFICATE, "dispatch.ris")  # no send in between: the scrape looks at the files
        clock[0] += SAY_AGAIN_S
        renewed.get()
    assert after is not None
    assert abs(after - 90 * DAY) < 120, after
    assert [record.getMessage() for record in caplog.records] == ["dispatch.ris files changed on disk: loaded again"]


def test_an_ended_certificate_is_one_error_and_a_negative_gauge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client certificate that ended an hour ago still loads (OpenSSL does not judge our own dates): the peer
    refuses it. One error, whatever the number of sends and days."""
    files = _pki(tmp_path / "tls", certificate_days=-1 / 24)
    renewed = _renewed(files, "atna")
    registry = _registry()
    clock = [0.0]
    monkeypatch.setattr(tls_renewal, "_monotonic", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(20):
            renewed.get()
            clock[0] += SAY_AGAIN_S
    [said] = caplog.records
    assert said.levelno == logging.ERROR
    assert said.getMessage().startswith(f"atna certificate {files['certificate']} expired on ")
    assert "peers that check it refuse the connection; install the renewed certificate" in said.getMessage()
    left = _gauge(registry, CERTIFICATE, "atna")
    assert left is not None
    assert abs(left + 3600) < 120, left
    assert _gauge(registry, AUTHORITY, "atna") is not None


def test_a_certificate_beyond_the_start_up_threshold_is_served_and_not_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    days = EXPIRY_WARNING.days + 1
    renewed = _renewed(_pki(tmp_path / "tls", certificate_days=days), "listener.tls")
    registry = _registry()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        renewed.get()
        left = _gauge(registry, CERTIFICATE, "listener.tls")
    assert left is not None
    assert abs(left - days * DAY) < 120
    assert caplog.records == []


def test_the_start_up_checks_and_the_running_service_share_one_threshold() -> None:
    from radtrace.preflight import tls as preflight_tls

    assert preflight_tls.EXPIRY_WARNING is EXPIRY_WARNING == timedelta(days=14)


def _bundle_with_an_ended_ca(tmp_path: Path, *, ca_days: float) -> dict[str, Path]:
    """``dispatch.ris``'s files (its CA ending in ``ca_days``), its bundle holding also a CA that ended 30 days ago."""
    files = _pki(tmp_path / "tls", certificate_days=300, ca_days=ca_days)
    old = _pki(tmp_path / "old", certificate_days=300, ca_days=-30)
    files["ca_bundle"].write_bytes(files["ca_bundle"].read_bytes() + old["ca_bundle"].read_bytes())
    return files


def _ca_gauge_after_uses(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> float | None:
    """The CA gauge of ``dispatch.ris`` after its context was used 10 times (what was said: in ``caplog``, INFO up)."""
    renewed = _renewed(files)
    registry = _registry()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(10):
            renewed.get()
        return _gauge(registry, AUTHORITY, "dispatch.ris")


def test_an_expired_ca_kept_beside_the_renewed_one_is_one_info_line_and_the_gauge_follows_the_renewed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The RIS's bundle still holds last year's CA beside the renewed one. An ended CA verifies nothing: the CA gauge
    follows the renewed one (before: negative, last year's, and RadtraceTlsCaExpiring fired until it was removed),
    and the ended one is said once, as information."""
    files = _bundle_with_an_ended_ca(tmp_path, ca_days=400)
    ca_left = _ca_gauge_after_uses(files, caplog)
    assert ca_left is not None
    assert abs(ca_left - 400 * DAY) < 120
    [said] = caplog.records
    assert said.levelno == logging.INFO
    assert said.getMessage().startswith(
        f"dispatch.ris ca_bundle {files['ca_bundle']}: 1 of its 2 CAs ended (its CA 'CN=radtrace expiry CA old' on "
    )


def test_a_bundle_whose_every_ca_ended_is_one_error_and_a_negative_ca_gauge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing in the bundle can verify the peer: the first CA to end is served, negative, and said as an error."""
    files = _bundle_with_an_ended_ca(tmp_path, ca_days=-10)
    ca_left = _ca_gauge_after_uses(files, caplog)
    assert ca_left is not None
    assert abs(ca_left + 30 * DAY) < 120
    [said] = caplog.records
    assert said.levelno == logging.ERROR
    assert said.getMessage().startswith(
        f"dispatch.ris ca_bundle {files['ca_bundle']}: its CA 'CN=radtrace expiry CA old' expired on "
    )
    assert "a peer certificate it signed no longer verifies" in said.getMessage()


SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.mark.skipif(not SYSTEM_BUNDLE.exists(), reason="no Debian CA bundle here")
def test_a_public_bundle_read_for_its_dates_writes_no_deprecation_warning_on_stderr(tmp_path: Path) -> None:
    """Debian's bundle holds a root whose serial number is 0: cryptography warned (CryptographyDeprecationWarning) at
    each load of a bundle naming it, on the service's stderr."""
    files = _pki(tmp_path / "tls", certificate_days=300)
    files["ca_bundle"].write_bytes(SYSTEM_BUNDLE.read_bytes() + files["ca_bundle"].read_bytes())
    renewed = _renewed(files)
    registry = _registry()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        renewed.get()
    assert [str(warning.message) for warning in caught] == []
    assert _gauge(registry, AUTHORITY, "dispatch.ris") is not None


def test_a_scrape_while_another_thread_makes_a_context_sees_only_whole_ones(caplog: pytest.LogCaptureFixture) -> None:
    """A context joined the process's watched set before its lock existed: a scrape at that moment logged
    "TLS files could not be looked at for the expiry gauges (AttributeError: ... no attribute '_lock')"."""
    import threading

    registry = _registry()
    kept: list[RenewedContext] = []
    stop = threading.Event()

    def make() -> None:
        while not stop.is_set():
            kept.append(RenewedContext(lambda: None, (), "race.test"))
            if len(kept) > 200:
                kept.clear()

    maker = threading.Thread(target=make)
    maker.start()
    try:
        with caplog.at_level(logging.WARNING, logger="radtrace.tls_renewal"):
            for _ in range(400):
                generate_latest(registry)
    finally:
        stop.set()
        maker.join()
    assert [record.getMessage() for record in caplog.records] == []
