"""The drafts and the review console read a header's Patient's Age (0010,1010) one way (radtrace.dicom_age).

Found on the NIH ChestX-ray14 copies, whose Patient's Age is a bare "58": the console showed "58 y", while the SR left
it out with "not a defined value; omitted" (and a "999Y" the console refused went into the SR). Now the drafts write
the AS "058Y" with a note saying how it was read; what is no age is omitted with a note, by both.
"""

from __future__ import annotations

import copy
import io
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from drafts_readback_support import read_back
from radtrace.config import ReportingSettings
from radtrace.console.ages import shown_age
from radtrace.console.worklist_header import patient_age, patient_header
from radtrace.model.study import study_image
from radtrace.reporting import codes
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.header import read_header
from reporting_support import REAL_FILMS, reading, source_study

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
NIH = "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
ASSUMED = "ISO_IR 100"
#: Bytes a sender may put in Patient's Age: the AS alphabet in both cases, padding, signs, the value delimiter,
#: controls, and bytes that are not ASCII.
AGE_BYTES = st.lists(
    st.one_of(
        st.sampled_from([b"0", b"5", b"8", b"9", b"1", b"D", b"W", b"M", b"Y", b"d", b"w", b"m", b"y"]),
        st.sampled_from([b" ", b"\x00", b"\t", b"\n", b"-", b"+", b".", b"\\", b"\x1b", b"\xa0", b"\xe9", b"\x85"]),
        st.binary(min_size=1, max_size=1),
    ),
    max_size=8,
).map(b"".join)


def _with_age(ds: Dataset, value: bytes | None) -> Dataset:
    """``ds`` without a birth date (so the console's age is the header's), its Patient's Age ``value`` as sent."""
    ds = copy.deepcopy(ds)
    for keyword in ("PatientAge", "PatientBirthDate"):
        if keyword in ds:
            del ds[keyword]
    if value is not None:
        tag = Tag(tag_for_keyword("PatientAge"))
        value += b" " * (len(value) % 2)
        ds._dict[tag] = RawDataElement(tag, "AS", len(value), value, 0, False, True)
    return ds


def _spooled(ds: Dataset, directory: Path) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    (directory / "image.dcm").write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _both(data: bytes, directory: Path) -> tuple[Dataset, str | None]:
    """The image as the worker reads it for the drafts, and the age the console's worklist keeps for it."""
    image = study_image(data, assumed_character_set=ASSUMED)
    return image.dataset, patient_age(patient_header(directory, "image.dcm", ASSUMED))


def test_the_nih_films_bare_years_are_written_as_an_as_with_a_note_in_every_draft(tmp_path: Path) -> None:
    data = (REAL_FILMS / NIH).read_bytes()
    (tmp_path / "image.dcm").write_bytes(data)
    film, console = _both(data, tmp_path)
    assert (film.PatientAge, console, shown_age(console)) == ("58", "058Y", "58 y")
    files = build_drafts(reading([film]), [film], settings=ReportingSettings(), revision=1, created_at=WHEN)
    back = read_back(files, tmp_path)
    assert back.sr_errors == []
    assert back.sr.PatientAge == "058Y"
    note = (
        "(0010,1010) PatientAge: not in PS3.5 AS form (a number without a unit, read as years; 2 digits where AS has "
        "3); written as an AS of 3 digits and Y"
    )
    assert note in back.sr_texts[codes.HEADER_NOTES.value].splitlines()
    assert note in back.oru_texts[codes.HEADER_NOTES.value].splitlines()
    assert note in back.fhir_report["conclusion"].splitlines()
    assert all("58" not in line for line in back.sr_texts[codes.HEADER_NOTES.value].splitlines())


@pytest.mark.parametrize(
    ("value", "written", "problem"),
    [
        (b"058Y", "058Y", None),
        (b"58Y", "058Y", "not in PS3.5 AS form (2 digits where AS has 3); written as an AS of 3 digits and Y"),
        (
            b"007m",
            "007M",
            "not in PS3.5 AS form (its unit in lower case, read as months); written as an AS of 3 digits and M",
        ),
        (b"abc", None, "not an age (PS3.5 AS: nnnD, nnnW, nnnM or nnnY, at most 130 years); omitted"),
        (b"-5Y", None, "not an age (PS3.5 AS: nnnD, nnnW, nnnM or nnnY, at most 130 years); omitted"),
        (b"999Y", None, "not an age (PS3.5 AS: nnnD, nnnW, nnnM or nnnY, at most 130 years); omitted"),
        (b"05\x1bY", None, "not an age (PS3.5 AS: nnnD, nnnW, nnnM or nnnY, at most 130 years); omitted"),
        (b"058Y\\060Y", None, "2 values where one is allowed; omitted"),
        (b"58\\", None, "2 values where one is allowed; omitted"),
    ],
)
def test_the_header_reading_and_the_console_agree_on_each_form(
    value: bytes, written: str | None, problem: str | None, tmp_path: Path
) -> None:
    data = _spooled(_with_age(source_study()[0], value), tmp_path)
    ds, console = _both(data, tmp_path)
    header = read_header(ds)
    assert (header.age or None, console) == (written, written)
    assert [note.problem for note in header.notes if note.keyword == "PatientAge"] == ([problem] if problem else [])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(AGE_BYTES, st.none()))
@example(value=b"58")
@example(value=b"999Y")
@example(value=b"58\\")
@example(value=b"\t58")
def test_property_the_drafts_header_and_the_console_give_the_same_age_or_none(
    value: bytes | None, tmp_path: Path
) -> None:
    data = _spooled(_with_age(source_study()[0], value), tmp_path)
    ds, console = _both(data, tmp_path)
    header = read_header(ds)
    assert (header.age or None) == console
    if header.age:
        assert len(header.age) == 4
    notes = [note for note in header.notes if note.keyword == "PatientAge"]
    assert len(notes) <= 1
    assert not notes or (notes[0].problem.endswith("omitted") == (not header.age))


# No shrinking: each example runs dciodvfy; the falsifying example is printed as generated.
@settings(
    max_examples=7,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(value=AGE_BYTES)
@example(value=b"58")
@example(value=b"9999")
@example(value=b"5\\6")
def test_property_any_patient_age_gives_an_sr_dciodvfy_passes_a_strict_oru_and_the_consoles_age(
    value: bytes, tmp_path: Path
) -> None:
    data = _spooled(_with_age(source_study()[0], value), tmp_path)
    ds, console = _both(data, tmp_path)
    files = build_drafts(reading([ds]), [ds], settings=ReportingSettings(), revision=1, created_at=WHEN)
    back = read_back(files, tmp_path)  # the ORU is validated under hl7apy STRICT there
    assert back.sr_errors == []
    assert back.sr.get("PatientAge") == console
