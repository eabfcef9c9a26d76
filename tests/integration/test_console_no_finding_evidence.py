"""A draft that answers "No Finding" shows the reasoning's sentence saying the film is normal as its evidence.

Found in a radiologists' trial: the No Finding row of the demo model's normal film had no evidence at all, though
the reasoning ends "Summary: Normal chest radiograph without acute cardiopulmonary abnormality." (no word names
"No Finding", so no sentence was found for it), while every other row showed the sentence it rests on.
"""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from console_support import (
    add_user,
    console_client,
    console_settings,
    finding_evidence,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration

#: The demo model's normal film (nv_normal.txt) is the one replayed for the study of this seed.
NORMAL_FILM_SEED = 95
SUMMARY = "Summary: Normal chest radiograph without acute cardiopulmonary abnormality."


def test_no_finding_shows_the_sentence_saying_the_film_is_normal_and_no_other(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    study_uid = reported_study(settings, store, reader, seed=NORMAL_FILM_SEED)
    add_user(store, "dr.normal", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.normal")
        page = client.get(study_path(store, study_uid)).text
    assert 'data-label="No Finding"' in page, "the demo model's normal film was not the one read"
    assert finding_evidence(page, "No Finding") == [SUMMARY]
    # the reasoning marks it as the evidence of No Finding, as it marks the others'
    assert f'data-findings="No Finding"><bdi class="free-text">{html.escape(SUMMARY)}' in page
    # the other rows keep their own sentences: a part found normal is not evidence of a normal film
    assert finding_evidence(page, "Cardiomegaly") == ["Heart: Heart size is normal."]
    store.dispose()
