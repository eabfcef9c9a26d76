"""The dashboard's stage latencies of a study that failed and was retried with ``radtrace study retry``.

The study arrives and its reading fails (moved two hours back, as if it had failed then); an operator retries it
now and the pipeline reads it. ``study retry`` queues the revision again (``queued_at`` = the retry) and the worker
keeps the first claim's ``started_at``: the dashboard read queue wait as started - queued (minus two hours) and
the model's reading as reported - started (two hours over target), so one retried study put a negative queue wait
and a two-hour reading into the percentiles. The figures are checked against the rows' own times: the retried
reading's queue wait runs from the retry to the claim that read it, its reading from that claim, and its settle
time (last image to the first queueing, which the retry wrote over) is not a figure at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import console_settings
from radtrace.audit.events import Actor
from radtrace.console.dashboard_figures import read_figures
from radtrace.console.dashboard_queries import Window
from radtrace.errors import PermanentError
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Job, Revision, RevisionState
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from radtrace.worker.study_retry import retry_revision
from worker_support import spool_study

pytestmark = pytest.mark.integration

FAILED_AGO = timedelta(hours=2)


class RefusingModel:
    """A reader whose model fails the study for good (no automatic retry)."""

    def read_each(self, studies: Any) -> Any:
        raise PermanentError("model backend refused the study")


def _move_back(store: Store, revision_id: int, by: timedelta) -> None:
    """The revision's arrival, claim and failure happened ``by`` earlier."""
    with store.session() as session:
        rows = [session.get(Revision, revision_id)]
        rows += session.scalars(sa.select(Instance).where(Instance.revision_id == revision_id))
        rows += session.scalars(sa.select(Job).where(Job.revision_id == revision_id))
        for row in rows:
            for name in ("opened_at", "queued_at", "started_at", "finished_at", "updated_at", "received_at"):
                if getattr(row, name, None) is not None:
                    setattr(row, name, getattr(row, name) - by)


def test_a_retried_study_has_no_negative_queue_wait_nor_a_two_hour_reading(store: Store, tmp_path: Path) -> None:
    settings = console_settings(tmp_path, store)
    uid, number = spool_study(settings, store, make_study(StudySpec(seed=61), [ImageSpec()]))
    failed = StudyPipeline(settings, store, RefusingModel(), worker="w1").process(uid, number)
    assert failed.result is Result.FAILED
    with store.session() as session:
        revision_id = session.scalar(sa.select(Revision.id))
    _move_back(store, revision_id, FAILED_AGO)
    retry_revision(store, uid, None, Actor(user="qa.operator"))
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    assert StudyPipeline(settings, store, reader, worker="w2").process(uid, number).result is Result.REPORTED

    with store.session() as session:
        revision = session.get(Revision, revision_id)
        assert revision is not None
        assert revision.state is RevisionState.REPORTED
        claims = sorted(session.scalars(sa.select(Job.started_at).where(Job.revision_id == revision_id)))
        queued, first_claim, reported = revision.queued_at, revision.started_at, revision.reported_at
    assert queued is not None
    assert first_claim is not None
    assert reported is not None
    assert len(claims) == 2
    assert first_claim < queued  # the worker kept the first claim's time through the retry
    reading_claim = claims[1]
    expected = {
        "queue_wait": (reading_claim - queued).total_seconds(),
        "read_and_report": (reported - reading_claim).total_seconds(),
    }

    today = datetime.now(UTC).date()
    figures = read_figures(store, Window(today - timedelta(days=1), today + timedelta(days=1)), datetime.now(UTC))
    stages = {summary.stage: summary for summary in figures.latencies}
    assert set(stages) == set(expected), stages  # no settle time: the retry wrote over the first queueing
    for stage, seconds in expected.items():
        assert stages[stage].count == 1
        assert stages[stage].p50 == pytest.approx(seconds, abs=0.01), stage
        assert 0 <= stages[stage].p50 < 60, stage  # before: queue wait -7,200 s, reading 7,200 s
