"""Migration 0017 on a site whose QA dashboard lost decisions to a host clock step back.

Before the copy counted by sequence alone (a63465c), sync_decisions passed over the decisions recorded after the host
clock was set back more than a minute, and never came back for them: ``qa_decisions`` (and the agreement counts)
kept a gap that the fix did not fill. The gap is seeded here as that code left it (the lost decisions absent, the
decisions they replaced still current, the counts without them); the upgrade copies them as the console copies a
decision, leaves out what the console leaves out (an unreadable payload) and what comes after the last copied seq
(the console's to copy), and a second run changes nothing. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from audit_support import as_superuser
from migration_support import store_at_migration
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.dashboard_agreement import current_agreement, sync_decisions
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, current_revision, head_revision, upgrade

pytestmark = pytest.mark.integration

MODEL = ("NV-Reason-CXR-3B", "rev-2026-10")


@pytest.fixture
def store_at_0016(database_url: str) -> Iterator[Store]:
    with store_at_migration(database_url, "0016") as store:
        yield store


def _record(store: Store, kind: EventType, study: str, payload: dict[str, Any], **model: str) -> int:
    event = AuditEvent(kind, Actor(user="dr.night"), study_uid=study, payload=payload, **model)
    return AuditRecorder(store).record(event).seq


def _decide(store: Store, study: str, decision: str, finding: str | None = None) -> int:
    if finding is None:
        return _record(store, EventType.DRAFT_ASSESSED, study,
                       {"revision": 1, "decision": decision, "reason_code": "RT-A1"})  # fmt: skip
    return _record(store, EventType.FINDING_ASSESSED, study, {"revision": 1, "finding": finding, "decision": decision})


def _snapshot(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with store.engine.connect() as connection:
        decisions = connection.execute(sa.text(
            "SELECT seq, study_uid, revision, label, decision, reason_code, superseded, model_name, model_version "
            "FROM qa_decisions ORDER BY seq"
        )).all()  # fmt: skip
        counts = connection.execute(sa.text(
            "SELECT label, decision, reason_code, count FROM qa_agreement_counts WHERE count <> 0 "
            "ORDER BY label, decision, reason_code"
        )).all()  # fmt: skip
    return [tuple(row) for row in decisions], [tuple(row) for row in counts]


def _leave_out_as_the_old_copy_did(store: Store, lost: list[int]) -> None:
    """What the copy before a63465c left: the lost decisions absent, the rest marked and counted without them."""
    with store.session("seeding the gap") as session:
        session.execute(sa.text("DELETE FROM qa_decisions WHERE seq IN :lost").bindparams(
            sa.bindparam("lost", expanding=True)), {"lost": lost})  # fmt: skip
        session.execute(sa.text("UPDATE qa_decisions SET superseded = FALSE"))
        session.execute(sa.text(
            "UPDATE qa_decisions SET superseded = TRUE WHERE seq < (SELECT MAX(later.seq) FROM qa_decisions later "
            "WHERE later.study_uid = qa_decisions.study_uid AND later.revision = qa_decisions.revision "
            "AND later.label = qa_decisions.label)"
        ))  # fmt: skip
        session.execute(sa.text("DELETE FROM qa_agreement_counts"))
        session.execute(sa.text(
            "INSERT INTO qa_agreement_counts (label, decision, reason_code, count) SELECT label, decision, "
            "COALESCE(reason_code, ''), COUNT(*) FROM qa_decisions WHERE superseded = FALSE "
            "GROUP BY label, decision, COALESCE(reason_code, '')"
        ))  # fmt: skip


def test_the_upgrade_copies_the_decisions_a_clock_step_back_lost_once(store_at_0016: Store) -> None:
    store = store_at_0016
    _record(store, EventType.INFERENCE_COMPLETED, "1.2.3.1", {"revision": 1, "attempt": 1},
            model_name=MODEL[0], model_version=MODEL[1])  # fmt: skip
    _decide(store, "1.2.3.1", "accept", "Edema")
    _decide(store, "1.2.3.2", "reject", "Edema")
    lost = [_decide(store, "1.2.3.1", "modify", "Edema"), _decide(store, "1.2.3.1", "reject")]  # modify replaces
    edited = _decide(store, "1.2.3.4", "accept", "Edema")  # its payload edited since: never copied
    _decide(store, "1.2.3.2", "accept", "Cardiomegaly")
    as_superuser(store, f"UPDATE audit_events SET payload = '{{not json' WHERE seq = {int(edited)}")  # noqa: S608
    assert sync_decisions(store) == 5  # what the console copies today, with nothing lost: the reference
    reference = _snapshot(store)
    assert edited not in [row[0] for row in reference[0]]
    _leave_out_as_the_old_copy_did(store, lost)
    gap = _snapshot(store)
    assert gap != reference
    # the lost whole-draft decision (label "") is not counted; read from the counts table, as the console's page
    # reads columns of later migrations (withdrawn drafts: 0018) that a database at 0016 does not have
    assert [row for row in gap[1] if row[0] == ""] == []
    later = _decide(store, "1.2.3.3", "accept", "Edema")  # after the last copied seq: the console copies it

    assert upgrade(store) == current_revision(store) == head_revision()
    assert _snapshot(store) == reference
    assert sync_decisions(store) == 1
    with_later = _snapshot(store)
    assert [row[0] for row in with_later[0]][-1] == later
    figures = current_agreement(store)
    assert (figures.drafts.reject, figures.reasons) == (1, {"RT-A1": 1})
    assert [(a.label, a.accept, a.reject, a.modify) for a in figures.findings] == [
        ("Cardiomegaly", 1, 0, 0), ("Edema", 1, 1, 1),
    ]  # fmt: skip

    with store.engine.connect() as connection:  # run again: nothing is missing, nothing changes
        command.downgrade(_config(connection), "0016")
        connection.commit()
    assert upgrade(store) == head_revision()
    assert _snapshot(store) == with_later
