"""A header without a usable Patient's Age but with Patient's Birth Date and Study Date: every draft gives the age the
review console shows, derived from those dates, and says where it came from.

Found on the NEMA RG1 films (tests/data/real-cxr/): born 1940-03-05, studied 2004-08-26, no Patient's Age. The
console's worklist showed "64 y" (radtrace.dicom_age.age_from_dates); the SR carried no Patient's Age at all, and no
draft said why. PS3.3 C.7.2.2 defines Patient's Age (0010,1010) as the age at the study, which is what a viewer works
out from the two dates: the SR now writes it, and the SR's, the ORU's and the FHIR Bundle's header notes say it was
derived (the ORU's PID-7 and the FHIR Patient's birthDate carry the birth date it came from; neither has an age
field). One rule, radtrace.dicom_age.age_at_study, decides the age for the console and the drafts.
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from drafts_readback_support import one_image_drafts, read_back
from radtrace.console.worklist_header import patient_age, patient_header
from radtrace.dicom_age import DERIVED, age_at_study
from radtrace.model.study import study_image
from radtrace.reporting import codes
from radtrace.reporting.header import read_header
from reporting_support import REAL_FILMS, source_study

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
NEMA = "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm"
ASSUMED = "ISO_IR 100"
DERIVED_NOTE = f"(0010,1010) PatientAge: absent from the header; {DERIVED}"
#: DA values and what else a sender puts in a date: real dates (infants' included), impossible days, ISO forms,
#: nothing.
DATES = st.one_of(
    st.dates(min_value=date(1880, 1, 1), max_value=date(2030, 12, 31)).map(lambda d: d.strftime("%Y%m%d")),
    st.sampled_from(["20260230", "2026-06-01", "19620101\\19630101", "2026060", "abcdefgh"]),
    st.none(),
)


def _spooled(ds: Dataset, directory: Path) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    (directory / "image.dcm").write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _with_dates(ds: Dataset, age: bytes | None, born: str | None, seen: str | None) -> Dataset:
    """``ds`` with Patient's Age ``age`` as sent (None: absent), and the birth and study dates given (None: absent)."""
    ds = copy.deepcopy(ds)
    for keyword in ("PatientAge", "PatientBirthDate", "StudyDate"):
        if keyword in ds:
            del ds[keyword]
    if age is not None:
        tag = Tag(tag_for_keyword("PatientAge"))
        age += b" " * (len(age) % 2)
        ds._dict[tag] = RawDataElement(tag, "AS", len(age), age, 0, False, True)
    for keyword, value in (("PatientBirthDate", born), ("StudyDate", seen)):
        if value is not None:
            tag = Tag(tag_for_keyword(keyword))
            raw = value.encode("ascii") + b" " * (len(value) % 2)
            ds._dict[tag] = RawDataElement(tag, "DA", len(raw), raw, 0, False, True)
    return ds


def _console(data: bytes, directory: Path) -> tuple[Dataset, str | None]:
    """The image as the worker reads it for the drafts, and the age the console's worklist keeps for it."""
    (directory / "image.dcm").write_bytes(data)
    image = study_image(data, assumed_character_set=ASSUMED)
    return image.dataset, patient_age(patient_header(directory, "image.dcm", ASSUMED))


def test_a_real_film_without_an_age_gets_the_consoles_age_in_the_sr_and_a_note_in_every_draft(tmp_path: Path) -> None:
    data = (REAL_FILMS / NEMA).read_bytes()
    film, console = _console(data, tmp_path)
    assert "PatientAge" not in film
    assert (film.PatientBirthDate, film.StudyDate, console) == ("19400305", "20040826", "064Y")
    back = read_back(one_image_drafts(film, WHEN), tmp_path)
    assert back.sr_errors == []
    assert back.sr.PatientAge == "064Y"
    assert DERIVED_NOTE in back.sr_texts[codes.HEADER_NOTES.value].splitlines()
    assert DERIVED_NOTE in back.oru_texts[codes.HEADER_NOTES.value].splitlines()
    assert DERIVED_NOTE in back.fhir_report["conclusion"].splitlines()
    assert back.segment("PID")[7] == "19400305"  # the date the ORU's receiver works the age out from
    assert back.fhir_patient["birthDate"] == "1940-03-05"


@pytest.mark.parametrize(
    ("age", "born", "written", "problem"),
    [
        (b"058Y", "19620101", "058Y", None),  # the header's age wins over the dates
        (None, "20260101", "005M", f"absent from the header; {DERIVED}"),  # an infant: months, not "000Y"
        (None, "20260525", "007D", f"absent from the header; {DERIVED}"),
        (
            b"abc",
            "19620101",
            "064Y",
            f"not an age (PS3.5 AS: nnnD, nnnW, nnnM or nnnY, at most 130 years); {DERIVED}",
        ),
        (b"058Y\\060Y", "19620101", "064Y", f"2 values where one is allowed; {DERIVED}"),
        (None, "20260602", None, None),  # born after the study: no age, as the console shows none
        (None, "1962-01-01", None, None),  # not a DA: the console derives none, nor do the drafts
        (b"abc", None, None, "not an age (PS3.5 AS: nnnD, nnnW, nnnM or nnnY, at most 130 years); omitted"),
    ],
)
def test_the_drafts_header_and_the_console_agree_on_each_case(
    age: bytes | None, born: str | None, written: str | None, problem: str | None, tmp_path: Path
) -> None:
    data = _spooled(_with_dates(source_study()[0], age, born, "20260601"), tmp_path)
    ds, console = _console(data, tmp_path)
    header = read_header(ds)
    assert (header.age or None, console) == (written, written)
    assert [note.problem for note in header.notes if note.keyword == "PatientAge"] == ([problem] if problem else [])


@settings(max_examples=80, deadline=None)
@given(age=st.sampled_from([None, b"abc", b"058Y", b"58", b"999Y"]), born=DATES, seen=DATES)
@example(age=None, born="19400305", seen="20040826")
@example(age=None, born="20040826", seen="20040826")
@example(age=None, born="19800229", seen="20260228")
def test_property_the_drafts_age_is_the_consoles_and_a_derived_one_says_so(
    age: bytes | None, born: str | None, seen: str | None
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        data = _spooled(_with_dates(source_study()[0], age, born, seen), Path(directory))
        ds, console = _console(data, Path(directory))
    header = read_header(ds)
    assert (header.age or None) == console == age_at_study(ds.get("PatientAge"), born, seen).age
    notes = [note.problem for note in header.notes if note.keyword == "PatientAge"]
    assert len(notes) <= 1
    derived = bool(notes) and notes[0].endswith(DERIVED)
    assert derived == (header.age != "" and age_at_study(ds.get("PatientAge"), None, None).age is None)


# No shrinking: each example runs dciodvfy; the falsifying example is printed as generated.
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(born=st.dates(min_value=date(1900, 1, 1), max_value=date(2026, 6, 1)))
@example(born=date(2026, 6, 1))
@example(born=date(1896, 6, 2))
def test_property_an_sr_with_a_derived_age_passes_dciodvfy_and_carries_the_consoles_age(
    born: date, tmp_path: Path
) -> None:
    data = _spooled(_with_dates(source_study()[0], None, born.strftime("%Y%m%d"), "20260601"), tmp_path)
    ds, console = _console(data, tmp_path)
    back = read_back(one_image_drafts(ds, WHEN), tmp_path)
    assert back.sr_errors == []
    assert back.sr.get("PatientAge") == console
    assert console is not None
    assert DERIVED_NOTE in back.sr_texts[codes.HEADER_NOTES.value].splitlines()
