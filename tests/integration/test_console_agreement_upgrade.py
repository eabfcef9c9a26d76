"""Migration 0010 on a database that has decisions: each whole draft's reason code is copied into ``qa_decisions``
from its audit row, later decisions are copied with theirs, and the agreement page counts the current decisions
and reasons from the new covering index alone (SQLite's plan; before, it joined each whole draft to its audit row
and decoded the payload: seconds for the first request of a process at a million decisions)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console import dashboard_agreement
from radtrace.console.dashboard_agreement import current_agreement, current_counts, sync_decisions
from radtrace.console.schema import QaDecision
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, current_revision, upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def old_store(database_url: str) -> Iterator[Store]:
    """A database at migration 0009 (the schema before the reason codes)."""
    store = Store.from_url(database_url)
    with store.engine.connect() as connection:
        command.upgrade(_config(connection), "0009")
        connection.commit()
    yield store
    store.dispose()


def _decide(store: Store, study: str, user: str, decision: str, reason: str | None = None,
            finding: str | None = None) -> None:  # fmt: skip
    kind, payload = (
        (EventType.FINDING_ASSESSED, {"revision": 1, "finding": finding, "decision": decision})
        if finding
        else (EventType.DRAFT_ASSESSED, {"revision": 1, "decision": decision, "reason_code": reason})
    )
    AuditRecorder(store).record(AuditEvent(kind, Actor(user=user), study_uid=study, payload=payload))


def test_the_upgrade_copies_the_reasons_and_the_page_counts_them_from_the_index(old_store: Store) -> None:
    store = old_store
    _decide(store, "1.2.3.1", "dr.a", "accept", "RT-A1")
    _decide(store, "1.2.3.1", "dr.a", "reject", "RT-R2")  # replaces the accept
    _decide(store, "1.2.3.2", "dr.b", "reject", "RT-R1")
    _decide(store, "1.2.3.2", "dr.b", "modify", finding="Edema")
    with store.session() as session:  # what the 0009 code had copied (its sync_decisions: no reason code)
        session.execute(sa.text(
            "INSERT INTO qa_decisions (seq, recorded_at, study_uid, revision, label, decision, superseded) "
            "SELECT seq, recorded_at, study_uid, 1, CASE WHEN event_type = 'draft_assessed' THEN '' ELSE 'Edema' END,"
            " CASE seq WHEN 1 THEN 'accept' WHEN 2 THEN 'reject' WHEN 3 THEN 'reject' ELSE 'modify' END, seq = 1"
            " FROM audit_events WHERE seq <= 4"
        ))  # fmt: skip
    _decide(store, "1.2.3.3", "dr.c", "accept", "RT-A1")  # recorded before the upgrade, copied after it

    assert upgrade(store) == current_revision(store) == "0010"
    with store.session() as session:
        copied = dict(session.execute(sa.select(QaDecision.seq, QaDecision.reason_code)).all())
    assert copied == {1: "RT-A1", 2: "RT-R2", 3: "RT-R1", 4: None}
    dashboard_agreement._TALLIES.clear()  # a process started after the upgrade
    figures = current_agreement(store)
    assert (figures.drafts.accept, figures.drafts.reject) == (1, 2)
    assert figures.reasons == {"RT-A1": 1, "RT-R1": 1, "RT-R2": 1}
    with store.session() as session:
        assert session.scalar(sa.select(QaDecision.reason_code).where(QaDecision.seq == 5)) == "RT-A1"

    _decide(store, "1.2.3.3", "dr.c", "reject", "RT-R5")  # brought forward: the accept and its reason go
    sync_decisions(store)
    figures = current_agreement(store)
    assert (figures.drafts.accept, figures.drafts.reject) == (0, 3)
    assert figures.reasons == {"RT-R1": 1, "RT-R2": 1, "RT-R5": 1}
    assert [(a.label, a.modify) for a in figures.findings] == [("Edema", 1)]

    if store.engine.dialect.name == "sqlite":
        sql = str(current_counts().compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.engine.connect() as connection:
            plan = " | ".join(row[3] for row in connection.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}")))
        assert plan == "SEARCH qa_decisions USING COVERING INDEX ix_qa_decisions_current (superseded=?)", plan
