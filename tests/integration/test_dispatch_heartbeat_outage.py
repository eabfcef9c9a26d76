"""A database away longer than the heartbeat's slack (15 s) while a dispatcher in another PID namespace sends: its
beats cannot be written, and the dead-claim release cannot tell it from a dead one. Before, a beat that failed was
tried again only at the next 5 s tick, and the first pass of another dispatcher after the database came back released
the claim at once (its beat overdue), so the delivery was sent a second time while the first send still waited for
its ACK. Now the beat is retried every second (claims.BEAT_RETRY_S) and a claim of another namespace is released only
when a pass 3 s later (claims.CONFIRM_OVERDUE_S) still finds the same beat overdue.

On SQLite and PostgreSQL, with a database that is "away" for the sending dispatcher (every session refused), real
threads and the real heartbeat; the outage's length is played by moving the dispatchers' clock.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast
from unittest import mock

import pytest
from sqlalchemy.orm import Session

from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings, MllpDestination
from radtrace.errors import StoreUnavailableError
from radtrace.reporting.dispatch import claims
from radtrace.reporting.dispatch.outbox import KIND_HL7, Outbox, planned_deliveries
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState
from radtrace.worker.dead_claims import release_dead_claims
from reporting_support import reported_revision, typical_report_files

pytestmark = pytest.mark.integration

HOST = socket.gethostname()


def _revision(store: Store) -> int:
    """This module's reported revision (its own study key and accession)."""
    return reported_revision(store, "h" * 16, "RTACC000004")[0]


def _claimed_row(store: Store, claimed_by: str, heartbeat_at: datetime, now: datetime) -> int:
    """An HL7 delivery pending after its first attempt, claimed by ``claimed_by`` (its lease 300 s from ``now``), its
    last beat at ``heartbeat_at``: its outbox id."""
    with store.session() as session:
        row = OutboxMessage(revision_id=_revision(store), kind="hl7", destination="127.0.0.1:2575", payload_path="x",
                            payload_sha256="0" * 64, state=OutboxState.PENDING, attempts=1,
                            next_attempt_at=now + timedelta(seconds=300), claimed_by=claimed_by,
                            heartbeat_at=heartbeat_at)  # fmt: skip
        session.add(row)
        session.flush()
        return row.id


class Clock:
    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now


class AwayStore:
    """The store as a dispatcher whose database is unreachable sees it while ``away`` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine
        self.away = threading.Event()
        self.refused = 0

    @contextlib.contextmanager
    def session(self, doing: str = "using the database", *, immediate: bool = False) -> Iterator[Session]:
        if self.away.is_set():
            self.refused += 1
            raise StoreUnavailableError(f"{doing}: the database did not answer")
        with self.store.session(doing, immediate=immediate) as session:
            yield session


def _row(store: Store, outbox_id: int) -> OutboxMessage:
    with store.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        session.expunge(row)
        return row


def _wait_for(condition: object, timeout_s: float) -> float:
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - start < timeout_s, "not within the time"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_beat_missed_while_the_database_was_away_lands_within_a_second_of_its_return(store: Store) -> None:
    """The claim's holder beats every 5 s; its beat at 5 s finds the database away; the database is back 2.5 s later:
    the beat is tried again every second meanwhile (BEAT_RETRY_S), so the claim is renewed within about a second of
    the return (it was at the next tick, 10 s, before). Counted, not timed: the tries while it was away (1 before:
    none until the next tick); a renewal under 2 s after the return was the bound, too close on a busy machine."""
    now, claimed_by = utc_now(), claims.new_claim()
    outbox_id = _claimed_row(store, claimed_by, now, now)
    first_beat = _row(store, outbox_id).heartbeat_at
    away = AwayStore(store)
    away.away.set()
    with claims.kept_alive(cast(Store, away), outbox_id, claimed_by, 1, utc_now, claims.HEARTBEAT_S):
        _wait_for(lambda: away.refused >= 1, 10)  # the beat at 5 s: refused
        time.sleep(2.5)
        away.away.clear()  # the database is back
        tries_while_away = away.refused
        took = _wait_for(lambda: _row(store, outbox_id).heartbeat_at != first_beat, 10)
    print(f"\nclaim renewed {took:.2f} s after the database came back")
    assert tries_while_away >= 2  # tried again within the 2.5 s (twice, on time), not only at the next tick


def test_a_claim_of_another_namespace_is_not_released_in_the_moment_its_database_comes_back(
    store: Store, tmp_path: Path
) -> None:
    """A dispatcher in another PID namespace sends (its RIS slow to ACK); its database is away for 20 s, so its beats
    stop; the moment the database is back, a second dispatcher's reconciler pass finds the beat 20 s old. It must not
    release it (before: released at once, then sent again by the second): it looks again 3 s later, by which time the
    holder's retried beat has landed, and the delivery is sent once. A holder that stays silent is released then."""
    clock = Clock()
    settings = DispatchSettings(ris=MllpDestination(host="127.0.0.1", port=2575, timeout_s=30))
    sending, acked, sent = threading.Event(), threading.Event(), []

    def slow_ris(destination: str, payload: bytes) -> str:
        sent.append(payload)
        sending.set()
        assert acked.wait(60)
        return "AA"

    away = AwayStore(store)
    first = Outbox(cast(Store, away), AuditRecorder(cast(Store, away)), settings, tmp_path / "payloads",
                   senders={KIND_HL7: slow_ris}, clock=clock)  # fmt: skip
    [outbox_id] = first.enqueue(_revision(store), planned_deliveries(settings, typical_report_files()))
    foreign = claims.claim_text(f"radtrace@{HOST}:4242", 4026530000, claims.namespace()[1], 777)
    result: list[object] = []
    with mock.patch.object(claims, "this_process", return_value=foreign):
        thread = threading.Thread(target=lambda: result.append(first.deliver(outbox_id)))
        thread.start()
        assert sending.wait(60)
    claimed = _row(store, outbox_id)

    away.away.set()  # the database goes away for the first dispatcher ...
    _wait_for(lambda: away.refused >= 1, 10)  # ... its beat at 5 s is refused
    clock.now += timedelta(seconds=20)  # ... for 20 s
    away.away.clear()  # and it is back: the second dispatcher's pass comes first
    recorder = AuditRecorder(store)
    back = clock()
    looked = release_dead_claims(store, recorder, back, claim_timeout_s=120)
    assert looked.deliveries == []
    assert looked.look_again_at == back + timedelta(seconds=claims.CONFIRM_OVERDUE_S)

    _wait_for(lambda: _row(store, outbox_id).heartbeat_at != claimed.heartbeat_at, 3)  # the retried beat lands
    assert _row(store, outbox_id).heartbeat_at == back
    again = release_dead_claims(store, recorder, back + timedelta(seconds=3.5), claim_timeout_s=120)
    assert again.deliveries == []  # renewed: kept

    acked.set()
    thread.join(60)
    row = _row(store, outbox_id)
    assert (row.state, row.attempts, len(sent)) == (OutboxState.DELIVERED, 1, 1)


def test_an_overdue_claim_of_another_namespace_is_released_once_a_later_pass_finds_the_same_beat(store: Store) -> None:
    """The confirming look costs a dead holder of another namespace 3 s, no more."""
    now = utc_now()
    foreign = claims.claim_text(f"radtrace@{HOST}:4243", 4026530000, claims.namespace()[1], 778) + " claim=ab12"
    outbox_id = _claimed_row(store, foreign, now - timedelta(seconds=16), now)
    recorder = AuditRecorder(store)
    assert release_dead_claims(store, recorder, now, claim_timeout_s=120).deliveries == []
    assert release_dead_claims(store, recorder, now + timedelta(seconds=2.9), claim_timeout_s=120).deliveries == []
    released = release_dead_claims(store, recorder, now + timedelta(seconds=3), claim_timeout_s=120)
    assert released.deliveries == [outbox_id]
    row = _row(store, outbox_id)
    assert row.claimed_by is None
    assert row.next_attempt_at <= now + timedelta(seconds=3)  # due now (and for hosts in step with the database)
    assert "whose heartbeat stopped at" in str(row.last_error)


def test_a_gap_in_the_releasers_passes_starts_the_confirmation_again(store: Store) -> None:
    """Passes more than 10 s apart (the releaser's own passes failed: the database was away for it too) do not confirm
    a sighting from before the gap: the holder's retried beat may be about to land."""
    now = utc_now()
    foreign = claims.claim_text(f"radtrace@{HOST}:4244", 4026530000, claims.namespace()[1], 779) + " claim=cd34"
    outbox_id = _claimed_row(store, foreign, now - timedelta(seconds=16), now)
    recorder = AuditRecorder(store)
    for after_s in (0.0, 12.0, 14.9):  # seen, then (after a gap) seen as new, then still within its 3 s
        assert (
            release_dead_claims(store, recorder, now + timedelta(seconds=after_s), claim_timeout_s=120).deliveries == []
        )
    released = release_dead_claims(store, recorder, now + timedelta(seconds=15), claim_timeout_s=120)
    assert released.deliveries == [outbox_id]
