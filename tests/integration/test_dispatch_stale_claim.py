"""A dispatcher whose claim was released while it was sending (its heartbeat stopped: another PID namespace under this
host name, or its database away past the slack) and that then finishes its send anyway must not record over the
delivery's new holder: before, ``Outbox._record`` wrote whatever it had, so the row's state, attempts, delivered_at and
last_error could go backwards (the new holder delivered, the old one recorded a failure over it).

Two ``Outbox`` instances on one database (SQLite and PostgreSQL), their sends held in threads so that each order of
finishing is played exactly: the first's claim is released by the real dead-claim release (its claim names another PID
namespace and its heartbeat is 20 s old), the second claims and sends again, and the first finishes before or after the
second. The first's outcome is audited as what happened (``stale_claim``), never dropped, never written on the row.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import DispatchSettings, MllpDestination
from radtrace.errors import DispatchRejectedError, PeerUnavailableError, RadtraceError
from radtrace.reporting.dispatch import claims, holds, redelivery
from radtrace.reporting.dispatch.outbox import KIND_HL7, Delivery, Outbox, planned_deliveries
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState
from radtrace.worker.dead_claims import release_dead_claims
from radtrace.worker.settlement import Deliveries
from radtrace.worker.study_retry import retry_revision
from reporting_support import reported_revision, typical_report_files

pytestmark = pytest.mark.integration

HOST = socket.gethostname()
OTHER_NAMESPACE = 4026530000  # not this test's PID namespace: the release waits for its heartbeat to be overdue


class Clock:
    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now


class Gate:
    """A sender that says when it is sending, then waits to be let go, and returns or raises ``outcome``."""

    def __init__(self, outcome: str | RadtraceError) -> None:
        self.outcome = outcome
        self.sending = threading.Event()
        self.go = threading.Event()
        self.sent: list[bytes] = []

    def __call__(self, destination: str, payload: bytes) -> str | None:
        self.sent.append(payload)
        self.sending.set()
        assert self.go.wait(60), "never let go"
        if isinstance(self.outcome, RadtraceError):
            raise self.outcome
        return self.outcome


@dataclass
class Running:
    """``Outbox.deliver`` on a thread."""

    thread: threading.Thread
    result: list[Delivery] = field(default_factory=list)

    def join(self) -> Delivery:
        self.thread.join(60)
        assert not self.thread.is_alive()
        [delivery] = self.result
        return delivery


def _start(deliver: Callable[[int], Delivery], outbox_id: int) -> Running:
    running = Running(threading.Thread(target=lambda: running.result.append(deliver(outbox_id))))
    running.thread.start()
    return running


class Site:
    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.clock = Clock()
        self.settings = DispatchSettings(ris=MllpDestination(host="127.0.0.1", port=2575, timeout_s=30))
        self.tmp_path = tmp_path
        setup = self.outbox(Gate("unused"))
        revision_id, self.study_uid = reported_revision(store, "s" * 16, "RTACC000003")
        [self.outbox_id] = setup.enqueue(revision_id, planned_deliveries(self.settings, typical_report_files()))

    def outbox(self, sender: Gate) -> Outbox:
        # No beat renews the claim during the test: the release sees the first's claim as it was when the send began.
        return Outbox(self.store, AuditRecorder(self.store), self.settings, self.tmp_path / "payloads",
                      senders={KIND_HL7: sender}, clock=self.clock, heartbeat_s=3600)  # fmt: skip

    def first_claims_from_another_namespace(self, first: Outbox, gate: Gate) -> Running:
        """The first dispatcher's claim, as one in a container on the host's network writes it."""
        foreign = claims.claim_text(f"radtrace@{HOST}:4242", OTHER_NAMESPACE, claims.namespace()[1], 777)
        with mock.patch.object(claims, "this_process", return_value=foreign):
            running = _start(first.deliver, self.outbox_id)
            assert gate.sending.wait(60)
        return running

    def release_it(self) -> None:
        """20 s later its heartbeat (never renewed) is overdue, and a pass 3 s after still finds it so: a reconciler
        pass releases the claim."""
        self.clock.now += timedelta(seconds=20)
        recorder = AuditRecorder(self.store)
        assert release_dead_claims(self.store, recorder, self.clock(), claim_timeout_s=120).deliveries == []
        self.clock.now += timedelta(seconds=claims.CONFIRM_OVERDUE_S)
        released = release_dead_claims(self.store, recorder, self.clock(), claim_timeout_s=120)
        assert released.deliveries == [self.outbox_id]

    def row(self) -> OutboxMessage:
        with self.store.session() as session:
            row = session.get(OutboxMessage, self.outbox_id)
            assert row is not None
            session.expunge(row)
            return row

    def events(self) -> list[tuple[str, dict[str, object]]]:
        with self.store.session() as session:
            rows = session.execute(
                sa.select(AuditEventRow.event_type, AuditEventRow.payload).order_by(AuditEventRow.seq)
            ).all()
        found = [(kind, json.loads(payload)) for kind, payload in rows]
        return [(kind, payload) for kind, payload in found if payload.get("outbox_id") == self.outbox_id]


@pytest.fixture
def site(store: Store, tmp_path: Path) -> Site:
    return Site(store, tmp_path)


class NoObserver:
    def observe(self, stage: str, seconds: float) -> None:
        pass

    def finished_in(self, state: str) -> None:
        pass


def _kinds(events: list[tuple[str, dict[str, object]]]) -> list[tuple[str, object, bool]]:
    return [(kind, payload["attempt"], "stale_claim" in payload) for kind, payload in events]


@pytest.mark.parametrize("old_outcome", ["sent", "failed"])
def test_the_new_holder_delivers_first_and_the_released_holder_finishing_after_writes_nothing_over_it(
    site: Site, old_outcome: str
) -> None:
    first_gate = Gate("AA from the RIS" if old_outcome == "sent" else PeerUnavailableError("the RIS did not answer"))
    first = site.first_claims_from_another_namespace(site.outbox(first_gate), first_gate)
    site.release_it()

    second_gate = Gate("AA (second copy)")
    second_gate.go.set()
    second = site.outbox(second_gate).deliver(site.outbox_id)
    assert (second.state, second.attempts, second.superseded) == (OutboxState.DELIVERED, 2, False)
    delivered = site.row()

    site.clock.now += timedelta(seconds=7)
    first_gate.go.set()
    late = first.join()

    row = site.row()  # the new holder's record, untouched
    assert (row.state, row.attempts, row.delivered_at, row.last_error) == (
        OutboxState.DELIVERED, 2, delivered.delivered_at, "AA (second copy)"
    )  # fmt: skip
    assert (row.claimed_by, row.heartbeat_at) == (None, None)
    assert (late.superseded, late.attempts, late.state) == (True, 1, OutboxState.DELIVERED)
    assert len(first_gate.sent) == len(second_gate.sent) == 1
    stale_kind = "dispatch_delivered" if old_outcome == "sent" else "dispatch_retry_scheduled"
    assert _kinds(site.events()) == [
        ("dispatch_attempted", 1, False),
        ("dispatch_retry_scheduled", 1, False),  # the release
        ("dispatch_attempted", 2, False),
        ("dispatch_delivered", 2, False),
        (stale_kind, 1, True),  # the released holder's outcome: audited, as what it was
    ]
    _, stale = site.events()[-1]
    assert stale["stale_claim"] == (
        f"{old_outcome} by a holder whose claim had been released (its heartbeat stopped); the delivery is recorded by "
        "its new holder: recorded delivered by attempt 2"
    )
    assert (stale["recorded_by_attempt"], stale["row_state"]) == (2, "delivered")
    assert f"pidns={OTHER_NAMESPACE}" in str(stale["claimed_by"])
    if old_outcome == "sent":
        assert stale["note"] == "AA from the RIS"
    else:
        assert stale["error"] == "the RIS did not answer"
        assert "next_attempt_at" not in stale  # it scheduled nothing: the row is not its own


@pytest.mark.parametrize("new_outcome", ["sent", "failed"])
def test_the_released_holder_s_success_while_the_new_one_sends_marks_the_row_delivered_and_the_new_send_moot(
    site: Site, new_outcome: str
) -> None:
    """The released holder's send reached the RIS while the new holder's is still in flight. Before, the row stayed
    pending under the new holder: a failure of the second then left it pending (sent once more later) or failed, though
    the RIS had the report. Now the late success marks it delivered; the second's outcome is audited as moot."""
    first_gate = Gate("AA from the RIS")
    first = site.first_claims_from_another_namespace(site.outbox(first_gate), first_gate)
    site.release_it()

    second_gate = Gate("AA (second copy)" if new_outcome == "sent" else PeerUnavailableError("the RIS went away"))
    second = _start(site.outbox(second_gate).deliver, site.outbox_id)
    assert second_gate.sending.wait(60)
    in_flight_row = site.row()

    site.clock.now += timedelta(seconds=3)
    first_gate.go.set()
    late = first.join()  # the old send reached the RIS: the row is delivered, by it
    delivered_at = site.clock()

    row = site.row()
    assert (row.state, row.attempts, row.claimed_by, row.heartbeat_at, row.delivered_at, row.last_error) == (
        OutboxState.DELIVERED, 2, None, None, delivered_at, "AA from the RIS"
    )  # fmt: skip
    assert (late.superseded, late.state, late.attempts, late.error) == (False, OutboxState.DELIVERED, 1, None)
    _, stale = site.events()[-1]
    second_process = claims.this_process().partition(" ")[0]
    assert stale["stale_claim"] == (
        "sent by a holder whose claim had been released (its heartbeat stopped); the peer has the report, so the "
        f"delivery is recorded delivered by this attempt: attempt 2 ({second_process}), in flight, is moot: its "
        "outcome will not be recorded"
    )
    assert (stale["superseded_attempt"], stale["superseded_state"], stale["row_state"]) == (2, "pending", "delivered")
    assert in_flight_row.claimed_by is not None  # the claim the success ended

    site.clock.now += timedelta(seconds=3)
    second_gate.go.set()
    recorded = second.join()

    row = site.row()  # the second's outcome records over nothing
    assert (row.state, row.attempts, row.delivered_at, row.last_error, row.claimed_by) == (
        OutboxState.DELIVERED, 2, delivered_at, "AA from the RIS", None
    )  # fmt: skip
    assert (recorded.superseded, recorded.state, recorded.attempts) == (True, OutboxState.DELIVERED, 2)
    closing = "dispatch_delivered" if new_outcome == "sent" else "dispatch_retry_scheduled"
    assert _kinds(site.events()) == [
        ("dispatch_attempted", 1, False),
        ("dispatch_retry_scheduled", 1, False),
        ("dispatch_attempted", 2, False),
        ("dispatch_delivered", 1, True),
        (closing, 2, True),
    ]
    _, moot = site.events()[-1]
    what = "sent" if new_outcome == "sent" else "failed"
    assert moot["stale_claim"] == (
        f"{what} after an earlier attempt, whose claim had been released, had reached the peer and been recorded "
        "delivered: this attempt's outcome is moot"
    )
    assert "next_attempt_at" not in moot
    never = Gate("never")
    never.go.set()
    site.clock.now += timedelta(days=1)
    assert site.outbox(never).deliver(site.outbox_id).attempted is False  # not sent a third time
    assert never.sent == []


@pytest.mark.parametrize("new_outcome", ["failed_for_good", "retry_scheduled"])
def test_the_released_holder_s_success_after_the_new_one_failed_marks_the_row_delivered(
    site: Site, new_outcome: str
) -> None:
    """The new holder recorded first: a permanent failure (the row ``failed``: QA counts it, alerts, the radiologist
    sees the report as not sent) or a retry (the row sent again later). Then the released holder's send turns out to
    have reached the RIS. Before, its success was audited only and the row stayed failed or pending; now it marks the
    row delivered, by its attempt and time, and says the failure or the retry is moot."""
    first_gate = Gate("AA from the RIS")
    first = site.first_claims_from_another_namespace(site.outbox(first_gate), first_gate)
    site.release_it()

    error: RadtraceError = (
        DispatchRejectedError("AR: unknown patient") if new_outcome == "failed_for_good"
        else PeerUnavailableError("the RIS went away")
    )  # fmt: skip
    second_gate = Gate(error)
    second_gate.go.set()
    second = site.outbox(second_gate).deliver(site.outbox_id)
    expected = OutboxState.FAILED if new_outcome == "failed_for_good" else OutboxState.PENDING
    assert (second.state, second.attempts, second.superseded) == (expected, 2, False)
    settlement = Deliveries(site.store, site.outbox(second_gate), AuditRecorder(site.store), NoObserver(), site.clock)
    failed_revision = RevisionState.FAILED if new_outcome == "failed_for_good" else RevisionState.REPORTED
    assert settlement.settle(site.outbox_id) is failed_revision  # the study failed: its delivery failed

    site.clock.now += timedelta(seconds=5)
    first_gate.go.set()
    late = first.join()

    row = site.row()
    assert (row.state, row.attempts, row.delivered_at, row.last_error, row.claimed_by) == (
        OutboxState.DELIVERED, 2, site.clock(), "AA from the RIS", None
    )  # fmt: skip
    assert (late.superseded, late.state, late.attempts) == (False, OutboxState.DELIVERED, 1)
    _, stale = site.events()[-1]
    moot = (
        "attempt 2's failure is moot: the row is no longer failed" if new_outcome == "failed_for_good"
        else "the retry scheduled after attempt 2 is moot: it will not be sent again"
    )  # fmt: skip
    assert stale["stale_claim"] == (
        "sent by a holder whose claim had been released (its heartbeat stopped); the peer has the report, so the "
        f"delivery is recorded delivered by this attempt: {moot}"
    )
    assert (stale["attempt"], stale["superseded_attempt"], stale["superseded_state"]) == (1, 2, expected.value)
    assert stale.get("superseded_error") == ("AR: unknown patient" if new_outcome == "failed_for_good" else None)
    assert settlement.settle(site.outbox_id) is RevisionState.DISPATCHED  # the study is reported, not failed
    if new_outcome == "failed_for_good":
        assert str(stale["revision_failed_before"]).startswith("delivery to hl7 127.0.0.1:2575 failed: AR: unknown")
    closing = "dispatch_failed" if new_outcome == "failed_for_good" else "dispatch_retry_scheduled"
    assert _kinds(site.events()) == [
        ("dispatch_attempted", 1, False),
        ("dispatch_retry_scheduled", 1, False),
        ("dispatch_attempted", 2, False),
        (closing, 2, False),
        ("dispatch_delivered", 1, True),
    ]
    never = Gate("never")
    never.go.set()
    site.clock.now += timedelta(days=1)
    assert site.outbox(never).deliver(site.outbox_id).attempted is False  # the retry is not sent
    assert never.sent == []


def test_a_released_claim_nobody_took_again_is_recorded_by_its_holder_and_not_sent_twice(site: Site) -> None:
    first_gate = Gate("AA from the RIS")
    first = site.first_claims_from_another_namespace(site.outbox(first_gate), first_gate)
    site.release_it()

    first_gate.go.set()
    late = first.join()

    row = site.row()
    assert (late.superseded, row.state, row.attempts, row.last_error) == (False, OutboxState.DELIVERED, 1,
                                                                          "AA from the RIS")  # fmt: skip
    assert (row.claimed_by, row.heartbeat_at) == (None, None)
    kind, payload = site.events()[-1]
    assert kind == "dispatch_delivered"
    assert "claim had been released" in str(payload["claim_released"])
    second_gate = Gate("never")
    second_gate.go.set()
    assert site.outbox(second_gate).deliver(site.outbox_id).attempted is False
    assert second_gate.sent == []


def test_each_claim_names_its_own_token_so_the_same_process_claiming_again_is_another_claim(site: Site) -> None:
    """A hold's lift resets a pending row's attempts to 0: the same process claiming it again reaches attempt 1 once
    more. The token in ``claimed_by`` tells the two claims apart; the parser reads it as the same process."""
    first, second = claims.new_claim(), claims.new_claim()
    assert first != second
    assert first.rpartition(" claim=")[0] == second.rpartition(" claim=")[0] == claims.this_process()
    holder = claims.ClaimHolder.parse(first)
    assert holder is not None
    assert holder.beside_us
    assert holder.ended() is None


def test_a_hold_lifted_while_a_delivery_to_it_is_being_sent_leaves_that_delivery_to_its_holder(site: Site) -> None:
    """A delivery claimed before its destination went on hold is still being sent when the hold is lifted. Before, the
    lift reset its attempts to 0 and made it due now: another dispatcher sent it again while the first still waited,
    and the first's record no longer matched its claim (a late success left the row pending, to be sent once more).
    Now the lift leaves it to its holder (in_flight_outbox_ids in dispatch_hold_released)."""
    gate = Gate("AA from the RIS")
    running = _start(site.outbox(gate).deliver, site.outbox_id)
    assert gate.sending.wait(60)
    destination = site.row().destination
    recorder = AuditRecorder(site.store)
    with site.store.session() as session:
        hold = holds.DestinationHold(destination=destination, reason="refused", codes="1/1/3",
                                     held_since=site.clock(), outbox_id=0, calling_ae_title="RADTRACE")  # fmt: skip
        session.add(hold)
    with site.store.session(immediate=True) as session:
        lifted = holds.lift_hold(session, recorder, recorder.default_actor, destination, site.clock())
    assert lifted is not None
    assert lifted.released == []
    other = Gate("never")
    other.go.set()
    assert site.outbox(other).deliver(site.outbox_id).attempted is False  # not due: still the first's claim

    gate.go.set()
    delivery = running.join()

    row = site.row()
    assert (delivery.superseded, row.state, row.attempts) == (False, OutboxState.DELIVERED, 1)
    assert other.sent == []
    with site.store.session() as session:
        [payload] = [json.loads(p) for p in session.scalars(
            sa.select(AuditEventRow.payload).where(AuditEventRow.event_type == "dispatch_hold_released"))]  # fmt: skip
    assert (payload["in_flight_outbox_ids"], payload["released"]) == ([site.outbox_id], 0)


def _failed_after_its_first_holder_was_released(site: Site) -> tuple[Running, Gate]:
    """The first holder's send held (its RIS will answer AA), its claim released, and the second holder's send refused
    for good: the row failed; the first's send goes on when its gate (returned with it) opens."""
    first_gate = Gate("AA from the RIS")
    first = site.first_claims_from_another_namespace(site.outbox(first_gate), first_gate)
    site.release_it()
    second_gate = Gate(DispatchRejectedError("AR: unknown patient"))
    second_gate.go.set()
    assert site.outbox(second_gate).deliver(site.outbox_id).state is OutboxState.FAILED
    return first, first_gate


def _a_retry_racing_the_late_success_leaves_the_row_delivered(site: Site, retry: Callable[[Actor], object]) -> None:
    """``retry`` (an operator's retry, run in a thread) is held after it read the failed row and before it writes it
    pending again; the released holder's late success is let go meanwhile. The row ends delivered, not sent again."""
    first, first_gate = _failed_after_its_first_holder_was_released(site)
    selected, go = threading.Event(), threading.Event()
    real = redelivery.deliver_again

    def held_deliver_again(*args: Any, **kwargs: Any) -> tuple[int, str]:
        selected.set()
        assert go.wait(60), "never let go"
        return real(*args, **kwargs)

    actor = AuditRecorder(site.store).default_actor
    with mock.patch.object(redelivery, "deliver_again", held_deliver_again):
        retrying = threading.Thread(target=lambda: retry(actor))
        retrying.start()
        assert selected.wait(60)
        first_gate.go.set()
        first.thread.join(1.0)  # without the lock it records now; with it, it waits for the retry
        go.set()
        retrying.join(60)
        assert not retrying.is_alive()
        late = first.join()

    row = site.row()
    assert (late.state, row.state, row.last_error) == (OutboxState.DELIVERED, OutboxState.DELIVERED, "AA from the RIS")
    never = Gate("never")
    never.go.set()
    assert site.outbox(never).deliver(site.outbox_id).attempted is False  # not sent again
    assert never.sent == []


def test_an_operator_retry_of_the_failed_row_waits_for_a_late_success_and_leaves_the_row_delivered(site: Site) -> None:
    """``radtrace dispatch retry`` reads the failed rows, and the released holder's late success marks one delivered
    before the retry writes it. Before, on PostgreSQL the retry then wrote the delivered row back to pending, attempts
    0, due now: the RIS got the report again. Now the retry locks the rows it reads (SQLite's write lock is taken at
    BEGIN): the success waits for it, then finds the row pending again and marks it delivered."""
    destination = site.row().destination
    _a_retry_racing_the_late_success_leaves_the_row_delivered(
        site, lambda actor: redelivery.redeliver_failed(site.store, site.settings, destination, actor, clock=site.clock)
    )


def test_a_study_retry_of_the_failed_delivery_waits_for_a_late_success_and_leaves_the_row_delivered(site: Site) -> None:
    """``radtrace study retry`` of a revision that failed for a delivery reads its failed rows and makes them pending
    again, as ``dispatch retry`` does for a destination. Before, on PostgreSQL it read them without a lock: a released
    holder's late success committed between its read and its write was written back to pending, attempts 0, and sent
    again (with the revision's update, a deadlock). Now it locks the rows it reads, as redeliver_failed does."""

    def study_retry(actor: Actor) -> None:
        with site.store.session() as session:  # the settlement's verdict on the revision, once the row failed
            session.execute(sa.update(Revision).values(state=RevisionState.FAILED, reason="delivery to hl7 failed"))
        retry_revision(site.store, site.study_uid, None, actor)

    _a_retry_racing_the_late_success_leaves_the_row_delivered(site, study_retry)
