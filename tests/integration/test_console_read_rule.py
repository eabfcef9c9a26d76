"""One rule says whether a revision was read (its draft made): the worklist lists exactly the revisions the study page
treats as read, and a later one of them supersedes an earlier one in both.

The case where the two used to differ: revision 2 is read and drafted, its delivery is then settled as failed (a late
success marks the delivery done after; or there is no failed delivery to send again), and ``radtrace study retry``
queues it again with its ``reported_at`` kept (worker/study_retry.py). The study page said revision 2 was read
(revision 1 "superseded by revision 2", its decisions closed), while the worklist's sync, which knew only reported,
dispatched and failed-with-reported_at, never listed revision 2 and left revision 1 unsuperseded: the radiologist was
sent to a revision the worklist did not have. Real pipeline (demo backend), real retry, SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from console_support import OPERATOR, console_settings, reported_study
from radtrace.console.review import load_review
from radtrace.console.schema import ReviewItem
from radtrace.console.worklist import READ_STATES, read_where, sync_review_items, was_read
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from radtrace.worker.study_retry import retry_revision
from worker_support import spool_study

pytestmark = pytest.mark.integration


def _revision(store: Store, study_uid: str, number: int) -> Revision:
    with store.session() as session:
        found = session.scalar(
            sa.select(Revision).join(Study).where(Study.study_uid == study_uid, Revision.number == number)
        )
        assert found is not None
        session.expunge(found)
        return found


def _rows(store: Store, study_uid: str) -> dict[int, bool]:
    """revision -> superseded, for the study's worklist rows."""
    with store.session() as session:
        rows = session.execute(
            sa.select(ReviewItem.revision, ReviewItem.superseded).where(ReviewItem.study_uid == study_uid)
        ).all()
    return {number: superseded for number, superseded in rows}


def test_a_drafted_revision_queued_again_by_a_study_retry_is_read_for_the_page_and_the_worklist_alike(
    store: Store, tmp_path: Path
) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    spec = StudySpec(patient_name="RETRIED^ROSA", patient_id="RT0000171", accession="ACC000171", seed=171)
    study_uid = reported_study(settings, store, reader, seed=171, name="RETRIED^ROSA")
    assert sync_review_items(store, settings.spool_dir) == 1
    assert _rows(store, study_uid) == {1: False}
    # a lateral arrives: revision 2, read and drafted by the pipeline
    lateral = make_study(spec, [ImageSpec(), ImageSpec(view="LL")])[1]
    assert str(lateral.StudyInstanceUID) == study_uid
    spool_study(settings, store, [lateral], number=2)
    assert StudyPipeline(settings, store, reader, worker="read-rule").process(study_uid, 2).result is Result.REPORTED
    # its delivery settled as failed, then retried by hand before any page brought the worklist up to date
    with store.session() as session:
        session.execute(
            sa.update(Revision)
            .where(Revision.id == _revision(store, study_uid, 2).id)
            .values(state=RevisionState.FAILED, finished_at=utc_now(),
                    reason="delivery to pacs PACS@127.0.0.1:11112 failed: association rejected")
        )  # fmt: skip
    retried = retry_revision(store, study_uid, 2, OPERATOR)
    assert retried.redelivered == []  # nothing failed to send again: it is queued, its draft's reported_at kept
    second = _revision(store, study_uid, 2)
    assert second.state is RevisionState.QUEUED
    assert second.reported_at is not None

    # the page's rule (Python) and the worklist's (SQL) say the same of it
    assert was_read(second.state, second.reported_at)
    with store.session() as session:
        read_sql = session.scalar(sa.select(read_where()).where(Revision.id == second.id))
    assert read_sql is True
    first_page = load_review(store, study_uid, 1)
    assert first_page is not None
    assert first_page.superseded_by == 2  # the page sends the radiologist to revision 2 ...
    assert load_review(store, study_uid, 2) is not None  # ... which has a reading to review ...
    assert sync_review_items(store, settings.spool_dir) == 1  # ... and the worklist lists it (before: 0)
    assert _rows(store, study_uid) == {1: True, 2: False}


def test_the_rule_in_python_and_in_sql_agree_for_every_state(store: Store) -> None:
    """Every state, with and without a ``reported_at``: read when reported or dispatched, or once reported."""
    cases = [(state, reported) for state in RevisionState for reported in (False, True)]
    with store.session() as session:
        study = Study(study_uid="1.2.826.0.1.3680043.8.498.171", study_key="k171", accession="ACC000172")
        session.add(study)
        for number, (state, reported) in enumerate(cases, 1):
            session.add(Revision(study=study, number=number, state=state, queued_at=utc_now(),
                                 reported_at=utc_now() if reported else None))  # fmt: skip
        session.flush()
        found = session.execute(
            sa.select(Revision.number, Revision.state, Revision.reported_at, read_where()).where(
                Revision.study_id == study.id
            )
        ).all()
    assert len(found) == len(cases)
    for _number, state, at, read_sql in found:
        assert bool(read_sql) is was_read(state, at), (state, at)
        assert was_read(state, at) is (at is not None or state in READ_STATES), (state, at)
