"""A delivery whose every send kills its dispatcher (kill -9 mid-send: an OOM kill, a node lost, a peer whose answer
crashes the process) still ends: ``failed`` with its reason once ``dispatch.max_attempts`` attempts were made, never
sent again and again.

Each claim counts an attempt, and the dead-claim release (:mod:`radtrace.worker.dead_claims`) makes the row due again
at once, as its lease running out would. Before, the claim never looked at the count: every release was followed by
one more send, for ever (here: 4 sends and 4 kills with ``max_attempts`` 2, the row still pending at attempt 4), and
neither the revision nor the console ever said that the draft would not arrive.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mllp_support import MllpReceiver, mllp_receiver
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import DispatchSettings, MllpDestination
from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles, planned_deliveries
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.dead_claims import release_dead_claims

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 2
#: One dispatcher per round, killed once its ORU reached the RIS; the rounds a fixed outbox needs are MAX_ATTEMPTS + 1
#: (the last ends the row without sending): two more would be sends past the limit.
ROUNDS = MAX_ATTEMPTS + 2

DISPATCHER = """
import sys
from pathlib import Path
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings, MllpDestination
from radtrace.reporting.dispatch.outbox import Outbox
from radtrace.store.engine import Store

url, payloads, host, port, outbox_id, max_attempts = sys.argv[1:]
store = Store.from_url(url)
settings = DispatchSettings(ris=MllpDestination(host=host, port=int(port), timeout_s=120),
                            max_attempts=int(max_attempts))
delivery = Outbox(store, AuditRecorder(store), settings, Path(payloads)).deliver(int(outbox_id))
print(delivery.state.value, delivery.attempts, flush=True)
"""


def _settings(ris: MllpReceiver) -> DispatchSettings:
    return DispatchSettings(ris=MllpDestination(host=ris.host, port=ris.port, timeout_s=120), max_attempts=MAX_ATTEMPTS)


#: The ORU as the RIS gets it (its content does not matter here: the RIS never answers it).
ORU = (
    b"MSH|^~\\&|RADTRACE|H|RIS|H|20261206||ORU^R01^ORU_R01|RT-killed-every-send|P|2.5.1\r"
    b"OBR|1|||18748-4^Diagnostic imaging study^LN\rOBX|1|TX|IMP^Impression||AI draft, not verified||||||P\r"
)


def _enqueue(store: Store, outbox: Outbox, settings: DispatchSettings) -> int:
    with store.session() as session:
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.90011", study_key="k" * 16, accession="RTACC000009")
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        revision_id = revision.id
    reports = ReportFiles("1.2.826.0.1.3680043.8.498.90012", b"", hl7=ORU)
    [outbox_id] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))
    return outbox_id


def _row(store: Store, outbox_id: int) -> OutboxMessage:
    with store.session() as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        session.expunge(row)
        return row


def _round(
    store: Store,
    ris: MllpReceiver,
    payloads: Path,
    outbox_id: int,
    max_attempts: int = MAX_ATTEMPTS,
    release: bool = True,
) -> str:
    """Start a dispatcher for the row; kill -9 it once the RIS got one more ORU, and release its claim as the next
    dispatcher's reconciler pass would (``release``; else the claim is left to its lease). Returns 'killed', or what
    the dispatcher printed when it ended by itself."""
    before = len(ris.received)
    with subprocess.Popen(
        [sys.executable, "-c", DISPATCHER, store.engine.url.render_as_string(hide_password=False), str(payloads),
         ris.host, str(ris.port), str(outbox_id), str(max_attempts)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as child:  # fmt: skip
        try:
            while len(ris.received) == before:
                if child.poll() is not None:
                    out, err = child.communicate()
                    assert child.returncode == 0, err.decode(errors="replace")[-3000:]
                    return out.decode().strip()
                time.sleep(0.02)
        finally:
            os.kill(child.pid, signal.SIGKILL) if child.poll() is None else None
            child.communicate(timeout=10)
    if release:
        released = release_dead_claims(store, AuditRecorder(store), utc_now(), claim_timeout_s=120)
        assert released.deliveries == [outbox_id]
    return "killed"


def test_a_delivery_whose_every_send_kills_its_dispatcher_fails_after_max_attempts_with_its_reason(
    store: Store, tmp_path: Path
) -> None:
    with mllp_receiver(["silent"]) as ris:
        settings = _settings(ris)
        outbox = Outbox(store, AuditRecorder(store), settings, tmp_path / "payloads")
        outbox_id = _enqueue(store, outbox, settings)
        rounds = []
        for _ in range(ROUNDS):
            rounds.append(_round(store, ris, tmp_path / "payloads", outbox_id))
            if rounds[-1] != "killed":
                break
        sent = len(ris.received)
    row = _row(store, outbox_id)
    assert rounds == ["killed"] * MAX_ATTEMPTS + [f"failed {MAX_ATTEMPTS}"], rounds
    assert sent == MAX_ATTEMPTS
    assert row.state is OutboxState.FAILED
    assert row.attempts == MAX_ATTEMPTS
    assert row.claimed_by is None
    assert row.reached  # the killed sends may have reached the RIS: a withdrawal must still go there
    assert row.last_error is not None
    assert row.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts: attempt {MAX_ATTEMPTS} ended ")
    assert "which is not running" in row.last_error  # why it ended so: the release's words
    assert "sent again now" not in row.last_error
    with store.session() as session:
        events = [
            (kind, json.loads(payload))
            for kind, payload in session.execute(
                sa.select(AuditEventRow.event_type, AuditEventRow.payload).order_by(AuditEventRow.seq)
            )
        ]
    kinds = [kind for kind, payload in events if payload.get("outbox_id") == outbox_id]
    assert kinds == ["dispatch_attempted", "dispatch_retry_scheduled"] * MAX_ATTEMPTS + ["dispatch_failed"]
    [(_, failed)] = [(kind, payload) for kind, payload in events if kind == "dispatch_failed"]
    assert failed["error"] == row.last_error
    assert failed["attempt"] == MAX_ATTEMPTS


def test_a_last_attempt_whose_dispatcher_died_fails_once_its_lease_ran_out(store: Store, tmp_path: Path) -> None:
    """No release (the holder on another host nobody sighted, say): the claim's lease running out makes the row due;
    with its attempts spent it fails naming the holder, not sent again."""
    with mllp_receiver(["silent"]) as ris:
        settings = _settings(ris)
        outbox = Outbox(store, AuditRecorder(store), settings, tmp_path / "payloads")
        outbox_id = _enqueue(store, outbox, settings)
        first = _round(store, ris, tmp_path / "payloads", outbox_id, max_attempts=1, release=False)
        with store.session() as session:  # the lease (300 s and more on the database's clock) runs out
            session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == outbox_id)
                            .values(next_attempt_at=utc_now() - timedelta(seconds=1)))  # fmt: skip
        second = _round(store, ris, tmp_path / "payloads", outbox_id, max_attempts=1, release=False)
        sent = len(ris.received)
    row = _row(store, outbox_id)
    assert (first, second, sent) == ("killed", "failed 1", 1)
    assert row.claimed_by is None
    assert row.last_error is not None
    assert re.fullmatch(
        r"gave up after 1 attempts: attempt 1 ended without an outcome \(claimed by \S+@\S+:\d+, whose lease ran out: "
        r"its dispatcher stopped mid-send\); the peer may have the payload",
        row.last_error,
    ), row.last_error
