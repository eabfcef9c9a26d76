"""Refusal audit summaries are grouped per listener port (and TLS or not), not over both ports together.

With ``listener.plain_port`` a scan or a misconfigured modality on the plain port must be told apart from one on the
TLS port: each (source, reason, door) group has its own first event and its own aggregated count, both naming the
port and whether it is the TLS one.
"""

from __future__ import annotations

import pytest

from radtrace.audit.events import AuditEvent
from radtrace.dicom_listener.refusals import MAX_KEYS, RefusalAudit

pytestmark = pytest.mark.unit

REASON = "calling AE title not allowed"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _doors(events: list[AuditEvent]) -> list[tuple[int | None, bool | None, int, bool]]:
    return [(e.payload.get("port"), e.payload.get("tls"), e.payload["count"], e.payload["aggregated"]) for e in events]


def test_refusals_on_the_tls_and_the_plain_port_are_counted_apart_and_each_event_names_its_port() -> None:
    clock, written = _Clock(), []
    audit = RefusalAudit(written.extend, 60, clock=clock)
    for _ in range(5):
        audit.refused("10.0.0.1", REASON, calling_ae="SCANNER", port=2762, tls=True)
    for _ in range(3):
        audit.refused("10.0.0.1", REASON, calling_ae="SCANNER", port=11112, tls=False)
    assert _doors(written) == [(2762, True, 1, False), (11112, False, 1, False)]
    clock.now += 61
    audit.flush()
    assert _doors(written[2:]) == [(2762, True, 4, True), (11112, False, 2, True)]
    assert all(e.actor.host == "10.0.0.1" for e in written)


def test_a_refusal_without_a_known_port_keeps_the_old_payload() -> None:
    written: list[AuditEvent] = []
    audit = RefusalAudit(written.extend, 60)
    audit.refused("10.0.0.1", REASON)
    audit.refused("10.0.0.1", REASON)
    audit.flush(force=True)
    assert _doors(written) == [(None, None, 1, False), (None, None, 1, True)]
    assert "port" not in written[0].payload


def test_past_max_keys_the_overflow_is_still_grouped_per_door() -> None:
    written: list[AuditEvent] = []
    audit = RefusalAudit(written.extend, 60)
    for n in range(MAX_KEYS):
        audit.refused(f"10.1.{n // 256}.{n % 256}", REASON, port=2762, tls=True)
    for n in range(10):  # new sources past the bound: one overflow group per door
        audit.refused(f"10.2.0.{n}", REASON, port=2762, tls=True)
        audit.refused(f"10.3.0.{n}", REASON, port=11112, tls=False)
    overflow = [e for e in written if e.actor.host == "*"]
    assert _doors(overflow) == [(2762, True, 1, False), (11112, False, 1, False)]
    audit.flush(force=True)
    overflow = [e for e in written if e.actor.host == "*" and e.payload["aggregated"]]
    assert sorted(_doors(overflow)) == [(2762, True, 9, True), (11112, False, 9, True)]
