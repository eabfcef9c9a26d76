"""A reconciler pass (the first one as a dispatcher or GPU worker starts) releases at once the claims of a process of
this host that provably ended, and only those: before, a dispatcher killed -9 mid-send left its delivery claimed for
its 300 s lease plus a reconciler pass (~6 minutes), a GPU worker its revisions for ``broker.claim_timeout_s``.

Here with claims written as a dispatcher and a worker write them, and processes that are real: a pid nobody has, a
live unrelated process that has the pid since before the claim (not released: it may be the holder), one that
started after the claim (the pid was reused: released), and a holder named on another host (never released early).
The kill -9 of a real ``radtrace worker`` is in test_dead_claims_kill.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
import sqlalchemy as sa

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import load_settings
from radtrace.reporting.dispatch import claims
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Job, JobState, OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.liveness import claimer_gone, process_started_at
from radtrace.worker.reconciler import Reconciler

pytestmark = pytest.mark.integration

HOST = socket.gethostname()
LEASE = timedelta(seconds=300)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process (not radtrace) that lives for the test."""
    child = subprocess.Popen(["sleep", "120"])
    yield child
    child.kill()
    child.wait()


class Site:
    def __init__(self, tmp_path: Path, store: Store) -> None:
        self.store = store
        self.settings = load_settings(data_dir=tmp_path / "radtrace", store={"url": str(store.engine.url)})
        self.rung_dispatch: list[int] = []
        self.rung_process: list[tuple[str, int]] = []
        self.reconciler = Reconciler(
            self.settings, store,
            ring_process=lambda uid, number, priority: self.rung_process.append((uid, number)) is None,
            ring_dispatch=lambda outbox_id: self.rung_dispatch.append(outbox_id) is None,
        )  # fmt: skip
        self._studies = 0

    def _revision(self, state: RevisionState, **values: object) -> tuple[int, str]:
        self._studies += 1
        uid = f"1.2.826.0.1.3680043.8.498.7700{self._studies}"
        with self.store.session() as session:
            study = Study(study_uid=uid, study_key=f"deadclaims{self._studies:06d}", accession=f"ACC{self._studies}")
            revision = Revision(study=study, number=1, state=state, **values)
            session.add_all([study, revision])
            session.flush()
            return revision.id, uid

    def claimed_delivery(
        self,
        process: str,
        claimed_at: datetime,
        *,
        beat_s_ago: float = 30.0,
        start: int | None = None,
        pid_ns: int | str | None = "here",
    ) -> int:
        """An ORU row as a dispatcher leaves it when it dies mid-send: attempt 1 claimed by ``process`` (started at
        ``start`` ticks, in this PID namespace and boot unless ``pid_ns`` says another), its heartbeat last renewed
        ``beat_s_ago`` (past its 5 s beat and the 10 s slack by default), ``dispatch_attempted``."""
        revision_id, uid = self._revision(RevisionState.REPORTED)
        ns, boot = claims.namespace()
        claimed_by = claims.claim_text(process, ns if pid_ns == "here" else pid_ns, boot, start)  # type: ignore[arg-type]
        with self.store.session() as session:
            row = OutboxMessage(revision_id=revision_id, kind="hl7", destination="127.0.0.1:60123", payload_path="x",
                                payload_sha256="0" * 64, state=OutboxState.PENDING, attempts=1,
                                next_attempt_at=claimed_at + LEASE, claimed_by=claimed_by,
                                heartbeat_at=utc_now() - timedelta(seconds=beat_s_ago))  # fmt: skip
            session.add(row)
            session.flush()
            outbox_id = row.id
        with mock.patch("radtrace.audit.recorder.utc_now", return_value=claimed_at):  # audited as it was claimed
            AuditRecorder(self.store).record(
                AuditEvent(EventType.DISPATCH_ATTEMPTED, Actor(process=process), study_uid=uid,
                           payload={"outbox_id": outbox_id, "kind": "hl7", "destination": "127.0.0.1:60123",
                                    "attempt": 1})
            )  # fmt: skip
        return outbox_id

    def claimed_revision(self, worker: str, claimed_at: datetime, *, renewed_s_ago: float = 60.0) -> int:
        """A revision as a GPU worker leaves it when it dies mid-read: processing under a live claim (120 s, last
        renewed ``renewed_s_ago``: past its 40 s heartbeat and the slack by default), its job."""
        expires = utc_now() + timedelta(seconds=120 - renewed_s_ago)
        revision_id, _ = self._revision(RevisionState.PROCESSING, attempts=1, claimed_by=worker,
                                        claim_expires_at=expires)  # fmt: skip
        with self.store.session() as session:
            session.add(Job(revision_id=revision_id, kind="process", attempt=1, state=JobState.RUNNING, worker=worker,
                            started_at=claimed_at))  # fmt: skip
        return revision_id

    def delivery(self, outbox_id: int) -> OutboxMessage:
        with self.store.session() as session:
            row = session.get(OutboxMessage, outbox_id)
            assert row is not None
            session.expunge(row)
            return row

    def revision(self, revision_id: int) -> Revision:
        with self.store.session() as session:
            row = session.get(Revision, revision_id)
            assert row is not None
            session.expunge(row)
            return row

    def released_events(self) -> list[tuple[str, str, dict[str, object]]]:
        with self.store.session() as session:
            rows = session.execute(sa.select(AuditEventRow.event_type, AuditEventRow.actor_process,
                                             AuditEventRow.payload).order_by(AuditEventRow.seq)).all()  # fmt: skip
        return [(kind, actor, json.loads(p)) for kind, actor, p in rows if "released_claim_of" in json.loads(p)]


@pytest.fixture
def site(tmp_path: Path, store: Store) -> Site:
    return Site(tmp_path, store)


def test_a_delivery_and_a_revision_claimed_by_a_pid_nobody_has_are_released_at_once(site: Site) -> None:
    dead = _dead_pid()
    claimed_at = utc_now() - timedelta(seconds=2)
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}:{dead}", claimed_at)
    revision_id = site.claimed_revision(f"{HOST}:{dead}", claimed_at)

    before = utc_now()
    done = site.reconciler.run_once(overdue_after_s=0)

    assert done.released == 2
    row = site.delivery(outbox_id)
    assert row.state is OutboxState.PENDING
    assert row.attempts == 1
    assert row.next_attempt_at <= utc_now()
    assert row.next_attempt_at >= before
    assert row.last_error is not None
    assert f"claimed by radtrace@{HOST}:{dead}, which is not running" in row.last_error
    assert site.rung_dispatch == [outbox_id]
    revision = site.revision(revision_id)
    assert revision.state is RevisionState.PROCESSING
    assert revision.claimed_by == f"{HOST}:{dead}"
    assert revision.claim_expires_at is not None
    assert revision.claim_expires_at <= utc_now()
    assert len(site.rung_process) == 1
    events = site.released_events()
    assert [kind for kind, _, _ in events] == ["dispatch_retry_scheduled", "inference_failed"]
    for _, actor, payload in events:  # who released what, and why
        assert actor.endswith(f"@{HOST}:{os.getpid()}")
        assert "which is not running" in str(payload["error"])
    assert f"claimed by worker {HOST}:{dead}, which is not running" in str(events[1][2]["error"])

    again = site.reconciler.run_once(overdue_after_s=0)  # released once
    assert again.released == 0
    assert len(site.released_events()) == 2


def test_a_live_unrelated_process_that_had_the_pid_before_the_claim_keeps_it(
    site: Site, live_process: subprocess.Popen[bytes]
) -> None:
    """It may be the holder (kill(pid, 0) answers, it started before the claim): the lease decides."""
    claimed_at = utc_now()
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}:{live_process.pid}", claimed_at,
                                      start=claims.start_ticks(live_process.pid))  # fmt: skip
    revision_id = site.claimed_revision(f"{HOST}:{live_process.pid}", claimed_at)

    assert site.reconciler.run_once(overdue_after_s=0).released == 0

    assert site.delivery(outbox_id).next_attempt_at == claimed_at + LEASE
    expires = site.revision(revision_id).claim_expires_at
    assert expires is not None
    assert expires > utc_now() + timedelta(seconds=40)  # as claimed (60 s left), not released (now)
    assert site.released_events() == []
    assert site.rung_dispatch == []
    assert site.rung_process == []


def test_a_pid_reused_by_a_process_started_after_the_claim_is_released(
    site: Site, live_process: subprocess.Popen[bytes]
) -> None:
    started = process_started_at(live_process.pid)
    assert started is not None
    assert abs((started - utc_now()).total_seconds()) < 60
    claimed_at = started - timedelta(seconds=30)  # the holder claimed; later its pid went to `sleep`
    ticks = claims.start_ticks(live_process.pid)
    assert ticks is not None
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}:{live_process.pid}", claimed_at, start=ticks - 3000)

    assert site.reconciler.run_once(overdue_after_s=0).released == 1

    assert site.delivery(outbox_id).next_attempt_at <= utc_now()
    reason = str(site.released_events()[0][2]["error"])
    assert f"which is not running (pid {live_process.pid} is now another process)" in reason


def test_claims_of_a_process_on_another_host_are_never_released_early(site: Site) -> None:
    dead = _dead_pid()  # not running here; on the other host it may be
    claimed_at = utc_now() - timedelta(seconds=60)
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}-other:{dead}", claimed_at)
    revision_id = site.claimed_revision(f"{HOST}.example.org:{dead}", claimed_at)  # the FQDN is another name

    assert site.reconciler.run_once(overdue_after_s=0).released == 0

    assert site.delivery(outbox_id).next_attempt_at == claimed_at + LEASE
    assert site.revision(revision_id).claim_expires_at > utc_now()  # type: ignore[operator]
    assert site.released_events() == []
    assert claimer_gone(f"radtrace@{HOST}-other:{dead}", claimed_at) is None
    assert claimer_gone(f"radtrace@{HOST}:{dead}", claimed_at) == "which is not running"


def test_a_claim_of_this_very_process_is_kept(site: Site) -> None:
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}:{os.getpid()}", utc_now(), start=claims.start_ticks("self"))
    time.sleep(0.01)
    assert site.reconciler.run_once(overdue_after_s=0).released == 0
    assert site.delivery(outbox_id).next_attempt_at > utc_now()


def test_a_revision_claim_its_holder_still_renews_is_kept_though_its_pid_is_not_seen(site: Site) -> None:
    """A worker in another PID namespace under the same host name (a container on the host's network) has a pid this
    process cannot see: its claim, renewed by its heartbeat, is not released (each pass would otherwise hand a live
    read to another worker, again and again)."""
    unseen = _dead_pid()
    claimed_at = utc_now() - timedelta(seconds=2)
    revision_id = site.claimed_revision(f"{HOST}:{unseen}", claimed_at, renewed_s_ago=20)  # within its 40 s beat
    expires = site.revision(revision_id).claim_expires_at

    done = site.reconciler.run_once(overdue_after_s=0)

    assert done.released == 0
    assert site.revision(revision_id).claim_expires_at == expires
    assert site.released_events() == []


def test_a_delivery_claim_its_holder_still_renews_is_kept_though_its_pid_is_not_seen_then_released_once_it_stops(
    site: Site,
) -> None:
    """A dispatcher in another PID namespace under the same host name (a container on the host's network) has a pid
    this process cannot see: while its heartbeat is renewed its send is not released (before 0014 it was, at once, and
    sent twice); once the heartbeat is 10 s overdue and a pass 3 s later finds the same beat it is, saying why, and the
    reconciler is told when to look."""
    unseen = _dead_pid()
    claimed_at = utc_now() - timedelta(seconds=40)
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}:{unseen}", claimed_at, beat_s_ago=3, pid_ns=4026530000,
                                      start=12345)  # fmt: skip

    done = site.reconciler.run_once(overdue_after_s=0)

    assert done.released == 0
    assert site.delivery(outbox_id).next_attempt_at == claimed_at + LEASE
    assert site.released_events() == []
    look_again = site.reconciler.look_again_at
    assert look_again is not None  # when the beat it saw would be overdue: 5 + 10 s after it
    assert utc_now() + timedelta(seconds=9) < look_again < utc_now() + timedelta(seconds=13)

    with site.store.session() as session:  # it stopped renewing: its last beat is now 16 s old
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        row.heartbeat_at = utc_now() - timedelta(seconds=16)

    # Seen overdue: released only if a pass 3 s later finds the same beat (the database may just be back, and the
    # holder's retried beat about to land: test_dispatch_heartbeat_outage.py).
    assert site.reconciler.run_once(overdue_after_s=0).released == 0
    look_again = site.reconciler.look_again_at
    assert look_again is not None
    assert utc_now() + timedelta(seconds=2) < look_again < utc_now() + timedelta(seconds=3.5)
    site.reconciler.clock = lambda: utc_now() + timedelta(seconds=claims.CONFIRM_OVERDUE_S)
    assert site.reconciler.run_once(overdue_after_s=0).released == 1

    row = site.delivery(outbox_id)
    assert row.next_attempt_at <= utc_now() + timedelta(seconds=claims.CONFIRM_OVERDUE_S)
    assert (row.claimed_by, row.heartbeat_at, row.attempts) == (None, None, 1)
    assert site.rung_dispatch == [outbox_id]
    [(_, _, payload)] = site.released_events()
    assert payload["released_claim_of"] == f"radtrace@{HOST}:{unseen}"
    assert "pidns=4026530000" in str(payload["claimed_by"])
    assert "whose heartbeat stopped at" in str(payload["error"])
    assert "another PID namespace or boot under this host name" in str(payload["error"])


def test_a_dead_pid_of_this_namespace_is_released_at_once_its_heartbeat_fresh(site: Site) -> None:
    """Killed a moment ago (its last beat 2 s old), in this PID namespace and boot: provably not sending, released by
    the first pass; the same pid in a claim of another namespace is not (its heartbeat decides)."""
    dead = _dead_pid()
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}:{dead}", utc_now(), beat_s_ago=2)
    elsewhere = site.claimed_delivery(f"radtrace@{HOST}:{dead}", utc_now(), beat_s_ago=2, pid_ns=4026530000)

    assert site.reconciler.run_once(overdue_after_s=0).released == 1
    assert f"claimed by radtrace@{HOST}:{dead}, which is not running" in str(site.delivery(outbox_id).last_error)
    assert site.delivery(elsewhere).claimed_by is not None


def test_a_delivery_claimed_before_the_heartbeat_is_left_to_its_lease(site: Site) -> None:
    """A row claimed by a dispatcher of before migration 0014 names no holder: nothing tells whether it still sends."""
    dead = _dead_pid()
    claimed_at = utc_now() - timedelta(seconds=60)
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}:{dead}", claimed_at)
    with site.store.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        row.claimed_by, row.heartbeat_at = None, None

    assert site.reconciler.run_once(overdue_after_s=0).released == 0
    assert site.delivery(outbox_id).next_attempt_at == claimed_at + LEASE


def test_a_live_holder_of_this_namespace_sending_on_has_the_reconciler_look_again_within_10_s(site: Site) -> None:
    """Kept (it sends), but a kill -9 of it would be found at the next look, in 10 s, not a whole interval later."""
    outbox_id = site.claimed_delivery(f"radtrace@{HOST}:{os.getpid()}", utc_now(), beat_s_ago=1,
                                      start=claims.start_ticks("self"))  # fmt: skip
    assert site.reconciler.run_once(overdue_after_s=0).released == 0
    assert site.delivery(outbox_id).claimed_by is not None
    look_again = site.reconciler.look_again_at
    assert look_again is not None
    assert utc_now() + timedelta(seconds=8) < look_again <= utc_now() + timedelta(seconds=10)
