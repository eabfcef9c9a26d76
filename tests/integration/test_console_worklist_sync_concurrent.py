"""The worklist's projection brought up to date while another connection writes: SQLite must not refuse it.

sync_review_items (every worklist and study page, at most every console.sync_interval_s) read the reported revisions
missing from the worklist, built their rows (reading each study's files in the spool) and then inserted them, in one
deferred transaction. On SQLite a transaction that has read cannot take the write lock once another connection has
committed since: "database is locked" at once (no busy wait), so a worker's report, a decision or any audit event
landing in between made the radiologist's page a 503. Found by tests/sqlite_upgrade_support.py.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import radtrace.console.worklist_sync as worklist
from console_support import console_settings, reported_study
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.console.schema import ReviewItem
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration


def test_a_reported_study_joins_the_worklist_while_another_connection_writes(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=11)
    other = Store.from_url(str(store.engine.url))  # another process's connection (a worker, another console)
    recorded = threading.Event()
    failures: list[BaseException] = []
    writers: list[threading.Thread] = []

    def another_process_writes() -> None:
        try:
            AuditRecorder(other).record(AuditEvent(EventType.CONSOLE_LOGIN, Actor(user="dr.other", host="10.0.0.8")))
            recorded.set()
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    real_item = worklist._item

    def item_while_another_writes(*args: Any, **kwargs: Any) -> Any:
        if not writers:  # between the read of the missing revisions and the insert of their rows
            writer = threading.Thread(target=another_process_writes)
            writer.start()
            writers.append(writer)
            recorded.wait(2)  # the other write commits at once unless the sync holds the write lock (then it waits)
        return real_item(*args, **kwargs)

    monkeypatch.setattr(worklist, "_item", item_while_another_writes)
    try:
        added = worklist.sync_review_items(store, settings.spool_dir)
    finally:
        for writer in writers:
            writer.join(60)
        other.dispose()

    assert added == 1
    assert failures == []
    assert recorded.is_set()
    with store.session("reading the worklist") as session:
        assert session.scalars(sa.select(ReviewItem.study_uid)).all() == [study_uid]
        assert "dr.other" in session.scalars(sa.select(AuditEventRow.actor_user)).all()


def test_two_consoles_adding_the_same_reported_studies_at_once_add_each_row_once(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, several API processes: two syncs that both found the same revisions missing both inserted their
    rows; the second's insert collided on the row's key (a 503 for its page). Under the advisory lock the second
    reads the missing rows again once the first has committed, and adds none."""
    store = Store.from_url(postgres_url)
    upgrade(store)
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    uids = {reported_study(settings, store, reader, seed=seed) for seed in (12, 13)}
    other = Store.from_url(str(store.engine.url))  # the other API process's engine
    both_read = threading.Barrier(2)
    waited = threading.local()
    real_item = worklist._item

    def item_once_both_have_read(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("sync-") and not getattr(waited, "done", False):
            waited.done = True
            # before: both syncs had read the same missing revisions and met here; now the other one waits for
            # the lock this one holds, and this wait ends by its timeout
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait(2)
        return real_item(*args, **kwargs)

    monkeypatch.setattr(worklist, "_item", item_once_both_have_read)
    added: list[int] = []
    failures: list[BaseException] = []

    def sync(target: Store) -> None:
        try:
            added.append(worklist.sync_review_items(target, settings.spool_dir))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=sync, args=(s,), name=f"sync-{n}") for n, s in enumerate((store, other))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        assert sorted(added) == [0, 2]
        with store.session("reading the worklist") as session:
            assert sorted(session.scalars(sa.select(ReviewItem.study_uid)).all()) == sorted(uids)
    finally:
        other.dispose()
        store.dispose()
