"""A revision's reason says its current state, on SQLite and PostgreSQL: what ``radtrace study show`` and the console
print for a study that is retried, waits, and then ends.

Before, a retried attempt left ``revisions.reason`` as it was: the job row and the audit said the last failure, the
revision an older reason (a wait that was over, or none at all); the model server's waiting reason only replaced none
or another waiting reason, and was cleared to none when the outage ended (or left, when another worker's read ended
it); a database that was away while an attempt ended, and back before its end was recorded, counted the attempt.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from radtrace.audit.chain import verify_chain
from radtrace.config import Settings
from radtrace.errors import ModelError, RadtraceError
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, translate_db_error
from radtrace.store.models import Job, JobState, Revision, RevisionState
from radtrace.testing.studies import StudySpec, make_study
from radtrace.worker.claims import Claim
from radtrace.worker.outage import OutageNotice
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import CountingReader, attempt_events, revision_row, spool_study, study_events, worker_settings

pytestmark = pytest.mark.integration


class ScriptedReader(CountingReader):
    """The real reader, each study's outcome replaced by the next scripted error while there is one."""

    def __init__(self, reader: StudyReader, errors: Sequence[RadtraceError]) -> None:
        super().__init__(reader)
        self.errors = list(errors)

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        if self.errors:
            self.batches.append(len(studies))
            return [self.errors.pop(0) for _ in studies]
        return super().read_each(studies)


class Clock:
    """The worker's clock, moved on past a retry's backoff by the test."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def past_the_backoff(self) -> None:
        self.offset += timedelta(minutes=5)


@pytest.fixture
def wsettings(tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    return worker_settings(tmp_path, url, tiny_model_dir, broker={"max_attempts": 3})


def _pipeline(settings: Settings, store: Store, errors: Sequence[RadtraceError], clock: Clock) -> StudyPipeline:
    reader = ScriptedReader(StudyReader(settings.model, data_dir=settings.data_dir), errors)
    return StudyPipeline(settings, store, reader, worker="w1", clock=clock)


def _reason(store: Store, uid: str) -> str:
    return revision_row(store, uid).reason or ""


def _last_job_error(store: Store) -> str | None:
    with store.session() as session:
        return session.scalar(sa.select(Job.error).order_by(Job.id.desc()).limit(1))


def _down() -> SimpleNamespace:
    """What OutageNotice reads of a breaker that found the server down."""
    return SimpleNamespace(reason="model server unavailable since 10:00:00 UTC (connection refused)", is_open=True,
                           since=utc_now())  # fmt: skip


def test_each_retried_attempt_says_its_own_failure_and_the_end_says_none(wsettings: Settings, store: Store) -> None:
    uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    pipeline = _pipeline(wsettings, store, [ModelError("first failure"), ModelError("second failure")], clock)

    assert pipeline.process(uid, number).result is Result.RETRY
    rev = revision_row(store, uid)
    assert rev.state is RevisionState.QUEUED
    assert rev.reason is not None
    assert rev.reason.startswith("attempt 1 of 3 failed: first failure; tried again at ")
    assert rev.reason.endswith(f"{rev.next_attempt_at:%H:%M:%S} UTC")  # before: None

    clock.past_the_backoff()
    assert pipeline.process(uid, number).result is Result.RETRY
    assert _reason(store, uid).startswith("attempt 2 of 3 failed: second failure; ")  # before: the first's, or none
    assert _last_job_error(store) == "second failure"  # the job row and the revision say the same failure

    clock.past_the_backoff()
    assert pipeline.process(uid, number).result is Result.REPORTED
    rev = revision_row(store, uid)
    assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 3, None)


def test_the_last_attempt_failing_says_its_own_failure(wsettings: Settings, store: Store) -> None:
    uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    errors = [ModelError("first failure"), ModelError("second failure"), ModelError("third failure")]
    pipeline = _pipeline(wsettings, store, errors, clock)
    for _ in range(2):
        pipeline.process(uid, number)
        clock.past_the_backoff()

    ended = pipeline.process(uid, number)

    assert ended.result is Result.FAILED
    assert _reason(store, uid) == "gave up after 3 attempts: third failure"


def test_a_wait_for_the_model_server_is_said_first_and_the_failure_before_it_comes_back(
    wsettings: Settings, store: Store
) -> None:
    uid, number = spool_study(wsettings, store, make_study())
    fresh, _ = spool_study(wsettings, store, make_study(StudySpec(seed=7)))  # never tried
    clock = Clock()
    pipeline = _pipeline(wsettings, store, [ModelError("first failure")], clock)
    pipeline.process(uid, number)
    retried = _reason(store, uid)
    notice = pipeline.reading.outage
    down = _down()

    notice.opened(down)  # type: ignore[arg-type]
    notice.still_down(down)  # type: ignore[arg-type]

    waiting = _reason(store, uid)  # before: the retry's reason kept, as if the retry were what happens next
    assert waiting == f"waiting: {down.reason}; server {notice.server}; no attempt counted; earlier, {retried}"
    assert _reason(store, fresh) == f"waiting: {down.reason}; server {notice.server}; no attempt counted"
    notice.still_down(down)  # type: ignore[arg-type]  # the next probe: the same, not nested
    assert _reason(store, uid) == waiting

    notice.closed(down, 3.0)  # type: ignore[arg-type]

    assert _reason(store, uid) == retried  # before: none, the failure lost while the study still waits for its retry
    assert revision_row(store, fresh).reason is None


def test_an_outage_another_worker_s_read_ends_clears_the_waiting_reasons(wsettings: Settings, store: Store) -> None:
    uid, _ = spool_study(wsettings, store, make_study())
    clock = Clock()
    first = _pipeline(wsettings, store, [], clock)
    down = _down()
    first.reading.outage.opened(down)  # type: ignore[arg-type]
    first.reading.outage.still_down(down)  # type: ignore[arg-type]
    assert _reason(store, uid).startswith("waiting: ")
    other = OutageNotice(
        store, first.recorder, first.actor, "w2", object(), utc_now, server=first.reading.outage.server
    )

    other.answered()  # its read went through: the outage ends in the audit log

    assert revision_row(store, uid).reason is None  # before: "waiting: model server unavailable …" until claimed
    assert [kind for kind, _ in study_events(store, uid)] == []


def _set_reason(store: Store, uid: str, reason: str) -> None:
    with store.session() as session:
        session.execute(sa.update(Revision).where(Revision.id == revision_row(store, uid).id).values(reason=reason))


@pytest.mark.parametrize("ended_by", ["probe", "read"])
def test_one_server_s_outage_ending_leaves_the_waits_for_another_server_that_is_still_down(
    wsettings: Settings, store: Store, ended_by: str
) -> None:
    """Two model servers down (each worker reads through its own); A answers again, by its worker's probe or another
    worker's read through it: B's wait stays on the studies it was written on, until B's outage ends. Before, every
    "waiting: model server unavailable" reason went back to its failure when any server's outage ended."""
    uid, number = spool_study(wsettings, store, make_study())
    unnamed, _ = spool_study(wsettings, store, make_study(StudySpec(seed=7)))
    clock = Clock()
    pipeline = _pipeline(wsettings, store, [ModelError("first failure")], clock)
    pipeline.process(uid, number)
    retried = _reason(store, uid)

    def notice(worker: str, server: str) -> OutageNotice:
        return OutageNotice(store, pipeline.recorder, pipeline.actor, worker, object(), utc_now, server=server)

    a, b = notice("wa", "http://gpu-a:8000"), notice("wb", "http://gpu-b:8000")
    down = _down()
    for each in (a, b):
        each.opened(down)  # type: ignore[arg-type]
    a.still_down(down)  # type: ignore[arg-type]
    b.still_down(down)  # type: ignore[arg-type]  # B's probe came last: the queued studies say B's wait
    waiting_for_b = _reason(store, uid)
    assert waiting_for_b == f"waiting: {down.reason}; server http://gpu-b:8000; no attempt counted; earlier, {retried}"
    # a wait naming no server (a held batch given back as its worker stopped: attempts.put_back) is any server's
    _set_reason(store, unnamed, f"waiting: {down.reason}; no attempt counted")

    if ended_by == "probe":
        a.closed(down, 3.0)  # type: ignore[arg-type]
    else:
        notice("wa2", "http://gpu-a:8000").answered()  # another worker's read through A ends A's outage
    assert _reason(store, uid) == waiting_for_b  # before: the retry's reason, though B is still down
    assert revision_row(store, unnamed).reason is None

    b.closed(down, 5.0)  # type: ignore[arg-type]
    assert _reason(store, uid) == retried


def test_a_study_claimed_again_after_a_wait_says_the_failure_it_retries_not_the_wait(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    pipeline = _pipeline(wsettings, store, [ModelError("first failure")], clock)
    pipeline.process(uid, number)
    retried = _reason(store, uid)
    down = _down()
    pipeline.reading.outage.still_down(down)  # type: ignore[arg-type]  # and the worker that wrote it stopped
    clock.past_the_backoff()
    seen: list[str] = []
    record = pipeline.recording.record

    def recording(*args: Any, **kwargs: Any) -> None:
        seen.append(_reason(store, uid))  # while attempt 2 is read
        record(*args, **kwargs)

    monkeypatch.setattr(pipeline.recording, "record", recording)
    assert pipeline.process(uid, number).result is Result.REPORTED
    assert seen == [retried]  # before: "waiting: model server unavailable …" while the study was being read


def _database_away_once(target: Any, name: str, monkeypatch: pytest.MonkeyPatch, *, after: bool) -> None:
    """``target.name`` fails once as a database that is away does (before or after doing its work), then works."""
    original = getattr(target, name)
    left = [1]

    def once(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs) if after else None
        if left[0]:
            left[0] -= 1
            refused = sa.exc.OperationalError("connect", None, Exception("connection refused"))
            raise translate_db_error(refused, "recording a reading") from refused
        return result if after else original(*args, **kwargs)

    monkeypatch.setattr(target, name, once)


@pytest.mark.parametrize("read", [False, True], ids=["before-the-reading-was-audited", "after"])
def test_the_database_away_while_an_attempt_ran_waits_for_it_uncounted(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch, read: bool
) -> None:
    # Back by the time the attempt's end is recorded: before, that end counted it (retried, "database unavailable
    # while …" in the job row only); an outage that lasted past the end was not counted (lost_to_database).
    uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    pipeline = _pipeline(wsettings, store, [], clock)
    _database_away_once(pipeline.recording, "record", monkeypatch, after=read)

    result = pipeline.process(uid, number)

    assert result.result is Result.RETRY
    rev = revision_row(store, uid)
    assert (rev.state, rev.attempts) == (RevisionState.QUEUED, 0)  # before: 1, counted
    assert (rev.reason or "").startswith("waiting: database unavailable while recording a reading: ")
    assert (rev.reason or "").endswith("; no attempt counted")
    assert attempt_events(store, uid)[-1] == ("report_failed" if read else "inference_failed", 1, False)
    ended = [p for kind, p in study_events(store, uid) if kind in ("report_failed", "inference_failed")][-1]
    assert ended.get("reading_kept" if read else "read") is read

    clock.past_the_backoff()
    assert pipeline.process(uid, number).result is Result.REPORTED
    rev = revision_row(store, uid)
    assert (rev.state, rev.attempts, rev.reason) == (RevisionState.REPORTED, 1, None)
    readings = [kind for kind, _, _ in attempt_events(store, uid)].count("inference_completed")
    assert readings == 1  # audited once: kept and drafted again, or read once after the wait
    with store.session() as session:
        jobs = session.execute(sa.select(Job.attempt, Job.state).order_by(Job.id)).all()
    assert [tuple(job) for job in jobs] == [(1, JobState.FAILED), (1, JobState.SUCCEEDED)]
    assert verify_chain(store).ok


def test_a_lost_worker_s_attempt_taken_over_says_so(
    wsettings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, number = spool_study(wsettings, store, make_study())
    clock = Clock()
    dead = _pipeline(wsettings, store, [], clock)
    assert isinstance(dead.attempts.claim(uid, number), Claim)  # claimed, then its worker died
    with store.session("expiring the claim", immediate=True) as session:
        session.execute(sa.update(Revision).values(claim_expires_at=utc_now() - timedelta(days=1)))
    seen: list[str] = []
    pipeline = StudyPipeline(wsettings, store, StudyReader(wsettings.model, data_dir=wsettings.data_dir),
                             worker="w2", clock=clock)  # fmt: skip
    record = pipeline.recording.record
    monkeypatch.setattr(pipeline.recording, "record", functools.partial(_noting, seen, store, uid, record))

    assert pipeline.process(uid, number).result is Result.REPORTED

    assert len(seen) == 1
    assert seen[0].startswith("attempt 1 of 3 failed: the worker was lost (claim expired); tried again at ")
    assert revision_row(store, uid).reason is None


def _noting(seen: list[str], store: Store, uid: str, record: Any, *args: Any, **kwargs: Any) -> None:
    seen.append(_reason(store, uid))
    record(*args, **kwargs)
