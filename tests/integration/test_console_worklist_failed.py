"""A study the worker could not read shows in the worklist as failed, with its reason, instead of not at all.

Real SQLite and PostgreSQL; a revision left failed as the worker leaves one (state ``failed`` and its reason), next
to a study read by the real pipeline (demo backend; see console_support).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, console_settings, reported_study, sign_in
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from worker_support import spool_study

pytestmark = pytest.mark.integration

REASON = "inference failed after 3 attempts: model backend unavailable"


def test_a_failed_study_is_listed_as_failed_with_its_reason(store: Store, tmp_path: Path) -> None:
    settings = console_settings(tmp_path, store)
    reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=91)
    spec = StudySpec(patient_name="FAIL^<b>FRED</b>", patient_id="RT0000092", accession="ACC000092", seed=92)
    failed_uid, _number = spool_study(settings, store, make_study(spec, [ImageSpec()]), state=RevisionState.FAILED)
    with store.session() as session:
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == failed_uid))
        assert revision is not None
        revision.reason, revision.finished_at = REASON, utc_now()
    add_user(store, "dr.fail", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.fail")
        worklist = client.get("/console/worklist").text
        assert re.search(r'href="\?filter=failed"[^>]*>failed \(1\)</a>', worklist), "the failure is not hidden"
        page = client.get("/console/worklist?filter=failed")
        assert page.status_code == 200
        rows = re.findall(r'<tr class="row failed".*?</tr>', page.text, re.S)
        assert len(rows) == 1
        assert "FAIL, &lt;b&gt;FRED&lt;/b&gt;" in rows[0]
        assert "RT0000092" in rows[0]
        assert "ACC000092" in rows[0]
        assert REASON in rows[0]
        assert "failed" in rows[0]
        assert 'data-testid="total">1 failed</span>' in page.text  # not "1 draft": a failed study has none
        assert "radtrace study retry" in page.text  # the command that exists (radtrace/cli/studies.py)
        # a failure that a later reading replaced is no longer listed
        with store.session() as session:
            study = session.scalar(sa.select(Study).where(Study.study_uid == failed_uid))
            assert study is not None
            session.add(Revision(study=study, number=2, state=RevisionState.QUEUED))
        assert "failed (0)" in client.get("/console/worklist").text
        assert '<tr class="row failed"' not in client.get("/console/worklist?filter=failed").text


def test_a_draft_whose_delivery_failed_before_the_worklist_saw_it_is_listed_and_named_as_not_delivered(
    store: Store, tmp_path: Path
) -> None:
    """Read and drafted, then its delivery to the PACS failed for good before any console page brought the worklist up
    to date (the dispatcher leaves the revision failed with its reported_at): before, the draft never reached the
    worklist (only reported and dispatched revisions were added) and the failed list said "no draft exists"."""
    settings = console_settings(tmp_path, store)
    uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=93,
                         name="UNSENT^ULLA")  # fmt: skip
    reason = "delivery to pacs PACS@127.0.0.1:11112 failed: association rejected (permanent)"
    with store.session() as session:
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == uid))
        assert revision is not None
        assert revision.reported_at is not None
        revision.state, revision.reason, revision.finished_at = RevisionState.FAILED, reason, utc_now()
    add_user(store, "dr.unsent", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.unsent")
        worklist = client.get("/console/worklist?filter=all").text
        assert "UNSENT, ULLA" in worklist  # the draft is there to be reviewed
        failed = client.get("/console/worklist?filter=failed").text
        [row] = re.findall(r'<tr class="row failed".*?</tr>', failed, re.S)
        assert "draft not delivered" in row
        assert reason in row
