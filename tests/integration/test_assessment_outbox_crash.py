"""kill -9 between an outbox payload file and the rows that name it: nothing lost, nothing sent twice.

A child process queues a payload, through the worker's ``Outbox.enqueue`` (a draft) or a decision's
``Outbox.add_assessments`` kept after the commit (a radiologist's assessment SR), and kills itself with SIGKILL
either inside the transaction (before the rows commit) or after the commit, before the payload file is moved to
where it is kept. The next dispatcher (this process: ``deliver_due``, its reconcile loop) must then find either
no row and no file left behind (the decision was never recorded), or the row delivered once with the exact bytes
(the pending file taken over). Before, the payload was written in place first: a kill before the commit left a
file that no row names, forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DicomDestination, DispatchSettings
from radtrace.reporting.dispatch.outbox import KIND_ASSESSMENT, KIND_SR, Outbox
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study

pytestmark = pytest.mark.integration

PACS = DicomDestination(ae_title="PACS", host="127.0.0.1", port=11112)
PAYLOAD = b"DICM the report's bytes " * 40

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from radtrace.audit.recorder import AuditRecorder
    from radtrace.config import DicomDestination, DispatchSettings
    from radtrace.reporting.dispatch import outbox as module
    from radtrace.store import pending_files
    from radtrace.store.engine import Store

    url, payload_dir, path, point, revision_id = sys.argv[1:6]
    store = Store.from_url(url)
    settings = DispatchSettings(pacs=[DicomDestination(ae_title="PACS", host="127.0.0.1", port=11112)])
    outbox = module.Outbox(store, AuditRecorder(store), settings, Path(payload_dir))
    payload = b"DICM the report's bytes " * 40

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if path == "enqueue":
        if point == "before_commit":
            AuditRecorder.record = die  # report_created is recorded in the enqueue's transaction, before its commit
        else:
            pending_files.promote = die
        outbox.enqueue(int(revision_id), [module.PlannedDelivery(module.KIND_SR, "PACS@127.0.0.1:11112", payload)])
    else:
        staged = outbox.staged()
        with store.session(immediate=True) as session:
            outbox.add_assessments(session, int(revision_id), "1.2.826.0.1.3680043.10.1023.7", payload, staged=staged)
            if point == "before_commit":
                die()
        die()  # committed; the decision's files not kept yet
    """
)


def _revision(store: Store) -> int:
    with store.session() as session:
        study = Study(study_uid="1.2.826.0.1.3680043.10.1023.1", study_key="k" * 16)
        session.add(study)
        session.flush()
        revision = Revision(study_id=study.id, number=1, state=RevisionState.REPORTED)
        session.add(revision)
        session.flush()
        return revision.id


@pytest.mark.parametrize(
    ("path", "point"),  # the enqueue keeps its files as a decision does (StagedPayloads.keep): one kill after is enough
    [("enqueue", "before_commit"), ("assessment", "before_commit"), ("assessment", "before_keep")],
)
def test_a_kill_between_the_payload_and_its_rows_loses_nothing_and_sends_once(
    tmp_path: Path, path: str, point: str
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    revision_id = _revision(store)
    payload_dir = tmp_path / "outbox"
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(store.engine.url), str(payload_dir), path, point, str(revision_id)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    pending = list((payload_dir / ".pending").iterdir())
    assert len(pending) == 1  # the killed child left its payload pending, never in place
    assert not [p for p in payload_dir.rglob("*") if p.is_file() and ".pending" not in p.parts]

    sent: list[bytes] = []

    def pacs(destination: str, payload: bytes) -> str | None:
        sent.append(payload)
        return None

    kind = KIND_SR if path == "enqueue" else KIND_ASSESSMENT
    settings = DispatchSettings(pacs=[PACS])
    outbox = Outbox(store, AuditRecorder(store), settings, payload_dir, senders={kind: pacs})
    if point == "before_keep":  # a dispatcher at once: the committed row takes its pending file
        assert [d.state for d in outbox.deliver_due()] == [OutboxState.DELIVERED]
    old = time.time() - 3600  # a start-up after the crash: a pending file left is old by now
    for file in (payload_dir / ".pending").iterdir():
        os.utime(file, (old, old))
    for _ in range(2):
        outbox.deliver_due()
    with store.session() as session:
        rows = session.execute(sa.select(OutboxMessage.state, OutboxMessage.payload_path)).all()
    assert list((payload_dir / ".pending").iterdir()) == []
    kept = [p for p in payload_dir.rglob("*") if p.is_file()]
    if point == "before_commit":  # no row was committed: nothing is sent, the file is gone
        assert (rows, kept, sent) == ([], [], [])
    else:
        assert rows == [(OutboxState.DELIVERED, rows[0].payload_path)]
        assert kept == [payload_dir / rows[0].payload_path]
        assert kept[0].read_bytes() == PAYLOAD
        assert sent == [PAYLOAD]
    store.dispose()


def test_a_dispatcher_delivering_rows_removes_a_payload_no_row_names(tmp_path: Path) -> None:
    """The worker's dispatch delivers row by row (no deliver_due): a pending payload left by a crash before its
    commit goes at its next delivery, once it is older than a decision still being recorded could be."""
    from radtrace.reporting.dispatch.outbox import PlannedDelivery
    from radtrace.store.pending_files import write_pending

    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    revision_id = _revision(store)
    payload_dir = tmp_path / "outbox"
    orphan = write_pending(payload_dir, f"{'ab' * 32}.dcm~0123456789abcdef", b"a crashed enqueue's payload")
    young = write_pending(payload_dir, f"{'cd' * 32}.dcm~0123456789abcdef", b"a decision being recorded")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    outbox = Outbox(store, AuditRecorder(store), DispatchSettings(pacs=[PACS]), payload_dir,
                    senders={KIND_SR: lambda destination, payload: None})  # fmt: skip
    [row_id] = outbox.enqueue(revision_id, [PlannedDelivery(KIND_SR, "PACS@127.0.0.1:11112", PAYLOAD)])
    assert orphan.exists()
    assert outbox.deliver(row_id).state is OutboxState.DELIVERED
    assert (orphan.exists(), young.exists()) == (False, True)
    store.dispose()
