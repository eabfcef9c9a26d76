"""The outbox's claim outlasts the slowest send: a RIS whose ACK timeout is longer than the default lease must not
let a second dispatcher claim and send the same message while the first is still waiting for its ACK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings, MllpDestination
from radtrace.reporting.dispatch.outbox import KIND_HL7, Delivery, Outbox, planned_deliveries
from radtrace.store.engine import Store
from reporting_support import reported_revision, typical_report_files

pytestmark = pytest.mark.integration


def _revision(store: Store) -> int:
    """This module's reported revision (its own study key and accession)."""
    return reported_revision(store, "k" * 16, "RTACC000002")[0]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize("ack_timeout_s", [30.0, 600.0, 3600.0])
def test_a_second_dispatcher_cannot_claim_a_row_while_its_send_may_still_be_waiting(
    store: Store, tmp_path: Path, ack_timeout_s: float
) -> None:
    clock = Clock()
    settings = DispatchSettings(ris=MllpDestination(host="127.0.0.1", port=2575, timeout_s=ack_timeout_s))
    sends: list[bytes] = []
    nested: list[Delivery] = []

    def outbox() -> Outbox:
        return Outbox(
            store, AuditRecorder(store), settings, tmp_path / "payloads", clock=clock, senders={KIND_HL7: waiting}
        )

    def waiting(destination: str, payload: bytes) -> None:
        sends.append(payload)
        if len(sends) == 1:  # the ACK is still awaited, just inside the timeout, when another dispatcher looks
            clock.now += timedelta(seconds=ack_timeout_s - 1)
            nested.append(outbox().deliver(outbox_id))

    [outbox_id] = outbox().enqueue(_revision(store), planned_deliveries(settings, typical_report_files()))
    first = outbox().deliver(outbox_id)
    assert first.attempted
    assert [delivery.attempted for delivery in nested] == [False]
    assert len(sends) == 1
