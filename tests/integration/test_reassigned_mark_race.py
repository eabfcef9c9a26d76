"""PostgreSQL: the listener's mark of a moved or rejected image cannot miss a revision the worker claims meanwhile.

The listener marks only the revisions the worker has claimed or finished (``have_read``): one still queued is read
later without the image. Under READ COMMITTED, the review (report-review item 3) feared this sequence: the listener's
marking UPDATE passes the revision over as queued; the worker's claim commits; the worker reads the study's
instances in a new session before the listener commits (the moved copy, or the rejection, not visible yet); then
the listener commits: the image read, the revision never marked. It cannot happen: the listener records its
instance event (taking the audit chain's transaction lock) before it marks, and a claim records
``inference_started`` in its own transaction, so the claim commits only after the listener does (test 1), and a
listener that comes while a claim is open waits for it, then marks the claimed revision (test 2). The suggested
``SELECT ... FOR UPDATE`` of the revisions in the listener would deadlock with the claim (the listener holding the
audit lock, waiting for the claim's row; the claim holding the row, waiting for the audit lock): not done.

Deterministic: the listener's transaction runs in a thread and, once it has marked, holds its commit until told;
the test waits for a thread to be done or waiting on a lock (pg_stat_activity), never for a time. SQLite serialises
all writes (BEGIN IMMEDIATE): PostgreSQL only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AUDIT_LOCK_KEY, AuditRecorder
from radtrace.config import load_settings
from radtrace.dicom_listener.headers import ReceivedHeader
from radtrace.dicom_listener.reassigned import HeldCopy, note_reassigned
from radtrace.dicom_listener.rejection_note import Rejection, note_rejection
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState
from radtrace.worker.attempts import RevisionAttempts
from radtrace.worker.claims import Claim
from radtrace.worker.read_instances import readable_instances
from reassigned_support import insert_instance, insert_study
from worker_support import Unobserved, wait_until

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 6, 7, 30, tzinfo=UTC)
STUDY_A, STUDY_B = "1.2.826.0.1.3680043.8.498.71", "1.2.826.0.1.3680043.8.498.72"
MOVED, KEPT = "1.2.826.0.1.3680043.8.498.71.1", "1.2.826.0.1.3680043.8.498.71.2"


def _header(study_uid: str, sop: str) -> ReceivedHeader:
    return ReceivedHeader(study_uid=study_uid, sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                          series_uid=None, transfer_syntax_uid="1.2.840.10008.1.2.1", modality="CR", body_part=None,
                          accession=None, study_description=None, patient_id="P2")  # fmt: skip


def _waiting_on_a_lock(store: Store) -> bool:
    with store.engine.connect() as connection:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return bool(connection.execute(sa.text(query)).scalar_one())


def _listener(pg_store: Store, mark: str, ids: dict[str, int]) -> Callable[[], None]:
    """The listener's transaction as ingest runs it: its instance event first (the audit lock), then the mark."""
    recorder, actor = AuditRecorder(pg_store), Actor(ae_title="PACS")

    def marks(session: Session) -> None:
        recorder.record(AuditEvent(EventType.INSTANCE_RECEIVED, actor, study_uid=STUDY_B if mark == "reassigned_at"
                                   else STUDY_A, payload={"version": 2}), session=session)  # fmt: skip
        if mark == "reassigned_at":  # the PACS re-sends the image under study B: stored there, A's readers marked
            insert_instance(session.connection(), ids["study_b"], ids["revision_b"], MOVED, 2, NOW, sha256="2" * 64)
            note_reassigned(session, recorder, actor, _header(STUDY_B, MOVED),
                            HeldCopy(ids["study_a"], ids["revision_a"], 1), ids["study_b"], 1, NOW)  # fmt: skip
        else:  # the PACS rejects A's copy
            note_rejection(session, recorder, actor, _header(STUDY_A, "1.2.826.0.1.3680043.8.498.79"),
                           Rejection("113037", (MOVED,)), NOW)  # fmt: skip

    return lambda: _in_thread_session(pg_store, marks)


_MARKED, _GO, _FAILURES = threading.Event(), threading.Event(), []  # reset by each test


def _in_thread_session(pg_store: Store, marks: Callable[[Session], None]) -> None:
    try:
        with pg_store.session("marking") as session:
            marks(session)
            _MARKED.set()
            _GO.wait(60)  # its commit, held until the test says
    except BaseException as exc:  # asserted by the test
        _FAILURES.append(exc)
        _MARKED.set()


def _setup(pg_store: Store) -> dict[str, int]:
    _MARKED.clear()
    _GO.clear()
    _FAILURES.clear()
    with pg_store.engine.begin() as connection:
        study_a, revision_a = insert_study(connection, STUDY_A, RevisionState.QUEUED, NOW, queued_at=NOW)
        study_b, revision_b = insert_study(connection, STUDY_B, RevisionState.RECEIVING, NOW, queued_at=NOW)
        insert_instance(connection, study_a, revision_a, MOVED, 1, NOW, sha256="1" * 64)
        insert_instance(connection, study_a, revision_a, KEPT, 1, NOW, sha256="1" * 64)
    return {"study_a": study_a, "revision_a": revision_a, "study_b": study_b, "revision_b": revision_b}


def _marked(pg_store: Store, mark: str, revision_id: int) -> bool:
    with pg_store.session() as session:
        table = Revision.__table__
        return session.scalar(sa.select(table.c[mark]).where(table.c.id == revision_id)) is not None


@pytest.mark.parametrize("mark", ["reassigned_at", "rejected_at"])
def test_a_claim_while_the_listener_marks_commits_after_it_and_reads_without_the_image(
    pg_store: Store, mark: str, tmp_path: Path
) -> None:
    ids = _setup(pg_store)
    listener = threading.Thread(target=_listener(pg_store, mark, ids))
    listener.start()
    wait_until(_MARKED.is_set)  # marked (revision 1 passed over: queued); not committed
    url = pg_store.engine.url.render_as_string(hide_password=False)
    attempts = RevisionAttempts(load_settings(data_dir=tmp_path / "radtrace", store={"url": url}), pg_store,
                                AuditRecorder(pg_store), actor=Actor(), worker="gpu-1:101", clock=lambda: NOW,
                                observer=Unobserved())  # fmt: skip
    read: list[set[str]] = []

    def worker() -> None:
        claim = attempts.claim(STUDY_A, 1)
        assert isinstance(claim, Claim)
        with pg_store.session() as session:  # as the worker reads, in a new session
            read.append(set(readable_instances(session, ids["study_a"], 1)))

    claiming = threading.Thread(target=worker)
    claiming.start()
    wait_until(lambda: not claiming.is_alive() or _waiting_on_a_lock(pg_store))
    claimed_first = not claiming.is_alive()
    _GO.set()
    listener.join(60)
    claiming.join(60)
    assert not _FAILURES, _FAILURES
    assert not claimed_first, "the claim committed while the listener's mark was not committed"
    assert read == [{KEPT}]  # the image moved away / rejected is not read
    assert not _marked(pg_store, mark, ids["revision_a"])  # it read nothing of another's


@pytest.mark.parametrize("mark", ["reassigned_at", "rejected_at"])
def test_a_listener_that_comes_while_a_claim_is_open_marks_the_claimed_revision(pg_store: Store, mark: str) -> None:
    ids = _setup(pg_store)
    claim = pg_store.engine.connect()
    claim.begin()  # the claim's statements: the revision's row, then inference_started's audit lock; not committed
    claim.execute(sa.update(Revision.__table__).where(Revision.__table__.c.id == ids["revision_a"])
                  .values(state=RevisionState.PROCESSING, attempts=1, claimed_by="gpu-1:101"))  # fmt: skip
    claim.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
    listener = threading.Thread(target=_listener(pg_store, mark, ids))
    listener.start()
    wait_until(lambda: _MARKED.is_set() or _waiting_on_a_lock(pg_store))
    claim.commit()  # claimed; the worker reads the revision's instances in a new session
    claim.close()
    with pg_store.session() as session:
        read = set(readable_instances(session, ids["study_a"], 1))
    _GO.set()
    listener.join(60)
    assert not listener.is_alive()
    assert not _FAILURES, _FAILURES
    assert MOVED not in read or _marked(pg_store, mark, ids["revision_a"]), "read the moved image, and not marked"
    assert _marked(pg_store, mark, ids["revision_a"])
