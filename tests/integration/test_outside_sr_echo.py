"""A PACS that routes whole studies sends radtrace's own draft back with the film: found trying radtrace from outside.

A real film (tests/data/real-cxr, NIH ChestX-ray14, under new UIDs) is sent to a running listener, read by the
worker's pipeline (demo backend) and reported; then the draft radtrace kept (``sr.dcm``, ``companion.dcm``) comes
back, as it does from a PACS whose routing rule forwards a study again when it changes (Orthanc's stable-study
routing in tests/orthanc_support.py has to leave SRs out for this reason). Before, each echo opened a new revision
that was then skipped ("no CR/DX radiograph (modality SR)"): ``radtrace status`` listed the reported study as
skipped, with a ``study retry`` hint that could only skip it again, and wrote a ``study_skipped`` audit event for a
study that had a draft. Now an instance the model would not read (no CR/DX radiograph) that arrives after its
study's latest revision was read, skipped or failed is stored (answered 0x0000, audited ``instance_received``
naming why it is not read) with that revision, and opens none. A new radiograph still opens the next revision.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from listener_support import audit_payloads, rows, running
from radtrace.config import Settings
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Revision, RevisionState, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from reassigned_support import NIH, SETTLE_S, demo_listener_settings, new_pipeline, send
from tests_support import as_part10
from worker_support import wait_until

pytestmark = pytest.mark.integration


def _film(target: Path, study_uid: str) -> Path:
    """The NIH film in a study of ours, as a new instance."""
    ds = pydicom.dcmread(NIH)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    as_part10(ds, syntax=None).save_as(target, enforce_file_format=True)
    return target


def _revisions(store: Store, study_uid: str) -> list[tuple[int, str, str | None]]:
    with store.session() as session:
        found = session.execute(
            sa.select(Revision.number, Revision.state, Revision.reason)
            .join(Study)
            .where(Study.study_uid == study_uid)
            .order_by(Revision.number)
        ).all()
    return [(int(number), RevisionState(state).value, reason) for number, state, reason in found]


@contextlib.contextmanager
def _reported(tmp_path: Path, store: Store, port: int) -> Iterator[tuple[Settings, StudyPipeline, str]]:
    """A demo site's listener running on ``port`` for the ``with`` block, a new study's film (``film.dcm``) sent to
    it, queued and read as revision 1 (reported): the site's settings, its pipeline and the Study Instance UID."""
    settings = demo_listener_settings(tmp_path, store, port)
    study_uid = generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        assert send([_film(tmp_path / "film.dcm", study_uid)], port) == [0x0000]
        wait_until(lambda: _revisions(store, study_uid) == [(1, "queued", None)])
        assert pipeline.process(study_uid, 1).result is Result.REPORTED
        yield settings, pipeline, study_uid


def test_radtraces_own_draft_sent_back_with_the_study_is_kept_and_leaves_the_study_reported(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    with _reported(tmp_path, store, listener_port) as (settings, pipeline, study_uid):
        draft = drafts_root(settings) / study_uid / "1"
        echoed = [draft / "sr.dcm", draft / "companion.dcm"]
        assert send(echoed, listener_port) == [0x0000, 0x0000]
        time.sleep(SETTLE_S * 4)  # a revision opened by the echo would be completed (skipped) by now
        assert _revisions(store, study_uid) == [(1, "reported", None)]
        kept = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in echoed}
        stored = {row.sop_instance_uid: row for row in rows(store, Instance)}
        assert kept <= set(stored)
        for uid in kept:
            assert (settings.spool_dir / stored[uid].path).is_file()
        received = [json.loads(p) for p in audit_payloads(store, "instance_received")]
        echoes = [p for p in received if p["sop_instance_uid"] in kept]
        assert [p["revision"] for p in echoes] == [1, 1]
        assert all(p["not_read"] == "no CR/DX radiograph (modality SR)" for p in echoes), echoes
        assert audit_payloads(store, "study_skipped") == []

        # a radiograph that comes later is read: it opens revision 2, read with the kept SRs among the study's files
        assert send([_film(tmp_path / "later.dcm", study_uid)], listener_port) == [0x0000]
        wait_until(lambda: _revisions(store, study_uid) == [(1, "reported", None), (2, "queued", None)])
        assert pipeline.process(study_uid, 2).result is Result.REPORTED


def test_an_sr_that_comes_first_is_still_a_revision_of_its_own_and_skipped(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """An SR of a study radtrace has not read (nothing to keep it with) is skipped, with its reason, as before."""
    with _reported(tmp_path, store, listener_port) as (settings, _, study_uid):
        sr = pydicom.dcmread(drafts_root(settings) / study_uid / "1" / "sr.dcm")
        other = generate_uid()
        sr.StudyInstanceUID = other
        sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        sr.save_as(tmp_path / "other-sr.dcm", enforce_file_format=True)
        assert send([tmp_path / "other-sr.dcm"], listener_port) == [0x0000]
        wait_until(lambda: _revisions(store, other) == [(1, "skipped", "no CR/DX radiograph (modality SR)")])
