"""A later revision's predecessors are found in one database session: the withdrawn revisions (whose drafts are never
predecessors) and the outbox's earlier SR payloads together, no file read while it is open.

Before, ``StudyPipeline._predecessors`` opened a session only to find the withdrawn revisions (a query it imported from
the listener, :mod:`radtrace.dicom_listener.reassigned`) and ``Outbox.earlier_srs`` opened another: two sessions per
study revision drafted, where one does (the query is now :mod:`radtrace.store.withdrawn`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa

from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study
from radtrace.testing.studies import StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from withdrawn_drafts_support import predecessors
from worker_support import spool_study, worker_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def with_file_drop(tmp_path: Path, store: Store, tiny_model_dir: Path) -> Settings:
    url = str(store.engine.url.render_as_string(hide_password=False))
    return worker_settings(tmp_path, url, tiny_model_dir)  # a file drop: every draft is also an outbox payload


class _Sessions:
    """The sessions the store opens (by what they were for) and the files pydicom opens while one is open, and the
    sessions opened while the pipeline looks for a revision's predecessors."""

    def __init__(self, store: Store, pipeline: StudyPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[str] = []
        self.for_predecessors: list[str] = []
        self.read_inside: list[Path] = []
        self._open = 0
        real_session, real_predecessors, real_read = store.session, pipeline.recording.predecessors, pydicom.dcmread

        @contextlib.contextmanager
        def session(doing: str = "using the database", **kwargs: Any) -> Iterator[Any]:
            self.opened.append(doing)
            self._open += 1
            try:
                with real_session(doing, **kwargs) as opened:
                    yield opened
            finally:
                self._open -= 1

        def finding(claim: Any) -> Any:
            before = len(self.opened)
            try:
                return real_predecessors(claim)
            finally:
                self.for_predecessors += self.opened[before:]

        def dcmread(fp: Any, *args: Any, **kwargs: Any) -> Any:
            if self._open and isinstance(fp, str | Path):
                self.read_inside.append(Path(fp))
            return real_read(fp, *args, **kwargs)

        monkeypatch.setattr(store, "session", session)
        monkeypatch.setattr(pipeline.recording, "predecessors", finding)
        monkeypatch.setattr(pydicom, "dcmread", dcmread)


def _two_revisions(settings: Settings, store: Store, seed: int) -> tuple[StudyPipeline, str]:
    pa, lateral = make_study(StudySpec(seed=seed))
    study_uid, _ = spool_study(settings, store, [pa])
    spool_study(settings, store, [lateral], number=2)
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir))
    assert pipeline.process(study_uid, 1).result is Result.REPORTED
    return pipeline, study_uid


def test_the_predecessors_of_a_revision_are_found_in_one_session(
    with_file_drop: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, study_uid = _two_revisions(with_file_drop, store, seed=41)
    sessions = _Sessions(store, pipeline, monkeypatch)

    assert pipeline.process(study_uid, 2).result is Result.REPORTED

    assert len(sessions.for_predecessors) == 1, sessions.for_predecessors  # was 2: withdrawn drafts, earlier SRs
    assert sessions.read_inside == []  # no SR file read while a transaction is open
    kept = drafts_root(with_file_drop) / study_uid
    first = str(pydicom.dcmread(kept / "1" / "sr.dcm").SOPInstanceUID)
    assert predecessors(pydicom.dcmread(kept / "2" / "sr.dcm")) == [first]


def test_a_withdrawn_revision_is_still_no_predecessor_with_one_session(
    with_file_drop: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revision 1's draft withdrawn (an image it read rejected by the PACS): neither its kept SR nor its outbox copy
    is a predecessor, and the one session still finds that out."""
    pipeline, study_uid = _two_revisions(with_file_drop, store, seed=42)
    with store.session() as session:
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == study_uid))
        session.execute(
            sa.update(Revision)
            .where(Revision.study_id == study_id, Revision.number == 1)
            .values(rejected_at=sa.func.now())
        )
    sessions = _Sessions(store, pipeline, monkeypatch)

    assert pipeline.process(study_uid, 2).result is Result.REPORTED

    assert len(sessions.for_predecessors) == 1, sessions.for_predecessors
    kept = drafts_root(with_file_drop) / study_uid
    assert predecessors(pydicom.dcmread(kept / "2" / "sr.dcm")) == []
    assert predecessors(pydicom.dcmread(kept / "2" / "companion.dcm")) == []
