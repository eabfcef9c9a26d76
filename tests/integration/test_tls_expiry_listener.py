"""The listener, running, says its TLS certificate is about to end: on its metrics port and once a day in its log.

Before, ``listener.tls.certificate`` ending within 14 days was said only by the start-up check: a listener running
for months said nothing until PACS refused its handshakes. Now ``radtrace_tls_certificate_expiry_seconds`` and
``radtrace_tls_ca_expiry_seconds`` (``setting="listener.tls"``) are served with the listener's counters, computed at
each scrape, and the first handshake of the day logs one warning, not one per association. A real in-process
listener, real TLS associations from pynetdicom, the real bounded metrics server scraped over HTTP, the certificate
renamed over as certbot does.
"""

from __future__ import annotations

import logging
import ssl
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from certificate_support import Authority, renamed_over
from listener_support import listener_settings, running
from radtrace.metrics_server import start_metrics_server
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

AE_LOG = "radtrace.dicom_listener.ae"
DAY = 86_400.0


def _server_pair(folder: Path, days: float) -> tuple[Path, Path, Path]:
    """A CA (a year left), a certificate for 127.0.0.1 it signed ending in ``days``, its key: under ``folder``."""
    ca = Authority.root(folder, f"radtrace listener CA {folder.name}")
    server = ca.issue("server", "localhost", server=True, start=timedelta(days=-80), end=timedelta(days=days))
    return ca.certificate, server.certificate, server.key


def _echo(port: int, ca: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # no name sent (no SNI), as dcmtk's echoscu
    peer = AE(ae_title="PACS")
    peer.add_requested_context(Verification)
    assoc = peer.associate("127.0.0.1", port, ae_title="RADTRACE", tls_args=(context, None))
    assert assoc.is_established
    status = assoc.send_c_echo()
    assert int(status.Status) == 0
    assoc.release()


def _served(metrics_port: int, name: str) -> float:
    """The value of ``name{setting="listener.tls"}`` on the metrics port, over HTTP as Prometheus reads it."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    [line] = [line for line in text.splitlines() if line.startswith(f'{name}{{setting="listener.tls"}} ')]
    return float(line.split()[-1])


def test_a_listener_certificate_ending_in_two_days_is_served_said_once_and_renewed_on_the_next_scrape(
    tmp_path: Path, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    ca, certificate, key = _server_pair(tmp_path / "tls", days=2)
    config = listener_settings(
        tmp_path, listener_port, tls={"enabled": True, "certificate": str(certificate), "private_key": str(key)},
        acse_timeout_s=5.0,
    )  # fmt: skip
    store = Store.from_url(config.store_url)
    upgrade(store)
    metrics_port = free_port()
    try:
        with caplog.at_level(logging.INFO, logger=AE_LOG), running(config, store) as listener:
            server, _ = start_metrics_server(metrics_port, registry=listener.metrics.registry)
            try:
                for _ in range(5):  # five PACS associations
                    _echo(listener_port, ca)
                left = _served(metrics_port, "radtrace_tls_certificate_expiry_seconds")
                said = [record for record in caplog.records if record.name == AE_LOG and record.levelno >= 30]
                renewal = _server_pair(tmp_path / "renewal", days=90)
                renamed_over(certificate, renewal[1])
                renamed_over(key, renewal[2])
                renewed = _served(metrics_port, "radtrace_tls_certificate_expiry_seconds")  # no association between
                _echo(listener_port, renewal[0])  # the renewed certificate is presented
            finally:
                server.shutdown()
                server.server_close()
    finally:
        store.dispose()
    assert abs(left - 2 * DAY) < 300, left  # before: no such series on the listener's metrics port
    [warning] = [record.getMessage() for record in said]  # one warning, not one per association
    assert warning.startswith(f"listener.tls certificate {certificate} expires on ")
    assert ", in 1 day(s) 23 hour(s): renew it before then (used from the next association on" in warning
    assert abs(renewed - 90 * DAY) < 300, renewed
