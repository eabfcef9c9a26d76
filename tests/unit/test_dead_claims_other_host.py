"""A delivery claimed by a dispatcher on another host (several nodes on one database) is released once its heartbeat
has stopped, judged by sightings alone: the same (row, holder, beat) seen unchanged by this process for the heartbeat
interval plus its slack (5 + 10 s) on this process's monotonic clock, by passes no more than 10 s apart. The beat is
written from the holder's clock, never compared with this host's, so a holder whose clock is 10 minutes ahead or
behind is neither released early nor kept. Before, another host's claim was left to its 300 s lease.

The real ``radtrace worker`` on another host name, killed -9, is in tests/integration/test_dead_claims_kill.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.reporting.dispatch import claims
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker import dead_claims
from reporting_support import reported_revision

HOLDER = "radtrace@gpu-node-7:4242"
#: As a dispatcher on gpu-node-7 writes its claim (another host: its namespace, boot and start mean nothing here).
CLAIMED_BY = claims.claim_text(HOLDER, 4026531836, "0b7c2f4e-1d2a-4c55-9a3e-6f1e2d3c4b5a", 123456) + " claim=ab12cd"
#: Clocks in step: the real worker on another host name in tests/integration/test_dead_claims_kill.py.
SKEWS = pytest.mark.parametrize("skew_s", [600.0, -600.0], ids=["ahead-10min", "behind-10min"])


class Passes:
    """This host's reconciler passes: its wall clock (``now``) and its monotonic clock advance together."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.recorder = AuditRecorder(store)
        self.now = utc_now()
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds

    def look(self) -> dead_claims.Released:
        return dead_claims.release_dead_claims(
            self.store, self.recorder, self.now, claim_timeout_s=120, monotonic=lambda: self.mono
        )


@pytest.fixture
def passes(sqlite_store: Store) -> Iterator[Passes]:
    yield Passes(sqlite_store)
    dead_claims._UNCHANGED.forget_all_but(set(), "delivery")  # sightings are per process: none carried to the next


def _claimed(store: Store, holder_now: datetime) -> int:
    """An HL7 delivery being sent by gpu-node-7, claimed and last renewed at ``holder_now`` by its clock."""
    revision_id, _ = reported_revision(store, "o" * 16, "RTACC000077")
    with store.session() as session:
        row = OutboxMessage(revision_id=revision_id, kind="hl7", destination="127.0.0.1:2575", payload_path="x",
                            payload_sha256="0" * 64, state=OutboxState.PENDING, attempts=1,
                            next_attempt_at=holder_now + timedelta(seconds=300), claimed_by=CLAIMED_BY,
                            heartbeat_at=holder_now)  # fmt: skip
        session.add(row)
        session.flush()
        return row.id


def _renew(store: Store, outbox_id: int, holder_now: datetime) -> None:
    with store.session() as session:
        session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == outbox_id).values(heartbeat_at=holder_now))


def _row(store: Store, outbox_id: int) -> OutboxMessage:
    with store.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        session.expunge(row)
        return row


@SKEWS
def test_a_live_holder_on_another_host_is_never_released_whatever_its_clock(passes: Passes, skew_s: float) -> None:
    """It renews every 6 s (its clock 10 minutes off ours); passes every 2 s for 90 s never release it."""
    skew = timedelta(seconds=skew_s)
    outbox_id = _claimed(passes.store, passes.now + skew)
    for tick in range(45):
        if tick and tick % 3 == 0:  # a beat every 6 s: a loaded holder, late by a second
            _renew(passes.store, outbox_id, passes.now + skew)
        looked = passes.look()
        assert looked.deliveries == [], tick
        assert looked.look_again_at is not None  # looked at again within the sightings gap
        assert looked.look_again_at - passes.now <= timedelta(seconds=dead_claims.SIGHTINGS_GAP_S)
        passes.advance(2.0)
    row = _row(passes.store, outbox_id)
    assert (row.state, row.claimed_by) == (OutboxState.PENDING, CLAIMED_BY)


@SKEWS
def test_a_holder_on_another_host_whose_beat_stopped_is_released_after_15_s_of_sightings(
    passes: Passes, skew_s: float
) -> None:
    """Its beat seen unchanged for 14.9 s: kept; for 15 s: released, once, audited naming it and this host."""
    stopped = passes.now + timedelta(seconds=skew_s)
    outbox_id = _claimed(passes.store, stopped)
    for step in (0.0, 5.0, 5.0, 4.9):
        passes.advance(step)
        assert passes.look().deliveries == []
    passes.advance(0.1)
    assert passes.look().deliveries == [outbox_id]
    assert passes.look().deliveries == []  # released once
    row = _row(passes.store, outbox_id)
    assert (row.state, row.attempts, row.claimed_by, row.heartbeat_at) == (OutboxState.PENDING, 1, None, None)
    # due now: for this host, and for hosts in step with the database's clock (this host's is not the lease's clock)
    assert row.next_attempt_at <= passes.now
    with passes.store.session() as session:
        [payload] = [
            p for p in session.scalars(sa.select(AuditEventRow.payload).where(
                AuditEventRow.event_type == "dispatch_retry_scheduled"))
        ]  # fmt: skip
    details = json.loads(payload)
    assert (details["released_claim_of"], details["claimed_by"]) == (HOLDER, CLAIMED_BY)
    assert details["released_by_host"] == socket.gethostname()
    assert f"whose heartbeat stopped at {stopped:%H:%M:%S} UTC by its clock, as seen from {socket.gethostname()}" in (
        str(row.last_error)
    )
    assert str(row.last_error).startswith(f"claimed by {HOLDER}, ")


def test_a_gap_in_this_processs_passes_starts_the_sightings_again(passes: Passes) -> None:
    """Passes more than 10 s apart (the database was away for this process too, so the holder's beats could not land
    either): the sightings from before the gap count for nothing; 15 s of sightings after it are needed."""
    outbox_id = _claimed(passes.store, passes.now - timedelta(seconds=600))
    for step in (0.0, 5.0, 10.5, 5.0, 5.0, 4.9):  # 10.5: the gap; then 14.9 s of sightings
        passes.advance(step)
        assert passes.look().deliveries == [], step
    passes.advance(0.1)
    assert passes.look().deliveries == [outbox_id]


def test_a_renewed_beat_starts_the_sightings_again(passes: Passes) -> None:
    """A beat that lands late (once the database is back) is a new sighting: 15 s more before a release."""
    holder_now = passes.now + timedelta(seconds=600)
    outbox_id = _claimed(passes.store, holder_now)
    for _ in range(7):  # 14 s of the first beat
        assert passes.look().deliveries == []
        passes.advance(2.0)
    _renew(passes.store, outbox_id, holder_now + timedelta(seconds=14))
    for _ in range(8):  # 14 s of the second
        assert passes.look().deliveries == []
        passes.advance(2.0)
    assert passes.look().deliveries == [outbox_id]


#: A GPU worker on gpu-node-7 (``host:pid``): it renews its claim every third of ``broker.claim_timeout_s`` (40 s).
WORKER = "gpu-node-7:4242"


def _read_by_other_host(store: Store, holder_now: datetime) -> int:
    """A revision being read by gpu-node-7, its claim last renewed at ``holder_now`` by its clock (120 s ahead)."""
    with store.session() as session:
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.77", study_key="r" * 16, accession="RTACC000078")
        revision = Revision(study=study, number=1, state=RevisionState.PROCESSING, attempts=1, claimed_by=WORKER,
                            claim_expires_at=holder_now + timedelta(seconds=120))  # fmt: skip
        session.add_all([study, revision])
        session.flush()
        return revision.id


def _renew_read(store: Store, revision_id: int, holder_now: datetime) -> None:
    with store.session() as session:
        session.execute(
            sa.update(Revision)
            .where(Revision.id == revision_id)
            .values(claim_expires_at=holder_now + timedelta(seconds=120))
        )


def _claim_expires(store: Store, revision_id: int) -> datetime | None:
    with store.session() as session:
        return session.scalar(sa.select(Revision.claim_expires_at).where(Revision.id == revision_id))


@SKEWS
def test_a_read_by_another_host_is_released_50_s_after_its_beat_stopped_never_while_it_beats(
    passes: Passes, skew_s: float
) -> None:
    """gpu-node-7 renews every 40 s for 2 minutes (passes every 5 s here): never released, its clock 10 minutes off
    ours. Then it stops: its claim seen unchanged for 49.9 s is kept, for 50 s (40 s beat + 10 s slack) released: its
    claim expires now, by the database's clock, for a worker here to take it over (audited naming it)."""
    skew = timedelta(seconds=skew_s)
    revision_id = _read_by_other_host(passes.store, passes.now + skew)
    for tick in range(24):
        if tick and tick % 8 == 0:  # a beat every 40 s
            _renew_read(passes.store, revision_id, passes.now + skew)
        looked = passes.look()
        assert looked.revisions == [], tick
        assert looked.look_again_at is not None
        assert looked.look_again_at - passes.now <= timedelta(seconds=dead_claims.SIGHTINGS_GAP_S)
        passes.advance(5.0)
    last_beat = passes.now - timedelta(seconds=5 * 8) + skew  # tick 16, 40 s ago: seen since
    for step in (0.0, 5.0, 4.9):
        passes.advance(step)
        assert passes.look().revisions == []
    passes.advance(0.1)
    [released] = passes.look().revisions
    assert released[0] == revision_id
    assert passes.look().revisions == []  # released once
    expired = _claim_expires(passes.store, revision_id)
    assert expired is not None
    assert expired <= utc_now()  # expired now by the database's clock, the one take-overs judge it on
    with passes.store.session() as session:
        [payload] = session.scalars(
            sa.select(AuditEventRow.payload).where(AuditEventRow.event_type == "inference_failed")
        ).all()
    details = json.loads(payload)
    assert (details["released_claim_of"], details["released_by_host"]) == (WORKER, socket.gethostname())
    expires = last_beat + timedelta(seconds=120)
    assert (
        f"claimed by worker {WORKER}, whose heartbeat stopped (its claim last renewed until {expires:%H:%M:%S} UTC"
        in (details["error"])
    )
    assert (
        f"by the database's clock), as seen from {socket.gethostname()}: the same claim seen for 50 s"
        in (details["error"])
    )


#: A dispatcher under this host's name but of another boot: perhaps another machine given the same host name (two
#: nodes whose containers are named alike), whose clock is its own.
OTHER_BOOT = claims.claim_text(f"radtrace@{socket.gethostname()}:4242", 4026531836,
                               "0b7c2f4e-1d2a-4c55-9a3e-000000000000", 123456) + " claim=ef56ab"  # fmt: skip


def _claimed_by_other_boot(store: Store, holder_now: datetime) -> int:
    """As :func:`_claimed`, by a dispatcher of another boot under this host name; its lease on the database's clock."""
    outbox_id = _claimed(store, holder_now)
    with store.session() as session:
        session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == outbox_id)
                        .values(claimed_by=OTHER_BOOT, next_attempt_at=utc_now() + timedelta(seconds=300)))  # fmt: skip
    return outbox_id


@SKEWS
def test_a_holder_of_another_boot_under_this_host_name_is_judged_by_sightings_not_by_this_hosts_clock(
    passes: Passes, skew_s: float
) -> None:
    """Its beats are written from its clock, 10 minutes off ours. Before, its beat was compared with this host's clock:
    behind, a live holder renewing every 5 s was released (its beat 600 s "overdue", the same beat seen by two passes
    3 s apart) and its ORU sent twice; ahead, a dead one was kept for 10 minutes. Now: live, never released; its beat
    stopped, released after 15 s of sightings."""
    skew = timedelta(seconds=skew_s)
    outbox_id = _claimed_by_other_boot(passes.store, passes.now + skew)
    for tick in range(30):  # 60 s alive: a beat every 6 s (passes every 2 s)
        if tick and tick % 3 == 0:
            _renew(passes.store, outbox_id, passes.now + skew)
        assert passes.look().deliveries == [], tick
        passes.advance(2.0)
    _renew(passes.store, outbox_id, passes.now + skew)  # its last beat
    for step in (0.0, 5.0, 5.0, 4.9):  # then it stops
        passes.advance(step)
        assert passes.look().deliveries == []
    passes.advance(0.1)
    assert passes.look().deliveries == [outbox_id]
    row = _row(passes.store, outbox_id)
    assert "another boot under this host name" in str(row.last_error)
