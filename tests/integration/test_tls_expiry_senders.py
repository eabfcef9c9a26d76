"""The RIS sender and the ATNA forwarder, running, say their client certificate is about to end: gauge and log.

Before, ``dispatch.ris.certificate`` or ``atna.certificate`` ending within 14 days was said only by the start-up
checks: a dispatcher or forwarder running for months said nothing until the RIS or the audit record repository
refused it. Now the worker's and the forwarder's metrics registries serve ``radtrace_tls_certificate_expiry_seconds``
for ``dispatch.ris`` and ``atna``, and the first send of the day logs one warning, not one per ORU. A real TLS RIS
(python-hl7's MLLP server), the production sender (``default_senders``) and the forwarder's metrics and transport.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from certificate_support import certificate_pair
from mllp_support import mllp_receiver, ris_tls
from radtrace.audit.atna.forwarder import AtnaMetrics, transport_for
from radtrace.config import ReportingSettings, load_settings
from radtrace.reporting.dispatch.kinds import KIND_HL7
from radtrace.reporting.dispatch.senders import default_senders
from radtrace.reporting.hl7 import build_oru
from radtrace.testing.atna import make_pki
from radtrace.testing.services import free_port
from radtrace.tls_renewal import watch_tls_expiry
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

SENDERS = "radtrace.reporting.dispatch.senders"
GAUGE = "radtrace_tls_certificate_expiry_seconds"
DAY = 86_400.0
SR_UID = "1.2.826.0.1.3680043.8.498.7"


def _client_pair(folder: Path, days: float) -> tuple[Path, Path]:
    now = datetime.now(UTC)
    return certificate_pair(folder, "client", now - timedelta(days=88), now + timedelta(days=days))


def test_the_ris_sender_says_its_certificate_ends_in_two_days_once_over_five_orus(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_pki(tmp_path / "pki")  # the RIS's certificate and CA: a year left
    certificate, key = _client_pair(tmp_path, days=2)
    port = free_port()
    settings = load_settings(
        data_dir=tmp_path / "var",
        dispatch={"ris": {"host": "127.0.0.1", "port": port, "timeout_s": 10, "tls": True, "ca_bundle": str(pki.ca),
                          "certificate": str(certificate), "private_key": str(key)}},
    )  # fmt: skip
    send = default_senders(settings.dispatch)[KIND_HL7]
    registry = CollectorRegistry()
    watch_tls_expiry(registry)  # as serve_metrics does for the worker's and the dispatcher's
    reading, sources = sr_cases()["typical"]
    oru = build_oru(
        reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.7"
    )
    with mllp_receiver(["AA"] * 5, port=port, tls=ris_tls(pki)) as ris, caplog.at_level(logging.INFO, logger=SENDERS):
        for _ in range(5):
            assert send(f"127.0.0.1:{port}", oru.encode()) is None
        assert len(ris.control_ids) == 5
    said = [record.getMessage() for record in caplog.records if record.name == SENDERS]
    assert len(said) == 1, said  # once, not at each ORU (before: nothing)
    assert said[0].startswith(f"dispatch.ris certificate {certificate} expires on ")
    left = registry.get_sample_value(GAUGE, {"setting": "dispatch.ris"})
    assert left is not None
    assert abs(left - 2 * DAY) < 300
    ca_left = registry.get_sample_value("radtrace_tls_ca_expiry_seconds", {"setting": "dispatch.ris"})
    assert ca_left is not None
    assert ca_left > 300 * DAY


def test_the_atna_forwarders_metrics_serve_its_client_certificates_end(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    certificate, key = _client_pair(tmp_path, days=5)
    settings = load_settings(
        data_dir=tmp_path / "var",
        atna={"enabled": True, "transport": "tls", "host": "127.0.0.1", "port": free_port(), "ca_bundle": str(pki.ca),
              "certificate": str(certificate), "private_key": str(key)},
    )  # fmt: skip
    metrics = AtnaMetrics()
    transport = transport_for(settings.atna)  # the forwarder's: its context loaded (no connection yet)
    left = metrics.registry.get_sample_value(GAUGE, {"setting": "atna"})
    assert left is not None  # before: no such series on the forwarder's metrics port
    assert abs(left - 5 * DAY) < 300
    del transport  # the forwarder gone (a test's, or a process ending): its series with it, not a stale one
    after = metrics.registry.get_sample_value(GAUGE, {"setting": "atna"})
    assert after is None or abs(after - 5 * DAY) > 300  # another forwarder alive in this process serves its own
