"""Every console page writes a patient's age in one form: "64 y", and "5 mo", "3 wk" or "5 d" for an infant.

Found in a radiologists' trial: the worklist and the study page wrote "064Y" for an age worked out from the birth
date, but "58" for one the header's Patient's Age gave as bare digits (the NIH ChestX-ray14 copies), and a header's
value whatever it held ("abc" and a control character included). A birth date after today gave an age in years.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from console_support import add_user, console_client, console_settings, sign_in, study_path
from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Priority, Revision, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import spool_study

pytestmark = pytest.mark.integration


def _raw(dataset: Dataset, keyword: str, value: bytes) -> None:
    """An element as a peer sends it, whatever its VR allows."""
    tag = Tag(tag_for_keyword(keyword))
    value += b" " * (len(value) % 2)
    dataset._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


def _header(age: bytes | None, born: str | None, seen: str = "20260601") -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        for keyword in ("PatientAge", "PatientBirthDate"):
            if keyword in ds:
                del ds[keyword]
        if age is not None:
            _raw(ds, "PatientAge", age)
        if born is not None:
            ds.PatientBirthDate = born
        ds.StudyDate = seen

    return change


#: patient ID → (how the header says it, the age every page writes)
CASES: dict[str, tuple[Callable[[Dataset], None], str]] = {
    "RTAGE0001": (_header(b"58", None), "58 y"),  # bare digits: years
    "RTAGE0002": (_header(None, "19620101"), "64 y"),  # from the dates ("064Y" before)
    "RTAGE0003": (_header(None, "20260101"), "5 mo"),  # an infant ("000Y" before)
    "RTAGE0004": (_header(b"007M", "19620101"), "7 mo"),  # the header's age, not the dates'
    "RTAGE0005": (_header(b"ab\x1bc", None), "?"),  # hostile: never written as sent
    "RTAGE0006": (_header(b"999Y", None), "?"),  # past any life
    "RTAGE0007": (_header(None, "20980101", seen="20990601"), "?"),  # born after today
}


def _reported(settings: Settings, store: Store, reader: StudyReader, patient_id: str, seed: int) -> str:
    change, _ = CASES[patient_id]
    datasets = make_study(StudySpec(patient_id=patient_id, accession=f"ACCAGE{seed:04d}", seed=seed), [ImageSpec()])
    for ds in datasets:
        change(ds)
    study_uid, number = spool_study(settings, store, datasets)
    with store.session("setting a study's priority", immediate=True) as session:
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == study_uid))
        assert revision is not None
        revision.priority = Priority.ROUTINE
    result = StudyPipeline(settings, store, reader, worker="console-test").process(study_uid, number)
    assert result.result is Result.REPORTED, result
    return study_uid


def _worklist_ages(page: str) -> dict[str, str]:
    ages = {}
    for row in re.findall(r'<tr class="row.*?</tr>', page, re.S):
        patient = re.search(r'data-testid="patient-id">(.*?)</div>', row, re.S)
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        assert patient is not None, row
        age_sex = next(cell for cell in cells if cell.endswith((" / F", " / M", " / ?")))
        ages[html.unescape(re.sub(r"<[^>]+>", "", patient.group(1))).strip()] = html.unescape(age_sex.rsplit(" / ")[0])
    return ages


def test_the_worklist_and_the_study_page_write_each_age_in_one_form(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = {patient: _reported(settings, store, reader, patient, 300 + i) for i, patient in enumerate(CASES)}
    add_user(store, "dr.age", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.age")
        listed = _worklist_ages(client.get("/console/worklist?filter=all").text)
        assert listed == {patient: shown for patient, (_, shown) in CASES.items()}
        for patient, study_uid in studies.items():
            page = client.get(study_path(store, study_uid)).text
            head = re.search(r'data-testid="patient-id">.*?</span> · (.*?) / ', page)
            assert head is not None, patient
            assert html.unescape(head.group(1)) == CASES[patient][1], patient
            assert "\x1b" not in page
    store.dispose()
