"""A QA dashboard view with no new decision takes no SQLite write lock for the agreement copy.

Every dashboard, agreement and agreement-cell view brings ``qa_decisions`` up to date first
(:func:`radtrace.console.dashboard_agreement.sync_decisions`). It took SQLite's write lock (``BEGIN IMMEDIATE``) on
every view, new decisions or not, so on a night shift a radiologist's decision recorded while QA refreshed the
dashboard waited its turn behind a copy that had nothing to copy. It now looks first in a read-only transaction and
takes the lock only when there is a decision to copy; a decision recorded since still appears at the next view.
"""

from __future__ import annotations

import csv
import io
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit_support import as_superuser
from console_support import add_user, console_client, console_settings, sign_in
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.dashboard_agreement import current_agreement, sync_decisions
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    yield store
    store.dispose()


def _decide(store: Store, study: str, finding: str, decision: str) -> None:
    payload = {"revision": 1, "finding": finding, "decision": decision}
    AuditRecorder(store).record(
        AuditEvent(EventType.FINDING_ASSESSED, Actor(user="dr.night"), study_uid=study, payload=payload)
    )


class _WriteLocks:
    """Each ``BEGIN IMMEDIATE`` on the store's engine while listening: the radtrace functions on the stack."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self.taken: list[list[str]] = []

    def __enter__(self) -> _WriteLocks:
        sa.event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.strip().upper() == "BEGIN IMMEDIATE":
            self.taken.append([frame.name for frame in traceback.extract_stack() if "radtrace" in frame.filename])

    def by(self, function: str) -> int:
        """How many were taken with ``function`` on the stack."""
        return sum(function in stack for stack in self.taken)


def test_a_dashboard_view_with_nothing_new_takes_no_write_lock_and_new_decisions_still_appear(
    sqlite_store: Store, tmp_path: Path
) -> None:
    store = sqlite_store
    _decide(store, "1.2.3.1", "Cardiomegaly", "accept")
    _decide(store, "1.2.3.2", "Cardiomegaly", "reject")
    assert sync_decisions(store) == 2
    add_user(store, "qa.night", "qa")
    today = datetime.now(UTC).date()
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.night")
        with _WriteLocks(store) as locks:
            for url in ("/console/dashboard", "/console/agreement",
                        "/console/dashboard/agreement?label=Cardiomegaly&decision=accept",
                        "/console/dashboard/agreement.csv"):  # fmt: skip
                assert client.get(url).status_code == 200, url
            assert sync_decisions(store) == 0
        assert locks.by("sync_decisions") == 0, locks.taken

        _decide(store, "1.2.3.3", "Cardiomegaly", "modify")  # a radiologist decides meanwhile
        with _WriteLocks(store) as locks:
            page = client.get(f"/console/dashboard/agreement.csv?from={today - timedelta(days=1)}&to={today}")
        assert page.status_code == 200
        assert locks.by("sync_decisions") == 1  # taken: there was one to copy
        (row,) = [row for row in csv.DictReader(io.StringIO(page.text)) if row["label"] == "Cardiomegaly"]
        assert [row[name] for name in ("decisions", "accepted", "rejected", "modified")] == ["3", "1", "1", "1"]
    figures = current_agreement(store)
    assert [(a.label, a.accept, a.reject, a.modify) for a in figures.findings] == [("Cardiomegaly", 1, 1, 1)]


def test_a_decision_left_out_for_good_does_not_make_every_view_take_the_lock(sqlite_store: Store) -> None:
    """An assessment whose payload was edited into something unreadable is never copied (it stays after the last
    copied seq): the read-only look passes over it as the copy does, or each view would take the lock for it."""
    store = sqlite_store
    _decide(store, "1.2.3.1", "Edema", "accept")
    assert sync_decisions(store) == 1
    _decide(store, "1.2.3.2", "Edema", "accept")
    as_superuser(store, "UPDATE audit_events SET payload = '{not json' WHERE seq = (SELECT MAX(seq) FROM audit_events)")
    with _WriteLocks(store) as locks:
        assert sync_decisions(store) == 0
        assert sync_decisions(store) == 0
    assert locks.by("sync_decisions") == 0
    _decide(store, "1.2.3.3", "Edema", "reject")  # a readable one after it is copied
    assert sync_decisions(store) == 1
