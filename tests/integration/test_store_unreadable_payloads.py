"""An assessment audit row whose payload was edited into something unreadable (not JSON, not an object, a revision that
is not a whole number) stops neither ``radtrace db upgrade`` nor the QA dashboard's agreement page.

Before, migration 0008 cast every payload (PostgreSQL ``payload::json``, SQLite ``json_extract``) and 0010 did again:
one such row stopped the upgrade ("invalid input syntax for type json", "malformed JSON"), and the console's copy of
the decisions (``sync_decisions``) failed on every request after the edit, so the agreement page answered 500 for
good. Now such a row is left out and counted in a warning; ``radtrace audit verify`` is what names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from audit_support import as_superuser
from migration_support import store_at_migration
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.dashboard_agreement import copyable_assessment, current_agreement, sync_decisions
from radtrace.console.schema import QaDecision
from radtrace.store.engine import Store
from radtrace.store.migrate import current_revision, head_revision, upgrade

pytestmark = pytest.mark.integration

#: What an edit can leave in a payload, each unreadable by the SQL that copies decisions.
UNREADABLE = {
    "not JSON": "{'revision': 1, 'decision': 'accept'",
    "a JSON array": '["revision", 1]',
    "a JSON string": '"accept"',
    "a fractional revision": '{"revision": "1.5", "decision": "accept", "finding": "Edema"}',
    "a boolean revision": '{"revision": true, "decision": "accept", "finding": "Edema"}',
    "a revision past INTEGER": '{"revision": 99999999999, "decision": "accept", "finding": "Edema"}',
}


@pytest.fixture
def old_store(database_url: str) -> Iterator[Store]:
    """A database at migration 0007 (before the dashboard's copy of the decisions)."""
    with store_at_migration(database_url, "0007") as store:
        yield store


def _decide(store: Store, study: str, decision: str, finding: str | None = None) -> int:
    kind, payload = (
        (EventType.FINDING_ASSESSED, {"revision": 1, "finding": finding, "decision": decision})
        if finding
        else (EventType.DRAFT_ASSESSED, {"revision": 1, "decision": decision, "reason_code": "RT-R1"})
    )
    return AuditRecorder(store).record(AuditEvent(kind, Actor(user="dr.a"), study_uid=study, payload=payload)).seq


def _edit_payloads(store: Store, edits: dict[int, str]) -> None:
    quoted = {seq: text.replace("'", "''") for seq, text in edits.items()}
    as_superuser(store, *(f"UPDATE audit_events SET payload = '{text}' WHERE seq = {seq}"  # noqa: S608
                          for seq, text in quoted.items()))  # fmt: skip


def _copied(store: Store) -> dict[int, tuple[str, str]]:
    with store.session() as session:
        rows = session.execute(sa.select(QaDecision.seq, QaDecision.label, QaDecision.decision)).all()
    return {seq: (label, decision) for seq, label, decision in rows}


def test_the_upgrade_leaves_unreadable_rows_out_and_goes_on(old_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    store = old_store
    good = [_decide(store, "1.2.3.1", "reject"), _decide(store, "1.2.3.1", "modify", finding="Edema")]
    edited = {_decide(store, f"1.2.3.{n + 2}", "accept", finding="Edema"): text
              for n, text in enumerate(UNREADABLE.values())}  # fmt: skip
    _edit_payloads(store, edited)

    with caplog.at_level(logging.WARNING, logger="radtrace.store.migration_payloads"):
        assert upgrade(store) == current_revision(store) == head_revision()

    assert _copied(store) == {good[0]: ("", "reject"), good[1]: ("Edema", "modify")}
    assert f"{len(UNREADABLE)} audit row(s) of finding_assessed, draft_assessed have a payload" in caplog.text
    for text in UNREADABLE.values():
        assert text not in caplog.text
    figures = current_agreement(store)
    assert figures.drafts.reject == 1
    assert [(row.label, row.modify, row.accept) for row in figures.findings] == [("Edema", 1, 0)]


def test_the_console_copy_leaves_an_edited_row_out_and_keeps_counting(store: Store) -> None:
    first = _decide(store, "1.2.3.1", "reject")
    assert sync_decisions(store) == 1
    edited = {_decide(store, f"1.2.3.{n + 2}", "accept", finding="Edema"): text
              for n, text in enumerate(UNREADABLE.values())}  # fmt: skip
    later = _decide(store, "1.2.3.9", "modify", finding="Edema")
    _edit_payloads(store, edited)

    assert sync_decisions(store) == 1  # before: an error here, and on every request after
    assert _copied(store) == {first: ("", "reject"), later: ("Edema", "modify")}
    assert sync_decisions(store) == 0
    figures = current_agreement(store)
    assert [(row.label, row.modify, row.accept) for row in figures.findings] == [("Edema", 1, 0)]


@pytest.mark.unit
@pytest.mark.parametrize("text", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_payloads_are_not_copyable(text: str) -> None:
    assert not copyable_assessment(text)


@pytest.mark.unit
@pytest.mark.parametrize("text", ['{"decision": "accept"}', '{"revision": 2}', '{"revision": "12"}',
                                  '{"revision": -1, "finding": {"nested": true}}'])  # fmt: skip
def test_readable_payloads_are_copyable(text: str) -> None:
    assert copyable_assessment(text)
