"""Migration 0015 on a database that has decisions: each decision copied into ``qa_decisions`` gets the model name and
version of the reading it was about (the last ``inference_completed`` of its study and revision before it), decisions
recorded later are copied with theirs, and the dashboard's agreement per model is counted from those columns.

Before 0015 the dashboard looked the reading up at every request, over the audit table, once a second model version
had read anything; the columns did not exist."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from audit_support import as_superuser
from migration_support import store_at_migration
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.dashboard_agreement import NO_READING, WHOLE_DRAFT, read_agreement_by_model, sync_decisions
from radtrace.console.dashboard_queries import Window
from radtrace.console.schema import QaDecision
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, current_revision, head_revision, upgrade

pytestmark = pytest.mark.integration

OLD, NEW = ("NV-Reason-CXR-3B", "rev-2026-10"), ("NV-Reason-CXR-3B", "rev-2026-12")


@pytest.fixture
def old_store(database_url: str) -> Iterator[Store]:
    """A database at migration 0013 (decisions without their reading's model)."""
    with store_at_migration(database_url, "0013") as store:
        yield store


def _read(store: Store, study: str, revision: object, model: tuple[str, str]) -> None:
    AuditRecorder(store).record(AuditEvent(EventType.INFERENCE_COMPLETED, Actor(user="worker"), study_uid=study,
                                           model_name=model[0], model_version=model[1],
                                           payload={"revision": revision, "attempt": 1}))  # fmt: skip


def _decide(store: Store, study: str, revision: int, decision: str, finding: str | None = None) -> None:
    kind, payload = (
        (EventType.FINDING_ASSESSED, {"revision": revision, "finding": finding, "decision": decision})
        if finding
        else (EventType.DRAFT_ASSESSED, {"revision": revision, "decision": decision, "reason_code": "RT-A1"})
    )
    AuditRecorder(store).record(AuditEvent(kind, Actor(user="dr.a"), study_uid=study, payload=payload))


def _models(store: Store) -> dict[int, tuple[str | None, str | None]]:
    with store.session() as session:
        rows = session.execute(sa.select(QaDecision.seq, QaDecision.model_name, QaDecision.model_version)).all()
    return {seq: (name, version) for seq, name, version in rows}


def _copy_as_0013_did(store: Store) -> None:
    """What the 0013 code had copied (its sync_decisions: no model columns)."""
    with store.session() as session:
        session.execute(sa.text(
            "INSERT INTO qa_decisions (seq, recorded_at, study_uid, revision, label, decision, superseded) "
            "SELECT seq, recorded_at, study_uid, 1, 'Edema', 'accept', FALSE FROM audit_events "
            "WHERE event_type = 'finding_assessed'"
        ))  # fmt: skip
        session.execute(sa.text("UPDATE qa_decisions SET revision = 2 WHERE seq = 6"))


def test_the_upgrade_gives_each_decision_its_readings_model_and_later_copies_do_too(old_store: Store) -> None:
    store = old_store
    _read(store, "1.2.3.1", 1, OLD)  # seq 1
    _decide(store, "1.2.3.1", 1, "accept", "Edema")  # 2: OLD
    _read(store, "1.2.3.2", "1", NEW)  # 3: the revision as digits, read as 1
    _read(store, "1.2.3.1", 2, NEW)  # 4: revision 2 of study 1, the new version
    _decide(store, "1.2.3.2", 1, "accept", "Edema")  # 5: NEW
    _decide(store, "1.2.3.1", 2, "accept", "Edema")  # 6: NEW (revision 2)
    _decide(store, "1.2.3.9", 1, "accept", "Edema")  # 7: no reading recorded
    _read(store, "1.2.3.4", 1, NEW)  # 8: its payload edited into something that is not JSON
    _decide(store, "1.2.3.4", 1, "accept", "Edema")  # 9: its reading cannot be read: none
    as_superuser(store, "UPDATE audit_events SET payload = '{not json' WHERE seq = 8")
    _copy_as_0013_did(store)

    assert upgrade(store) == current_revision(store) == head_revision()
    old, new = OLD, NEW
    assert _models(store) == {2: old, 5: new, 6: new, 7: (None, None), 9: (None, None)}

    _decide(store, "1.2.3.1", 1, "reject", "Cardiomegaly")  # 10: revision 1 decided late: still the old reading
    _read(store, "1.2.3.2", 1, OLD)  # 11: revision 1 of study 2 read again (a rollback to the old version)
    _decide(store, "1.2.3.2", 1, "modify", "Edema")  # 12: about that last reading: OLD; replaces 5
    _decide(store, "1.2.3.2", 1, "reject")  # 13: the whole draft: OLD
    assert sync_decisions(store) == 3
    assert _models(store) == {2: old, 5: new, 6: new, 7: (None, None), 9: (None, None), 10: old, 12: old, 13: old}

    today = datetime.now(UTC).date()
    with store.session() as session:
        shown = read_agreement_by_model(session, store, Window(today - timedelta(days=1), today))
    counts = {
        model: [(a.label, a.accepted.count, a.rejected.count, a.modified.count) for a in rows]
        for model, rows in shown.items()
    }
    assert counts == {
        " ".join(OLD): [("Cardiomegaly", 0, 1, 0), ("Edema", 1, 0, 1), (WHOLE_DRAFT, 0, 1, 0)],
        " ".join(NEW): [("Edema", 1, 0, 0)],
        NO_READING: [("Edema", 2, 0, 0)],
    }


def test_the_downgrade_drops_the_columns(store: Store) -> None:
    with store.engine.connect() as connection:
        command.downgrade(_config(connection), "0013")
        connection.commit()
    with store.engine.connect() as connection:
        columns = {column["name"] for column in sa.inspect(connection).get_columns("qa_decisions")}
        indexes = {index["name"]: index["column_names"] for index in sa.inspect(connection).get_indexes("qa_decisions")}
    assert not {"model_name", "model_version"} & columns
    assert indexes["ix_qa_decisions_recorded_at"] == ["recorded_at", "superseded", "label", "decision"]
    assert upgrade(store) == head_revision()
