"""Fencing: a dispatcher does not begin a send once another may have taken its claim over.

Another node releases a delivery's claim once its beat has stopped for 15 s (5 s beat + 10 s slack, by that node's
sightings, radtrace.worker.dead_claims) and sends it again. A dispatcher that claimed a row and then stalled before its
send began (a VM paused, swap, a payload on a slow mount) with its database unreachable, or whose claim was released
and taken meanwhile, used to send all the same: a second ORU/SR. Now a send begins only while the claim was known held
less than claims.SEND_FENCE_S (10 s) ago, by this process's monotonic clock, or a renewal lands first; otherwise
nothing is sent and the row is due again a beat later, that attempt not counted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import DispatchSettings, MllpDestination
from radtrace.errors import StoreUnavailableError
from radtrace.reporting.dispatch import claims
from radtrace.reporting.dispatch.outbox import KIND_HL7, Outbox, planned_deliveries
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState
from reporting_support import reported_revision, typical_report_files

pytestmark = pytest.mark.integration

SETTINGS = DispatchSettings(ris=MllpDestination(host="127.0.0.1", port=2575, timeout_s=30))


class CutOff:
    """The store as a dispatcher sees it: its claim's renewals refused while ``renewals_refused`` is set."""

    def __init__(self, store: Store) -> None:
        self.store, self.engine = store, store.engine
        self.renewals_refused = False
        self.refused = 0

    @contextlib.contextmanager
    def session(self, doing: str = "using the database", *, immediate: bool = False) -> Iterator[Session]:
        if self.renewals_refused and doing == "renewing a delivery's claim":
            self.refused += 1
            raise StoreUnavailableError(f"{doing}: the database did not answer")
        with self.store.session(doing, immediate=immediate) as session:
            yield session


class Stall:
    """This process's monotonic clock, and a stall of ``seconds`` between the claim and the send (played while the
    payload is read), during which ``meanwhile`` happens."""

    def __init__(self, seconds: float, meanwhile: object = None) -> None:
        self.mono, self.seconds, self.meanwhile = 1000.0, seconds, meanwhile
        self.wall = utc_now()  # the dispatcher's wall clock (its retries' schedule)

    def __call__(self) -> float:
        return self.mono


def _dispatcher(store: Store, tmp_path: Path, stall: Stall, sent: list[bytes]) -> tuple[Outbox, CutOff, int]:
    cut = CutOff(store)

    def ris(destination: str, payload: bytes) -> str:
        sent.append(payload)
        return "AA"

    outbox = Outbox(store, AuditRecorder(store), SETTINGS, tmp_path / "payloads", senders={KIND_HL7: ris},
                    monotonic=stall, clock=lambda: stall.wall)  # fmt: skip
    [outbox_id] = outbox.enqueue(reported_revision(store, "f" * 16, "RTACC000481")[0],
                                 planned_deliveries(SETTINGS, typical_report_files()))  # fmt: skip
    outbox.store = cut  # type: ignore[assignment]  # its sessions from here on: the claim's renewals may fail
    read = outbox.payloads.read

    def stalled_read(path: str, sha256: str) -> bytes:
        stall.mono += stall.seconds
        if callable(stall.meanwhile):
            stall.meanwhile()
        return read(path, sha256)

    outbox.payloads.read = stalled_read  # type: ignore[method-assign]
    return outbox, cut, outbox_id


def _row(store: Store, outbox_id: int) -> OutboxMessage:
    with store.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        session.expunge(row)
        return row


def test_a_dispatcher_cut_off_from_its_database_past_the_fence_does_not_begin_the_send(
    store: Store, tmp_path: Path
) -> None:
    """Stalled 12 s after its claim (past the 10 s fence), its renewal refused: nothing sent, the row due again a beat
    later, not counted, audited as not sent; once the database answers, the next pass sends it, once."""
    sent: list[bytes] = []
    stall = Stall(12.0)
    outbox, cut, outbox_id = _dispatcher(store, tmp_path, stall, sent)
    cut.renewals_refused = True

    refused = outbox.deliver(outbox_id)
    assert sent == []
    assert refused.attempted is False
    assert refused.error is not None
    assert "not sent: this dispatcher's claim was last renewed 12 s ago" in refused.error
    assert cut.refused == 1
    row = _row(store, outbox_id)
    assert (row.state, row.attempts, row.claimed_by, row.heartbeat_at) == (OutboxState.PENDING, 0, None, None)
    with store.session() as session:
        retries = sa.select(AuditEventRow.payload).where(AuditEventRow.event_type == "dispatch_retry_scheduled")
        payloads = [json.loads(p) for p in session.scalars(retries)]
    assert [(p["not_sent"], p["attempt_counted"]) for p in payloads] == [(True, False)]

    cut.renewals_refused, stall.seconds = False, 0.0
    assert outbox.deliver_due() == []
    stall.wall += timedelta(seconds=claims.HEARTBEAT_S)  # a beat later
    [delivered] = outbox.deliver_due()
    assert (delivered.state, delivered.attempts, len(sent)) == (OutboxState.DELIVERED, 1, 1)


def test_a_claim_released_and_taken_during_the_stall_is_not_sent_by_its_first_holder(
    store: Store, tmp_path: Path
) -> None:
    """Stalled 20 s: another node released the claim (its beat unchanged for 15 s) and claimed the row; the first
    holder's renewal finds the claim gone: it sends nothing and leaves the row, the other's, as it is."""
    sent: list[bytes] = []
    taken_by = claims.new_claim()

    def taken_over() -> None:
        with store.session() as session:
            session.execute(sa.update(OutboxMessage).values(claimed_by=taken_by, attempts=2))

    stall = Stall(20.0, taken_over)
    outbox, _, outbox_id = _dispatcher(store, tmp_path, stall, sent)
    refused = outbox.deliver(outbox_id)
    assert sent == []
    assert refused.attempted is False
    assert refused.error is not None
    assert "claim was released meanwhile" in refused.error
    row = _row(store, outbox_id)
    assert (row.claimed_by, row.attempts, row.state) == (taken_by, 2, OutboxState.PENDING)


def test_a_stall_past_the_fence_with_the_database_there_renews_and_sends(store: Store, tmp_path: Path) -> None:
    """Stalled 12 s, the database answering: the claim is renewed before the send (a fresh beat, so others' sightings
    start again) and the report is sent once."""
    sent: list[bytes] = []
    outbox, cut, outbox_id = _dispatcher(store, tmp_path, Stall(12.0), sent)
    claimed_at = []
    original = cut.session

    @contextlib.contextmanager
    def watching(doing: str = "using the database", *, immediate: bool = False) -> Iterator[Session]:
        claimed_at.append(doing)
        with original(doing, immediate=immediate) as session:
            yield session

    cut.session = watching  # type: ignore[method-assign]
    delivered = outbox.deliver(outbox_id)
    assert (delivered.state, delivered.attempts, len(sent)) == (OutboxState.DELIVERED, 1, 1)
    assert "renewing a delivery's claim" in claimed_at


def test_a_send_within_the_fence_needs_no_renewal(store: Store, tmp_path: Path) -> None:
    """The usual case: the send begins within moments of its claim, without a further round trip."""
    sent: list[bytes] = []
    outbox, cut, outbox_id = _dispatcher(store, tmp_path, Stall(claims.SEND_FENCE_S - 1), sent)
    cut.renewals_refused = True
    delivered = outbox.deliver(outbox_id)
    assert (delivered.state, len(sent), cut.refused) == (OutboxState.DELIVERED, 1, 0)
