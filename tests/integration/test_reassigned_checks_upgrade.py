"""Migration 0021 on a database that already had a rejection note: the instances it named get
``instances.rejected_at`` (from the ``instance_rejection_noted`` events in the log), so that a later reading of their
study leaves them out (:mod:`radtrace.worker.read_instances`); another instance does not. A revision has no check
(``flags_checked_at`` NULL). Before 0021 the columns did not exist."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from migration_support import store_at_migration
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Instance, Revision, RevisionState
from radtrace.worker.read_instances import readable_instances
from reassigned_support import insert_study

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 6, 5, 0, tzinfo=UTC)


@pytest.fixture
def old_store(database_url: str) -> Iterator[Store]:
    """A database at migration 0020 (before instances.rejected_at and the revisions' checks)."""
    with store_at_migration(database_url, "0020") as store:
        yield store


def _instance(connection: sa.Connection, study_id: int, revision_id: int, sop: str) -> None:
    connection.execute(
        sa.insert(Instance.__table__).values(
            study_id=study_id, revision_id=revision_id, sop_instance_uid=sop, version=1,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.7", transfer_syntax_uid="1.2.840.10008.1.2.1",
            path=f"{sop}.dcm", size_bytes=1, sha256="0" * 64, received_at=NOW,
        )
    )  # fmt: skip


def test_instances_a_logged_rejection_note_named_are_marked_at_the_upgrade(old_store: Store) -> None:
    with old_store.engine.begin() as connection:
        study_id, revision_id = insert_study(connection, "1.2.3.4", RevisionState.REPORTED, NOW, study_key="k" * 16)
        _instance(connection, study_id, revision_id, "1.2.3.4.1")
        _instance(connection, study_id, revision_id, "1.2.3.4.2")
    AuditRecorder(old_store).record(
        AuditEvent(EventType.INSTANCE_REJECTION_NOTED, Actor(ae_title="PACS"), study_uid="1.2.3.4",
                   payload={"sop_instance_uids": ["1.2.3.4.1"], "revisions": [1]})
    )  # fmt: skip
    upgrade(old_store)
    with old_store.session() as session:
        marked = dict(session.execute(sa.select(Instance.sop_instance_uid, Instance.rejected_at.is_not(None))).all())
        assert marked == {"1.2.3.4.1": True, "1.2.3.4.2": False}
        assert session.scalar(sa.select(Revision.flags_checked_at)) is None
        assert list(readable_instances(session, study_id, 1)) == ["1.2.3.4.2"]


def _study(connection: sa.Connection, uid: str) -> tuple[int, int]:
    study_key = uid.replace(".", "k").rjust(16, "k")[-16:]
    return insert_study(connection, uid, RevisionState.REPORTED, NOW, study_key=study_key)


def test_a_logged_note_rejecting_the_old_studys_copy_leaves_the_moved_copy_unmarked_at_the_upgrade(
    old_store: Store,
) -> None:
    """Image X was moved by the PACS from study A to study B (B holds version 2), then the PACS rejected A's copy.
    The listener before 0021 logged the note on B (the newest copy anywhere). The upgrade marks A's copy, the one in
    the note's own study, not B's: B's next reading still reads its own image (before: every version was marked)."""
    with old_store.engine.begin() as connection:
        study_a, revision_a = _study(connection, "1.2.3.5")
        study_b, revision_b = _study(connection, "1.2.3.6")
        _instance(connection, study_a, revision_a, "1.2.3.5.1")
        connection.execute(
            sa.update(Instance.__table__).where(Instance.__table__.c.sop_instance_uid == "1.2.3.5.1").values(version=1)
        )
        connection.execute(
            sa.insert(Instance.__table__).values(
                study_id=study_b, revision_id=revision_b, sop_instance_uid="1.2.3.5.1", version=2,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.7", transfer_syntax_uid="1.2.840.10008.1.2.1",
                path="moved.dcm", size_bytes=1, sha256="1" * 64, received_at=NOW,
            )
        )  # fmt: skip
    AuditRecorder(old_store).record(
        AuditEvent(EventType.INSTANCE_REJECTION_NOTED, Actor(ae_title="PACS"), study_uid="1.2.3.6",
                   payload={"rejection_note_study_uid": "1.2.3.5", "sop_instance_uids": ["1.2.3.5.1"],
                            "revisions": [1]})
    )  # fmt: skip
    upgrade(old_store)
    with old_store.session() as session:
        marked = dict(session.execute(sa.select(Instance.study_id, Instance.rejected_at.is_not(None))).all())
        assert marked == {study_a: True, study_b: False}
        assert list(readable_instances(session, study_b, 1)) == ["1.2.3.5.1"]
