"""Migrations 0010 and 0011 on a database that has decisions: each whole draft's reason code is copied into
``qa_decisions`` from its audit row, the current decisions are counted into ``qa_agreement_counts``, later
decisions are copied with their reasons and counted as they come (a replaced one taken away), and the agreement
page reads those counts (before, the first request of a process counted every decision and decoded every whole
draft's payload: seconds at a million decisions)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from migration_support import store_at_migration
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.dashboard_agreement import current_agreement, sync_decisions
from radtrace.console.schema import QaAgreementCount, QaDecision
from radtrace.store.engine import Store
from radtrace.store.migrate import current_revision, head_revision, upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def old_store(database_url: str) -> Iterator[Store]:
    """A database at migration 0009 (the schema before the reason codes)."""
    with store_at_migration(database_url, "0009") as store:
        yield store


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

    assert upgrade(store) == current_revision(store) == head_revision()
    with store.session() as session:
        copied = dict(session.execute(sa.select(QaDecision.seq, QaDecision.reason_code)).all())
        counts = sa.select(QaAgreementCount.label, QaAgreementCount.decision, QaAgreementCount.reason_code,
                           QaAgreementCount.count)  # fmt: skip
        counted = set(session.execute(counts).all())
    assert copied == {1: "RT-A1", 2: "RT-R2", 3: "RT-R1", 4: None}
    assert counted == {("", "reject", "RT-R2", 1), ("", "reject", "RT-R1", 1), ("Edema", "modify", "", 1)}
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

    with store.session() as session:  # the replaced accept is taken away, not left at zero: a row stays, counting 0
        assert session.scalar(
            sa.select(QaAgreementCount.count).where(QaAgreementCount.decision == "accept")
        ) == 0  # fmt: skip


def test_copies_running_at_once_count_each_decision_once(store: Store) -> None:
    """Four console processes (threads here) bringing the copy up to date at once: the kept counts equal a count of
    the current decisions (a decision copied or replaced is counted by the one copy that did it)."""
    for n in range(30):
        study = f"1.2.3.{n % 7}"
        _decide(store, study, "dr.a", ("accept", "reject")[n % 2], ("RT-A1", "RT-R1", "RT-R5")[n % 3])
        _decide(store, study, "dr.a", ("accept", "modify", "reject")[n % 3], finding=("Edema", "Fracture")[n % 2])
    errors: list[BaseException] = []

    def copy() -> None:
        try:
            sync_decisions(store)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=copy) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    reason = sa.func.coalesce(QaDecision.reason_code, "")
    with store.session() as session:
        recount = {
            (label, verdict, code): count
            for label, verdict, code, count in session.execute(
                sa.select(QaDecision.label, QaDecision.decision, reason, sa.func.count())
                .where(QaDecision.superseded == sa.false())
                .group_by(QaDecision.label, QaDecision.decision, reason)
            )
        }
        kept = {
            (label, verdict, code): count
            for label, verdict, code, count in session.execute(
                sa.select(QaAgreementCount.label, QaAgreementCount.decision, QaAgreementCount.reason_code,
                          QaAgreementCount.count).where(QaAgreementCount.count != 0)
            )
        }  # fmt: skip
    assert kept == recount
    assert sum(recount.values()) == 7 + 7 * 2  # one current decision per study and label
