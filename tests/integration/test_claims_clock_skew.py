"""Claims and leases expire on the database's clock, never on a node's wall clock (several nodes on one database).

A study read is claimed for ``broker.claim_timeout_s``, a PACS/RIS delivery for a lease of 300 s or more. Before,
the expiry was written from the holder's wall clock and judged on the taker's: a node whose clock ran more than the
claim ahead took over a claim that was live on another node (a second reading; a second ORU to the RIS), and a node
behind held a dead node's claim up for as long as it was behind. Here one node's clock is 10 minutes off (an injected
clock, as a VM restored from a snapshot has), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings, MllpDestination, Settings, load_settings
from radtrace.reporting.dispatch.outbox import KIND_HL7, Outbox, planned_deliveries
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.attempts import ProcessResult, RevisionAttempts
from radtrace.worker.claims import Claim
from reporting_support import reported_revision, typical_report_files
from worker_support import Unobserved

pytestmark = pytest.mark.integration

TEN_MINUTES = timedelta(minutes=10)
CLAIM_TIMEOUT_S = 2.0


def skewed(offset: timedelta) -> Callable[[], datetime]:
    """A node's wall clock, ``offset`` off the true time."""
    return lambda: datetime.now(UTC) + offset


def _settings(tmp_path: Path, store: Store) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    return load_settings(data_dir=tmp_path / "radtrace", store={"url": url},
                         broker={"claim_timeout_s": CLAIM_TIMEOUT_S})  # fmt: skip


def _worker(settings: Settings, store: Store, name: str, clock: Callable[[], datetime]) -> RevisionAttempts:
    return RevisionAttempts(settings, store, AuditRecorder(store), actor=Actor(), worker=name, clock=clock,
                            observer=Unobserved())  # fmt: skip


def _queued(store: Store) -> str:
    with store.session() as session:
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.4711", study_key="s" * 16, accession="RTACC000471")
        session.add_all([study, Revision(study=study, number=1, state=RevisionState.QUEUED)])
    return "1.2.826.0.1.3680043.8.498.4711"


def _holder(store: Store) -> str | None:
    with store.session() as session:
        return session.scalar(sa.select(Revision.claimed_by))


@pytest.mark.parametrize("taker_offset", [TEN_MINUTES, -TEN_MINUTES], ids=["taker-ahead", "taker-behind"])
def test_a_live_read_is_not_taken_over_by_a_node_whose_clock_is_ahead_and_a_dead_one_is_whatever_its_clock(
    tmp_path: Path, store: Store, taker_offset: timedelta
) -> None:
    """gpu-1 (clock right) claims a read; gpu-2, its clock 10 minutes ahead (before: took the live claim over at
    once) or behind (before: waited 10 minutes more once gpu-1 was dead), leaves it while it is live and takes it over
    once it has expired by the database's clock."""
    settings = _settings(tmp_path, store)
    study_uid = _queued(store)
    first = _worker(settings, store, "gpu-1:101", skewed(timedelta(0))).claim(study_uid, 1)
    assert isinstance(first, Claim)
    taker = _worker(settings, store, "gpu-2:202", skewed(taker_offset))
    live = taker.claim(study_uid, 1)
    assert isinstance(live, ProcessResult)
    assert _holder(store) == "gpu-1:101"

    time.sleep(CLAIM_TIMEOUT_S + 0.3)  # gpu-1 died: no renewal
    taken = taker.claim(study_uid, 1)
    assert isinstance(taken, Claim), taken
    assert (taken.attempt, _holder(store)) == (2, "gpu-2:202")


@pytest.mark.parametrize("holder_offset", [TEN_MINUTES, -TEN_MINUTES], ids=["holder-ahead", "holder-behind"])
def test_a_holders_clock_neither_shortens_nor_stretches_its_claim(
    tmp_path: Path, store: Store, holder_offset: timedelta
) -> None:
    """gpu-1's clock is 10 minutes behind (before: its claim was written already expired, and gpu-2 took the live read
    over at once) or ahead (before: once dead, its claim held the study up for 10 minutes more): its claim lasts the
    claim timeout, renewed by its heartbeat, whatever its clock."""
    settings = _settings(tmp_path, store)
    study_uid = _queued(store)
    holder = _worker(settings, store, "gpu-1:101", skewed(holder_offset))
    claim = holder.claim(study_uid, 1)
    assert isinstance(claim, Claim)
    taker = _worker(settings, store, "gpu-2:202", skewed(timedelta(0)))
    assert isinstance(taker.claim(study_uid, 1), ProcessResult)
    time.sleep(CLAIM_TIMEOUT_S * 2 / 3)
    assert holder.renew(claim)  # its heartbeat
    time.sleep(CLAIM_TIMEOUT_S * 2 / 3)  # past the first claim's end: renewed, live
    assert isinstance(taker.claim(study_uid, 1), ProcessResult)
    assert _holder(store) == "gpu-1:101"

    time.sleep(CLAIM_TIMEOUT_S + 0.3)  # no more beats
    taken = taker.claim(study_uid, 1)
    assert isinstance(taken, Claim), taken
    assert _holder(store) == "gpu-2:202"


@pytest.mark.parametrize(
    ("holder_offset", "taker_offset"),
    [(timedelta(0), TEN_MINUTES), (-TEN_MINUTES, timedelta(0))],
    ids=["taker-ahead", "holder-behind"],
)
def test_a_delivery_in_flight_is_not_sent_again_by_a_node_whose_clock_is_ahead(
    tmp_path: Path, store: Store, holder_offset: timedelta, taker_offset: timedelta
) -> None:
    """node-1 sends an ORU (its RIS slow to ACK); node-2, its clock 10 minutes ahead of node-1's, runs its dispatcher
    pass meanwhile. Before, the 300 s lease written from node-1's clock had run out by node-2's, and node-2 sent the
    same ORU a second time while the first still waited for its ACK."""
    settings = DispatchSettings(ris=MllpDestination(host="127.0.0.1", port=2575, timeout_s=30))
    sending, acked, sent = threading.Event(), threading.Event(), []

    def slow_ris(destination: str, payload: bytes) -> str:
        sent.append(payload)
        sending.set()
        assert acked.wait(60)
        return "AA"

    def dispatcher(offset: timedelta) -> Outbox:
        return Outbox(store, AuditRecorder(store), settings, tmp_path / "payloads", senders={KIND_HL7: slow_ris},
                      clock=skewed(offset))  # fmt: skip

    node_1, node_2 = dispatcher(holder_offset), dispatcher(taker_offset)
    [outbox_id] = node_1.enqueue(reported_revision(store, "d" * 16, "RTACC000472")[0],
                                 planned_deliveries(settings, typical_report_files()))  # fmt: skip
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(node_1.deliver(outbox_id)))
    thread.start()
    try:
        assert sending.wait(60)
        assert node_2.due() == []
        assert [delivery.attempted for delivery in node_2.deliver_due()] == []
        assert node_2.deliver(outbox_id).attempted is False
    finally:
        acked.set()
        thread.join(60)
    with store.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        assert (row.state, row.attempts) == (OutboxState.DELIVERED, 1)
    assert len(sent) == 1
