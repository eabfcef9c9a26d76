"""Real headers: a draft is built whatever the source header holds, and each output says what it left out.

The faults are those of issue 13 (tests/reporting_support.hostile_header_study), given to the outputs both as
in-memory values and as a file written and read back the way the worker reads the spool. The real films'
SRs are validated with dciodvfy in tests/integration/test_reporting_sr_validation.py.
"""

from __future__ import annotations

import io
import json
import warnings
from datetime import UTC, date, datetime, time

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import config, dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from radtrace.config import ReportingSettings
from radtrace.reporting import codes
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.header import read_header
from radtrace.reporting.sr import HEADER_NORMALISED
from reporting_support import REAL_FILM_SHA256, hostile_header_study, reading, real_film, source_study

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def _via_file(datasets: list[Dataset]) -> list[Dataset]:
    """Write and read back each dataset (invalid values and all), as the spool holds them."""
    out = []
    for ds in datasets:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(buffer, enforce_file_format=True)
        out.append(dcmread(io.BytesIO(buffer.getvalue())))
    return out


@pytest.mark.parametrize("source", ["memory", "file"])
def test_a_hostile_header_still_gives_all_three_drafts_with_what_was_normalised_said(source: str) -> None:
    datasets = hostile_header_study() if source == "memory" else _via_file(hostile_header_study())
    read = reading(datasets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pydicom or highdicom warning on the way out either
        files = build_drafts(read, datasets, settings=ReportingSettings(gsps=True), revision=1, created_at=WHEN)

    assert files.gsps is not None  # the reading has a box: the GSPS is built from the checked header too
    with config.strict_reading():
        sr = dcmread(io.BytesIO(files.sr))
        _ = [element.value for element in sr.iterall()]
        gsps = dcmread(io.BytesIO(files.gsps))
        _ = [element.value for element in gsps.iterall()]
    assert (gsps.PatientID, gsps.StudyDate, gsps.AccessionNumber) == ("", "20250314", "")
    assert sr.PatientID == ""  # two values: none chosen as *the* ID
    assert [item.PatientID for item in sr.OtherPatientIDsSequence] == ["ID-0001", "ID|0002^x"]
    assert str(sr.PatientName) == "Doe^John"
    assert (sr.StudyDate, sr.StudyTime) == ("20250314", "101530")
    assert sr.AccessionNumber == ""  # 20 characters do not fit SH: left empty, never cut
    assert sr.PatientBirthDate == ""
    assert sr.StudyID == ""
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert all(item.SeriesInstanceUID for item in evidence)
    notes = _sr_text(sr, codes.HEADER_NOTES.value)
    assert "(0010,0020) PatientID: 2 values" in notes
    assert "(0008,0020) StudyDate: not in DICOM DA form" in notes
    assert "(0008,0050) AccessionNumber: not a valid SH value" in notes
    assert "(0020,000E) SeriesInstanceUID: missing" in notes
    assert "(0020,0052) FrameOfReferenceUID: not a valid UID" in notes
    assert HEADER_NORMALISED in _sr_text(sr, codes.READING_FLAGS.value)

    message = hl7.parse(files.hl7.decode("utf-8"))
    pid = message.segment("PID")
    assert [message.unescape(str(rep[0])) for rep in pid[3]] == ["ID-0001", "ID|0002^x"]
    assert [str(rep[0]) for rep in pid[5]] == ["Doe", "Smith"]
    assert str(pid[7]) == ""  # no birth date: PID-7 empty, not invented
    assert str(message.segment("OBR")[7]) == "20250314101530"
    assert str(message.segment("ORC")[3]) == "ACC" + "9" * 17  # HL7 holds the whole accession number
    assert "['" not in files.hl7.decode("utf-8")

    bundle = json.loads(files.fhir)
    [patient] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert [identifier["value"] for identifier in patient["identifier"]] == ["ID-0001", "ID|0002^x"]
    assert [name["family"] for name in patient["name"]] == ["Doe", "Smith"]
    assert "birthDate" not in patient


def _sr_text(sr: Dataset, code: str) -> str:
    found: list[str] = []

    def walk(items: Dataset) -> None:
        for item in items:
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == code:
                found.append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return "\n".join(found)


def test_dates_and_times_in_the_old_and_iso_forms_are_read_and_nonsense_is_dropped() -> None:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.StudyDate, ds.StudyTime, ds.PatientBirthDate = "1995.07.20", "10:15", "19400230"
        ds.PatientSex, ds.PatientAge = "male", "58"
    header = read_header(ds)
    assert (header.study_date, header.study_time, header.birth_date) == (date(1995, 7, 20), time(10, 15), None)
    assert (header.sex, header.age) == ("", "058Y")  # bare digits: years, as the console reads them
    problems = {note.keyword: note.problem for note in header.notes}
    assert problems == {
        "StudyDate": "not in DICOM DA form; read as a date",
        "StudyTime": "not in DICOM TM form; read as a time",
        "PatientBirthDate": "not a valid date; omitted",
        "PatientSex": "not a defined value; omitted",
        "PatientAge": "not in PS3.5 AS form (a number without a unit, read as years; 2 digits where AS has 3); "
        "written as an AS of 3 digits and Y",
    }
    assert all(str(value) not in str(note) for note in header.notes for value in ("1995", "male", "1940"))


@pytest.mark.parametrize("name", sorted(REAL_FILM_SHA256))
def test_every_real_film_gives_all_three_drafts(name: str) -> None:
    film = real_film(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files = build_drafts(reading([film]), [film], settings=ReportingSettings(), revision=1, created_at=WHEN)
    with config.strict_reading():
        sr = dcmread(io.BytesIO(files.sr))
        _ = [element.value for element in sr.iterall()]
    assert sr.StudyInstanceUID == film.StudyInstanceUID
    text = files.hl7.decode("utf-8")
    parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    assert [str(s[5]) for s in hl7.parse(text).segments("OBX") if str(s[3][0][0]) == "110180"] == [
        film.StudyInstanceUID
    ]
    assert json.loads(files.fhir)["resourceType"] == "Bundle"


@pytest.mark.parametrize(
    ("ids", "issuer", "pid3", "note"),
    [
        # a value no DICOM LO holds is left out of every draft (the SR's rule, test_outputs_patient_id_rule)
        (["A1", "B" * 300], "", "A1", "(0010,0020) PatientID: holds what a DICOM LO cannot"),
        (["C" * 25], "I" * 40, "C" * 25, "(0010,0021) IssuerOfPatientID: too long for PID-3 CX.4"),
    ],
)
def test_a_value_hl7_cannot_hold_is_omitted_and_said_never_shortened(
    ids: list[str], issuer: str, pid3: str, note: str
) -> None:
    datasets = source_study()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets[0].PatientID = MultiValue(str, ids) if len(ids) > 1 else ids[0]
        datasets[0].IssuerOfPatientID = issuer
        datasets[0].PatientName = "N" * 300 + "^Given"
    files = build_drafts(reading(datasets), datasets, settings=ReportingSettings(), revision=1, created_at=WHEN)
    message = hl7.parse(files.hl7.decode("utf-8"))
    assert str(message.segment("PID")[3]) == pid3
    # the name every draft carries (draft_header: the SR's PN, 64 bytes) fits PID-5: the same name, said to be cut
    assert str(message.segment("PID")[5]) == "N" * 63
    notes = "".join(message.unescape(str(s[5])) for s in message.segments("OBX") if str(s[3][0][0]) == "RT-HDR")
    assert note in notes
    assert "(0010,0010) PatientName: characters or lengths PN does not allow; normalised" in notes
