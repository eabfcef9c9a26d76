"""The review console shows a name whose character set the film does not declare as the worker read it, and says
that it was assumed; the site's ``listener.assumed_character_set`` is what the worker, the console and ``radtrace
model read`` read undeclared non-UTF-8 text in.

Before: the worklist read its own copy of the header with pydicom's default (Latin-1), so a UTF-8 'Müller^Jürgen'
sent with no Specific Character Set was listed as 'MÃ¼ller JÃ¼rgen' while the drafts (since 91a16b6) said
'Müller Jürgen'; and the assumed set for other bytes was ISO_IR 100 in code, with no setting: a Cyrillic site's
ISO 8859-5 names read as Latin-1 letters everywhere."""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.dataelem import DataElement

from console_support import add_user, console_client, console_settings, sign_in, study_path
from radtrace.config import ConfigError, Settings, load_settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import spool_study

pytestmark = pytest.mark.integration

UTF8_NAME = "Müller^Jürgen".encode()
CYRILLIC_NAME = "Иванов^Иван".encode("iso8859_5")


def _undeclared_study(settings: Settings, store: Store, reader: StudyReader, seed: int, name: bytes) -> str:
    """A study whose films carry ``name``'s bytes as PatientName and no Specific Character Set, read by the
    pipeline; its Study UID."""
    spec = StudySpec(patient_name="PLACEHOLDER", patient_id=f"RT{seed:07d}", accession=f"ACC{seed:06d}", seed=seed)
    datasets = make_study(spec, [ImageSpec()])
    for ds in datasets:
        if "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
        ds.add(DataElement(0x00100010, "PN", name))
    study_uid, number = spool_study(settings, store, datasets)
    result = StudyPipeline(settings, store, reader, worker="console-test").process(study_uid, number)
    assert result.result is Result.REPORTED, result
    with store.session() as session:
        state = session.scalar(sa.select(Revision.state).join(Study).where(Study.study_uid == study_uid))
    assert state is RevisionState.REPORTED
    return study_uid


@pytest.mark.parametrize(
    ("assumed", "name", "shown"),
    [
        ("ISO_IR 100", UTF8_NAME, "Müller, Jürgen"),  # valid UTF-8: read as UTF-8 whatever the site assumes
        ("ISO_IR 144", UTF8_NAME, "Müller, Jürgen"),
        ("ISO_IR 144", CYRILLIC_NAME, "Иванов, Иван"),  # not UTF-8: the site's set
    ],
)
def test_worklist_and_study_page_show_an_undeclared_name_as_read_and_flag_it(
    store: Store, tmp_path: Path, assumed: str, name: bytes, shown: str
) -> None:
    settings = console_settings(tmp_path, store)
    settings = settings.model_copy(
        update={"listener": settings.listener.model_copy(update={"assumed_character_set": assumed})}
    )
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unknown encoding|Invalid value for VR")
        study = _undeclared_study(settings, store, reader, 91, name)
    add_user(store, "dr.charset", "radiologist")
    client = console_client(store, settings)
    sign_in(client, "dr.charset")

    worklist = html.unescape(client.get("/console/worklist?filter=all").text)
    assert f">{shown}</a>" in worklist, worklist.split("<tbody", 1)[-1][:2000]
    assert "character set assumed" in worklist
    assert "Ã" not in worklist
    flagged = html.unescape(client.get("/console/worklist?filter=flagged").text)
    assert f">{shown}</a>" in flagged
    page = client.get(study_path(store, study))
    assert page.status_code == 200
    [heading] = re.findall(r'<span class="patient-name" dir="auto">([^<]*)</span>', page.text)
    assert html.unescape(heading) == shown


@pytest.mark.parametrize("term", ["ISO_IR 6", "ISO_IR 192", "latin1", "ISO 2022 IR 100", ""])
def test_an_assumed_character_set_that_cannot_be_one_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, term: str
) -> None:
    monkeypatch.setenv("RADTRACE_LISTENER__ASSUMED_CHARACTER_SET", term)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "RADTRACE_LISTENER__ASSUMED_CHARACTER_SET" in str(caught.value)
    assert "ISO_IR 100" in str(caught.value)  # says what would do


def test_the_default_and_a_single_byte_site_set_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().listener.assumed_character_set == "ISO_IR 100"
    monkeypatch.setenv("RADTRACE_LISTENER__ASSUMED_CHARACTER_SET", "ISO_IR 144")
    assert load_settings().listener.assumed_character_set == "ISO_IR 144"
