"""``radtrace status`` judges leases and claims on the database's clock, so a node 10 minutes off shows them right.

A delivery's lease (``next_attempt_at`` while claimed) and a revision's ``claim_expires_at`` are written on the
database's clock (claims.database_now). Here the node collecting the status has a clock 10 minutes ahead or behind
(``collect_status(now=...)``, as the other clock tests inject it), on SQLite and on PostgreSQL.

Before: a node ahead left out a delivery whose lease had 5 minutes to run (not in flight: its lease looked over) and
said a worker's claim had expired 695 s ago instead of 95 s; a node behind showed a delivery whose lease had ended a
minute ago as still in flight, and no note at all for the study whose worker's claim ran out (its expiry looked ahead).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import load_settings
from radtrace.reporting.dispatch import claims
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.status import collect_status
from reporting_support import reported_revision

pytestmark = pytest.mark.integration

TEN_MINUTES = timedelta(minutes=10)
OTHER_NODE = "radtrace@dispatch-2:4242 pidns=1 boot=b start=1 claim=0123456789ab"


def _delivery(store: Store, revision_id: int, uid: str, lease_left_s: float, port: int) -> int:
    """A delivery claimed by another node's dispatcher, its lease ending ``lease_left_s`` from now by the database's
    clock, its ``dispatch_attempted`` audited."""
    with store.session() as session:
        lease = claims.database_now(session) + timedelta(seconds=lease_left_s)
        row = OutboxMessage(revision_id=revision_id, kind="hl7", destination=f"127.0.0.1:{port}", payload_path="x",
                            payload_sha256="0" * 64, state=OutboxState.PENDING, attempts=1, next_attempt_at=lease,
                            claimed_by=OTHER_NODE, heartbeat_at=lease)  # fmt: skip
        session.add(row)
        session.flush()
        outbox_id = row.id
    AuditRecorder(store).record(
        AuditEvent(EventType.DISPATCH_ATTEMPTED, Actor(process="radtrace@dispatch-2:4242"), study_uid=uid,
                   payload={"outbox_id": outbox_id, "kind": "hl7", "destination": f"127.0.0.1:{port}", "attempt": 1})
    )  # fmt: skip
    return outbox_id


@pytest.mark.parametrize("offset", [TEN_MINUTES, -TEN_MINUTES], ids=["node-ahead", "node-behind"])
def test_status_shows_leases_and_claims_by_the_databases_clock(tmp_path: Path, store: Store, offset: timedelta) -> None:
    settings = load_settings(data_dir=tmp_path / "radtrace",
                             store={"url": store.engine.url.render_as_string(hide_password=False)})  # fmt: skip
    revision_id, uid = reported_revision(store, "statusclock00001", "RTACC-CLOCK")
    live = _delivery(store, revision_id, uid, lease_left_s=300, port=2575)
    ended = _delivery(store, revision_id, uid, lease_left_s=-60, port=2576)
    with store.session() as session:  # a worker's claim that ran out 95 s ago; its study waits longest
        database_now = claims.database_now(session)
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.77123", study_key="statusclock00002", accession="RTACC-C2")
        session.add_all([study, Revision(study=study, number=1, state=RevisionState.PROCESSING, attempts=1,
                                         opened_at=database_now - timedelta(hours=1), claimed_by="gpu0@gpu-host:101",
                                         claim_expires_at=database_now - timedelta(seconds=95))])  # fmt: skip

    with store.session() as session:
        node_now = claims.database_now(session) + offset
    status = collect_status(settings, store, with_queues=False, now=node_now)

    flights = {flight.outbox_id: flight for flight in status.in_flight}
    assert sorted(flights) == [live], (offset, sorted(flights), ended)
    left = flights[live].lease_left_s
    assert left is not None
    assert 280 <= left <= 300, left  # its lease's age by the database's clock
    assert status.as_json()["in_flight"][0]["lease_left_s"] == left  # type: ignore[index]
    assert status.oldest_waiting is not None
    reason = status.oldest_waiting.reason or ""
    found = re.search(r"whose claim expired at \S+ UTC \((\d+) s ago\)", reason)
    assert found is not None, reason
    assert 95 <= int(found[1]) <= 115, reason
    with store.session() as session:  # nothing of it was written
        assert session.scalar(sa.select(sa.func.count()).where(OutboxMessage.claimed_by.is_not(None))) == 2
