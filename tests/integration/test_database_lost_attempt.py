"""A database outage between a claim or a reading and the end of the attempt is no fault of the study's.

Before, the end could not be recorded (the database was down), the revision stayed ``processing`` under its worker,
and the worker's retried task took its own claim over as a new attempt: the reading was read again (on a GPU, the
expensive part) and the attempt counted, so three short database outages failed a study (fault trial, item 1). Now
the worker notes the attempts it lost to the database, records their end when it takes them over (``attempt_counted:
false``; ``reading_kept: true`` when the reading was audited) and drafts the audited reading again.

The fault is injected at the store: every transaction fails as an unreachable database does (translated as
``Store.session`` translates it) from the moment named until the test brings the database back.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.chain import verify_chain
from radtrace.config import Settings
from radtrace.errors import StoreUnavailableError
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, translate_db_error
from radtrace.store.models import Job, JobState, OutboxMessage, Revision, RevisionState
from radtrace.testing.studies import make_study
from radtrace.worker.pipeline import ProcessResult, Result, StudyPipeline
from worker_support import (
    CountingReader,
    attempt_events,
    queue_studies,
    revision_row,
    spool_study,
    study_events,
    worker_settings,
)

pytestmark = pytest.mark.integration


class Outage:
    """The store's transactions fail while ``down`` (the database process stopped)."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        self.refused: list[str] = []
        real = store.session

        @contextlib.contextmanager
        def session(doing: str = "using the database", *, immediate: bool = False) -> Iterator[Session]:
            if self.down:
                self.refused.append(doing)
                refused = sa.exc.OperationalError("connect", None, Exception("connection refused"))
                raise translate_db_error(refused, doing) from refused
            with real(doing, immediate=immediate) as opened:
                yield opened

        monkeypatch.setattr(store, "session", session)


def _after(target: Any, name: str, then: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``then`` after each call of ``target.name``."""
    original = getattr(target, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        then()
        return result

    monkeypatch.setattr(target, name, wrapped)


@pytest.fixture
def wsettings(tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    return worker_settings(tmp_path, str(store.engine.url.render_as_string(hide_password=False)), tiny_model_dir)


def test_a_database_outage_after_the_reading_drafts_that_reading_and_counts_no_attempt(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    pipeline = StudyPipeline(wsettings, store, reader, worker="w1")
    outage = Outage(store, monkeypatch)
    _after(pipeline.recording, "record", lambda: setattr(outage, "down", True), monkeypatch)  # audited, then down

    with pytest.raises(StoreUnavailableError):  # its end could not be recorded: the task is retried
        pipeline.process(study_uid, number)
    assert "giving a revision back" in outage.refused  # its end (the outage's: given back, uncounted) not recorded
    outage.down = False
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts, rev.claimed_by) == (RevisionState.PROCESSING, 1, "w1")

    again = pipeline.process(study_uid, number)  # the retried task, once the database is back

    assert again.result is Result.REPORTED
    assert reader.batches == [1]  # read once (before: [1, 1], a second reading)
    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts) == (RevisionState.REPORTED, 1)  # before: 2
    assert attempt_events(store, study_uid) == [
        ("inference_started", 1, None),
        ("inference_completed", 1, None),
        ("report_failed", 1, False),  # recorded by its worker as it took the attempt over
        ("inference_started", 1, None),
    ]
    lost = next(p for kind, p in study_events(store, study_uid) if kind == "report_failed")
    assert lost["reading_kept"] is True
    assert lost["error"].startswith("database unavailable while ")
    taken = [p for kind, p in study_events(store, study_uid) if kind == "inference_started"][1]
    assert taken["taken_over_from"] == "w1"
    with store.session() as session:
        jobs = session.execute(sa.select(Job.attempt, Job.state, Job.error).order_by(Job.id)).all()
    assert [(attempt, state) for attempt, state, _ in jobs] == [(1, JobState.FAILED), (1, JobState.SUCCEEDED)]
    assert jobs[0][2].startswith("not counted: database unavailable while ")
    assert verify_chain(store).ok


def test_a_database_outage_right_after_the_claim_counts_no_attempt_and_reads_once(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    pipeline = StudyPipeline(wsettings, store, reader, worker="w1")
    outage = Outage(store, monkeypatch)
    down = [True]

    def once() -> None:
        outage.down, down[0] = down[0], False

    _after(pipeline.attempts, "claim", once, monkeypatch)

    with pytest.raises(StoreUnavailableError):
        pipeline.process(study_uid, number)
    outage.down = False

    assert pipeline.process(study_uid, number).result is Result.REPORTED
    assert reader.batches == [1]
    assert revision_row(store, study_uid).attempts == 1  # before: 2
    assert attempt_events(store, study_uid) == [
        ("inference_started", 1, None),
        ("inference_failed", 1, False),  # not read: nothing kept, read now
        ("inference_started", 1, None),
        ("inference_completed", 1, None),
    ]
    assert next(p for kind, p in study_events(store, study_uid) if kind == "inference_failed")["read"] is False


def test_a_batch_lost_to_the_database_keeps_each_reading(
    tmp_path: Path, store: Store, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(store.engine.url.render_as_string(hide_password=False))
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, model={"batch_size": 2, "batch_wait_ms": 0})
    uids = queue_studies(wsettings, store, 2)
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    pipeline = StudyPipeline(wsettings, store, reader, worker="gpu0")
    outage = Outage(store, monkeypatch)
    recorded: list[int] = []

    def second_recorded() -> None:  # both readings audited, then down
        recorded.append(1)
        outage.down = len(recorded) == 2

    _after(pipeline.recording, "record", second_recorded, monkeypatch)
    with pytest.raises(StoreUnavailableError):
        pipeline.process_batch(uids[0], 1)
    outage.down = False

    results: list[ProcessResult] = [result for _, result in pipeline.process_batch(uids[0], 1)]

    assert [result.result for result in results] == [Result.REPORTED, Result.REPORTED]
    assert reader.batches == [2]  # nothing read again (before: [2, 2])
    assert [revision_row(store, uid).attempts for uid in uids] == [1, 1]


def test_a_new_process_of_the_same_name_counts_the_attempt_and_reads_again(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the process that lost the attempt knows it was the database: a restarted worker (same host:pid name) may
    # have died of the study, as a worker killed by its drafts would, and reads again with the attempt counted.
    study_uid, number = spool_study(wsettings, store, make_study())
    first = StudyPipeline(wsettings, store, CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir)),
                          worker="w1")  # fmt: skip
    outage = Outage(store, monkeypatch)
    _after(first.recording, "record", lambda: setattr(outage, "down", True), monkeypatch)
    with pytest.raises(StoreUnavailableError):
        first.process(study_uid, number)
    outage.down = False

    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    assert StudyPipeline(wsettings, store, reader, worker="w1").process(study_uid, number).result is Result.REPORTED
    assert reader.batches == [1]
    assert revision_row(store, study_uid).attempts == 2
    assert [kind for kind, _, _ in attempt_events(store, study_uid)].count("inference_completed") == 2


# --- a worker killed -9 and started again: what it kept in memory is gone (radtrace.worker.attempts, "What a restart
# loses"), and the outcome is still one reported revision with one set of deliveries, the lost attempt counted.


def _killed_and_started_again(wsettings: Settings, store: Store) -> tuple[StudyPipeline, CountingReader]:
    """The worker process started again after a kill -9: a new pid, so another name in ``claimed_by``, and nothing of
    the killed process's memory (its notes of attempts lost to the database, its claims' tokens)."""
    reader = CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir))
    return StudyPipeline(wsettings, store, reader, worker="w1-restarted"), reader


def _claim_lapses(store: Store) -> None:
    """What ``broker.claim_timeout_s`` after the killed worker's last beat does (dead_claims releases it sooner)."""
    with store.session("letting the claim lapse", immediate=True) as session:
        session.execute(sa.update(Revision).values(claim_expires_at=utc_now() - timedelta(seconds=1)))


def _outbox_rows(store: Store) -> list[tuple[int, str, str]]:
    with store.session() as session:
        rows = session.execute(sa.select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.destination))
        return [tuple(row) for row in rows]  # type: ignore[misc]


@pytest.mark.parametrize("lost_at", ["recording the reading", "finishing after the outbox rows"])
def test_a_worker_killed_after_losing_an_attempt_to_the_database_leaves_it_to_the_next_one_counted(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch, lost_at: str
) -> None:
    study_uid, number = spool_study(wsettings, store, make_study())
    killed = StudyPipeline(wsettings, store, CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir)),
                           worker="w1")  # fmt: skip
    outage = Outage(store, monkeypatch)
    down = functools.partial(setattr, outage, "down", True)
    _after(*((killed.recording, "record") if lost_at == "recording the reading" else (killed, "_enqueue_built")),
           down, monkeypatch)  # fmt: skip
    with pytest.raises(StoreUnavailableError):
        killed.process(study_uid, number)
    outage.down = False
    assert killed.attempts.lost()  # noted in its memory only, and then it is killed -9
    enqueued = _outbox_rows(store)
    assert bool(enqueued) is (lost_at != "recording the reading")

    restarted, reader = _killed_and_started_again(wsettings, store)
    assert restarted.process(study_uid, number).result is Result.NOT_CLAIMED  # a live claim is never taken
    _claim_lapses(store)
    seen: list[str | None] = []
    finish = restarted.attempts.finish

    def finishing(*args: Any, **kwargs: Any) -> ProcessResult:
        seen.append(revision_row(store, study_uid).reason)
        return finish(*args, **kwargs)

    monkeypatch.setattr(restarted.attempts, "finish", finishing)
    assert restarted.process(study_uid, number).result is Result.REPORTED

    rev = revision_row(store, study_uid)
    assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 2, None)  # counted: it may have died of it
    assert seen[0] is not None
    assert seen[0].startswith("attempt 1 of 3 failed: the worker was lost (claim expired); tried again at ")
    if enqueued:  # its deliveries were written: kept, not read or written again
        assert reader.batches == []
        assert _outbox_rows(store) == enqueued
    else:  # read again: one set of deliveries all the same
        assert reader.batches == [1]
        assert len(_outbox_rows(store)) == len({(kind, to) for _, kind, to in _outbox_rows(store)})
    started = [p for kind, p in study_events(store, study_uid) if kind == "inference_started"]
    assert [(p["attempt"], p.get("taken_over_from")) for p in started] == [(1, None), (2, "w1")]
    with store.session() as session:
        jobs = session.execute(sa.select(Job.attempt, Job.state, Job.error).order_by(Job.id)).all()
    assert [tuple(job) for job in jobs] == [(1, JobState.FAILED, "worker lost: claim expired"),
                                            (2, JobState.SUCCEEDED, None)]  # fmt: skip
    assert verify_chain(store).ok


def test_a_worker_killed_after_a_claim_whose_reply_it_lost_leaves_it_to_the_next_one_counted(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim committed, its reply lost (the connection broke after COMMIT): the killed worker's token of it is
    # gone with its memory. The claim is found as any dead worker's, and taken over once it lapses.
    study_uid, number = spool_study(wsettings, store, make_study())
    killed = StudyPipeline(wsettings, store, CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir)),
                           worker="w1")  # fmt: skip
    claim = killed.attempts._claim

    def committed_reply_lost(*args: Any) -> Any:
        claim(*args)
        refused = sa.exc.OperationalError("COMMIT", None, Exception("server closed the connection unexpectedly"))
        raise translate_db_error(refused, "claiming a revision") from refused

    monkeypatch.setattr(killed.attempts, "_claim", committed_reply_lost)
    with pytest.raises(StoreUnavailableError):
        killed.process(study_uid, number)
    assert killed.attempts.lost() == [(study_uid, number)]  # its token, in its memory only; then it is killed -9

    restarted, reader = _killed_and_started_again(wsettings, store)
    assert restarted.process(study_uid, number).result is Result.NOT_CLAIMED
    _claim_lapses(store)
    assert restarted.process(study_uid, number).result is Result.REPORTED

    assert revision_row(store, study_uid).attempts == 2
    assert reader.batches == [1]  # the lost claim read nothing
    assert [(kind, attempt) for kind, attempt, _ in attempt_events(store, study_uid)] == [
        ("inference_started", 1), ("inference_started", 2), ("inference_completed", 2),
    ]  # fmt: skip
    assert verify_chain(store).ok


def test_a_lost_attempt_that_was_the_last_fails_the_study_visibly_after_a_restart(
    tmp_path: Path, store: Store, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cost of not persisting the note: a double fault (the database away, then the worker killed) on the last
    # attempt fails the study with its reason, where radtrace status lists it and radtrace study retry queues it.
    url = str(store.engine.url.render_as_string(hide_password=False))
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, broker={"max_attempts": 1})
    study_uid, number = spool_study(wsettings, store, make_study())
    killed = StudyPipeline(wsettings, store, CountingReader(StudyReader(wsettings.model, data_dir=wsettings.data_dir)),
                           worker="w1")  # fmt: skip
    outage = Outage(store, monkeypatch)
    _after(killed.recording, "record", lambda: setattr(outage, "down", True), monkeypatch)
    with pytest.raises(StoreUnavailableError):
        killed.process(study_uid, number)
    outage.down = False

    restarted, reader = _killed_and_started_again(wsettings, store)
    _claim_lapses(store)
    ended = restarted.process(study_uid, number)

    assert ended.result is Result.FAILED
    assert ended.reason == "gave up after 1 attempts: the worker was lost (claim expired)"
    assert revision_row(store, study_uid).reason == ended.reason
    assert reader.batches == []
    assert [kind for kind, _ in study_events(store, study_uid)][-1] == "study_failed"
