""" "Start reading" does not offer a withdrawn draft until a radiologist checked it.

A draft read from an image the PACS then re-sent under another patient (or rejected) was reported before the
correction, so by worklist order (STAT first, then oldest) it came first: before, "Start reading" (and ``n``) opened
it ahead of every draft a radiologist can sign, though it may be about another patient's film and accepting it is
refused. Now it is passed over (the worklist row says so) until a radiologist records on its page that they checked
it; then it is offered in worklist order again. Demo pipeline, console through the ASGI app.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, console_settings, csrf_of, reported_study, sign_in, study_path
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study
from reassigned_support import marks_shown, worklist_row

pytestmark = pytest.mark.integration


def test_start_reading_passes_over_a_withdrawn_draft_until_it_is_checked(store: Store, tmp_path: Path) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    withdrawn = reported_study(settings, store, reader, seed=301, age_s=600)  # the oldest: first in the queue
    readable = reported_study(settings, store, reader, seed=302, age_s=300)
    with store.session() as session:  # the PACS re-sent its image under another patient (as the listener marks it)
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == withdrawn))
        session.execute(sa.update(Revision).where(Revision.study_id == study_id).values(reassigned_at=utc_now()))
    add_user(store, "rad.one", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "rad.one")

        def offered() -> str:
            answer = client.get("/console/next", follow_redirects=False)
            assert answer.status_code == 303, answer.text
            return str(answer.headers["location"])

        assert offered() == study_path(store, readable)
        worklist = client.get("/console/worklist").text
        row = worklist_row(worklist, study_path(store, withdrawn))
        assert 'data-testid="not-offered"' in row
        assert "withdrawn, not offered by Start reading until checked" in row  # said to a screen reader too
        assert 'data-testid="not-offered"' not in worklist_row(worklist, study_path(store, readable))

        page = client.get(study_path(store, withdrawn)).text
        checked = client.post(f"{study_path(store, withdrawn)}/flags-checked", follow_redirects=False,
                              data={"csrf_token": csrf_of(page), "reason": "Checked in the PACS: same patient.",
                                    "marks_shown": marks_shown(page)})  # fmt: skip
        assert checked.status_code == 303, checked.text
        assert offered() == study_path(store, withdrawn)  # checked: offered in worklist order, oldest first
        assert 'data-testid="not-offered"' not in worklist_row(
            client.get("/console/worklist").text, study_path(store, withdrawn)
        )
