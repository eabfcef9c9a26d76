"""Migration 0022 on a database where a draft was withdrawn before it was all sent: the deliveries cancelled then were
stored ``failed`` ("withdrawn before it was sent: …"), and the revision ``failed`` for them. After the upgrade they
are ``cancelled`` and the revision is ``reported``, its reason saying where its draft was withdrawn (what settlement
now writes); a revision with a delivery that really failed stays ``failed``, that delivery too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from migration_support import store_at_migration
from radtrace.reporting.dispatch.withdrawals import CANCELLED_PREFIX, REJECTED_REASON
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import OutboxMessage, OutboxState, Priority, Revision, RevisionState, Study
from radtrace.worker.settlement import withdrawn_reason

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
CANCELLED = f"{CANCELLED_PREFIX}: {REJECTED_REASON}"


@pytest.fixture
def old_store(database_url: str) -> Iterator[Store]:
    """A database at migration 0021 (outbox states pending, delivered, failed)."""
    with store_at_migration(database_url, "0021") as store:
        yield store


def _revision(connection: sa.Connection, study_id: int, number: int, reason: str) -> int:
    return int(
        connection.execute(
            sa.insert(Revision.__table__).values(study_id=study_id, number=number, state="failed", reason=reason,
                                                 attempts=1, opened_at=NOW, updated_at=NOW, finished_at=NOW,
                                                 priority=Priority.ROUTINE)
            .returning(Revision.__table__.c.id)
        ).scalar_one()
    )  # fmt: skip


def _row(
    connection: sa.Connection, revision_id: int, kind: str, destination: str, state: str, error: str | None
) -> None:
    connection.execute(
        sa.insert(OutboxMessage.__table__).values(
            revision_id=revision_id, kind=kind, destination=destination, payload_path=f"{revision_id}-{kind}.bin",
            payload_sha256="0" * 64, state=state, attempts=0, next_attempt_at=NOW, last_error=error, created_at=NOW,
        )
    )  # fmt: skip


def test_deliveries_cancelled_as_failed_become_cancelled_and_their_revision_reported(old_store: Store) -> None:
    with old_store.engine.begin() as connection:
        study_id = connection.execute(
            sa.insert(Study.__table__).values(study_uid="1.2.3.5", study_key="k" * 16, created_at=NOW)
            .returning(Study.__table__.c.id)
        ).scalar_one()  # fmt: skip
        withdrawn = _revision(connection, study_id, 1, f"delivery to hl7 ris:2575 failed: {CANCELLED}")
        _row(connection, withdrawn, "sr", "PACS@pacs:104", "delivered", None)
        _row(connection, withdrawn, "hl7", "ris:2575", "failed", CANCELLED)
        _row(connection, withdrawn, "withdrawal", "PACS@pacs:104", "delivered", None)
        failed = _revision(connection, study_id, 2, "delivery to sr PACS@pacs:104 failed: refused")
        _row(connection, failed, "sr", "PACS@pacs:104", "failed", "refused")
        _row(connection, failed, "hl7", "ris:2575", "failed", CANCELLED)
    upgrade(old_store)
    with old_store.session() as session:
        states = session.execute(
            sa.select(OutboxMessage.revision_id, OutboxMessage.kind, OutboxMessage.state).order_by(OutboxMessage.id)
        ).all()
        assert [(revision_id, kind, OutboxState(state)) for revision_id, kind, state in states] == [
            (withdrawn, "sr", OutboxState.DELIVERED),
            (withdrawn, "hl7", OutboxState.CANCELLED),
            (withdrawn, "withdrawal", OutboxState.DELIVERED),
            (failed, "sr", OutboxState.FAILED),
            (failed, "hl7", OutboxState.CANCELLED),
        ]
        revisions = session.execute(
            sa.select(Revision.id, Revision.state, Revision.reason, Revision.finished_at).order_by(Revision.id)
        ).all()
        assert [(rid, RevisionState(state), reason, finished) for rid, state, reason, finished in revisions] == [
            (withdrawn, RevisionState.REPORTED, withdrawn_reason([("hl7", "ris:2575", CANCELLED)]), None),
            (failed, RevisionState.FAILED, "delivery to sr PACS@pacs:104 failed: refused", NOW),
        ]
