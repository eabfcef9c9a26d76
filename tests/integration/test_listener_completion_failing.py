"""Study completion while the database fails (its disk full, the server away): nothing is said done before its
transaction commits, and the retry loop says it is failing once, not every 2 s (found in the outside-in trial: 18
pairs of "study … queued" / "study completion failed, retrying" lines in 40 s on a full tmpfs, the "queued" false)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from radtrace.audit.recorder import AuditRecorder
from radtrace.dicom_listener import completion
from radtrace.dicom_listener.completion import CompletionTimer, complete_due
from radtrace.errors import StoreUnavailableError
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study

pytestmark = pytest.mark.integration


def _open_revision(store: Store) -> None:
    long_ago = utc_now() - timedelta(minutes=5)
    with store.session() as session:
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.4242", study_key="k" * 16)
        session.add_all([study, Revision(study=study, number=1, state=RevisionState.RECEIVING, opened_at=long_ago)])


def test_a_completion_whose_commit_fails_is_not_logged_as_done(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _open_revision(store)
    real_session = store.session

    @contextlib.contextmanager
    def commit_fails(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with real_session(*args, **kwargs) as session:
            yield session
            if kwargs.get("immediate"):  # the completion's own transaction: its commit fails
                raise StoreUnavailableError("disk I/O error (the disk is full)")

    monkeypatch.setattr(store, "session", commit_fails)
    caplog.set_level(logging.INFO, logger="radtrace")
    with pytest.raises(StoreUnavailableError):
        complete_due(store, AuditRecorder(store), 10)
    assert not [r for r in caplog.records if "revision 1" in r.getMessage()], caplog.text
    monkeypatch.setattr(store, "session", real_session)
    [done] = complete_due(store, AuditRecorder(store), 10)
    said = [r.getMessage() for r in caplog.records if "revision 1" in r.getMessage()]
    assert said == [f"study {'k' * 16} revision 1 {done.state.value}"]


def test_a_completion_loop_that_keeps_failing_says_so_once_and_once_when_it_works_again(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    recovered = threading.Event()

    def failing_then_fine(*args: Any, **kwargs: Any) -> list[Any]:
        calls.append(1)
        if len(calls) <= 5:
            raise StoreUnavailableError("database unavailable")
        recovered.set()
        return []

    monkeypatch.setattr(completion, "complete_due", failing_then_fine)
    caplog.set_level(logging.INFO, logger="radtrace")
    timer = CompletionTimer(store, AuditRecorder(store), 10, max_sleep_s=0.05)
    timer.retry_s = 0.01
    timer.start()
    try:
        assert recovered.wait(30)
    finally:
        timer.stop()
    failing = [r for r in caplog.records if "study completion" in r.getMessage()]
    assert [r.levelno for r in failing] == [logging.WARNING, logging.INFO], caplog.text
    assert "retrying" in failing[0].getMessage()
    assert "works again after 5 failed tries" in failing[1].getMessage()
