"""A worklist page past the last one (a radiologist on page 3 decides studies until fewer pages are left, then
reloads or follows "previous"; an old bookmark) said "Nothing waiting." (the failed list: "No study failed.") and
"page 4 of 1" while drafts were waiting: a reader could take the list for done. Now it says the page is past the last,
how many there are, and links to the last page; "previous" leads to the last page, not to another empty one."""

from __future__ import annotations

import re
from pathlib import Path

from console_support import add_user, console_client, console_settings, reported_study, sign_in
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from worker_support import spool_study


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_page_past_the_last_says_so_and_leads_to_the_last_not_nothing_waiting(tmp_path: Path, store: Store) -> None:
    settings = console_settings(tmp_path, store)
    reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=81, name="PAST^PAT")
    spool_study(settings, store, make_study(StudySpec(patient_id="RT0000084", seed=84), [ImageSpec()]),
                state=RevisionState.FAILED)  # fmt: skip
    add_user(store, "rad.one", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "rad.one")
        past = client.get("/console/worklist?filter=all&page=4")
        failed = client.get("/console/worklist?filter=failed&page=3")
        mine = client.get("/console/worklist?filter=mine")
    assert past.status_code == failed.status_code == mine.status_code == 200
    text = _text(past.text)
    assert "Nothing waiting" not in text
    assert "Page 4 is past the last page: 1 draft on page 1. Go to page 1" in text
    assert 'href="?filter=all&page=1">Go to page 1</a>' in past.text
    assert 'href="?filter=all&page=1" rel="prev"' in past.text  # not page 3, empty as well
    assert "page 4, past the last (1)" in text
    text = _text(failed.text)
    assert "No study failed" not in text
    assert "Page 3 is past the last page: 1 failed on page 1. Go to page 1" in text
    assert "Nothing waiting." in _text(mine.text)  # an empty filter's first page says so, as before
