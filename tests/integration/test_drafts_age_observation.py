"""The patient's age at the study reaches the ORU and the FHIR Bundle, not the SR only (radtrace.reporting.draft_age).

Found on the NIH ChestX-ray14 film (tests/data/real-cxr/): Patient's Age "58", no Patient's Birth Date. The SR wrote
Patient's Age 058Y; the ORU's PID has no age field and its PID-7 was empty, the FHIR Patient had no birthDate: both
lost the age (only a header note about its form was left). Now the ORU has an NM OBX coded LOINC 30525-0 "Age" (UCUM
units from the AS: a, mo, wk, d) and the Bundle an Observation with the same code and an Age quantity; where the age
was derived from the birth and study dates (the NEMA films), 29553-5 "Age calculated". The value is the SR's, by
radtrace.dicom_age.age_at_study: what is no age reaches no draft.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from drafts_readback_support import read_back
from radtrace.config import ReportingSettings
from radtrace.dicom_age import age_at_study
from radtrace.model.reading import Finding, FindingStatus, ReasoningStep
from radtrace.model.study import study_image
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.hl7 import build_oru
from reporting_support import REAL_FILMS, reading, source_study

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
NIH = "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
NEMA = "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
UNITS = {"D": ("d", "days"), "W": ("wk", "weeks"), "M": ("mo", "months"), "Y": ("a", "years")}
#: What a sender may put in Patient's Age: AS values and near misses (case, digits, padding), and any bytes.
AGE_BYTES = st.one_of(
    st.builds(
        lambda number, unit, pad: pad + number.encode() + unit + pad,
        st.integers(0, 9999).map(str) | st.integers(0, 999).map(lambda n: f"{n:03d}"),
        st.sampled_from([b"", b"D", b"W", b"M", b"Y", b"d", b"w", b"m", b"y", b"Q", b"YY"]),
        st.sampled_from([b"", b" ", b"\x00"]),
    ),
    st.lists(
        st.one_of(
            st.sampled_from([b"0", b"5", b"8", b"1", b"D", b"W", b"M", b"Y", b"y", b" ", b"-", b".", b"\\", b"|"]),
            st.sampled_from([b"^", b"~", b"&", b"\x1b", b"\r", b"\xa0", b"\xe9", b"\x85"]),
            st.binary(min_size=1, max_size=1),
        ),
        max_size=8,
    ).map(b"".join),
)


SOURCE = source_study()[0]
FINDING = Finding(label="Pleural Effusion", status=FindingStatus.PRESENT, confidence=0.61)
STEP = ReasoningStep(section="pleura", text="Small right pleural effusion.")
#: Patient's Birth Date: none, real dates (infants' too, the study is 20250314), and what is no date.
BIRTH_DATES = st.one_of(
    st.none(),
    st.dates(min_value=date(1880, 1, 1), max_value=date(2025, 3, 14)).map(lambda d: d.strftime("%Y%m%d")),
    st.sampled_from(["20250230", "2025-03-01", "20300101", "abcdefgh"]),
)


def _with(ds: Dataset, age: bytes | None, born: str | None = None) -> Dataset:
    """``ds`` with Patient's Age ``age`` as sent and Patient's Birth Date ``born`` (None: absent)."""
    ds = copy.deepcopy(ds)
    for keyword in ("PatientAge", "PatientBirthDate"):
        if keyword in ds:
            del ds[keyword]
    for keyword, vr, value in (("PatientAge", "AS", age), ("PatientBirthDate", "DA", born and born.encode())):
        if value is not None:
            tag = Tag(tag_for_keyword(keyword))
            value += b" " * (len(value) % 2)
            ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    return ds


def _as_read(ds: Dataset) -> Dataset:
    """``ds`` written and read back as the worker reads a spooled image for the drafts."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return study_image(buffer.getvalue(), assumed_character_set="ISO_IR 100").dataset


def _oru_ages(hl7: str) -> list[list[str]]:
    """The ORU's age OBX segments (OBX-3 coded in LOINC), split on '|'."""
    segments = [segment.split("|") for segment in hl7.split("\r") if segment.startswith("OBX|")]
    return [s for s in segments if s[3].split("^")[2:3] == ["LN"]]


def _fhir_ages(fhir: str) -> list[dict[str, Any]]:
    resources = [entry["resource"] for entry in json.loads(fhir)["entry"]]
    return [r for r in resources if r["resourceType"] == "Observation" and r["code"]["coding"][0]["system"] == LOINC]


def test_the_nih_films_age_reaches_the_oru_and_fhir_as_the_sr_carries_it(tmp_path: Path) -> None:
    film = study_image((REAL_FILMS / NIH).read_bytes(), assumed_character_set="ISO_IR 100").dataset
    assert (film.PatientAge, film.get("PatientBirthDate")) == ("58", None)
    files = build_drafts(reading([film]), [film], settings=ReportingSettings(), revision=1, created_at=WHEN)
    back = read_back(files, tmp_path)  # dciodvfy; hl7apy STRICT
    assert back.sr_errors == []
    assert back.sr.PatientAge == "058Y"
    assert back.segment("PID")[7:8] in ([], [""])  # no birth date to carry
    [obx] = _oru_ages(back.hl7)
    assert obx[2:7] == ["NM", "30525-0^Age^LN", "", "58", "a^years^UCUM"]
    assert obx[11] == "P"  # the draft's result status, never F
    assert "birthDate" not in back.fhir_patient
    [age] = _fhir_ages(files.fhir or "")
    assert age["code"]["coding"] == [{"system": LOINC, "code": "30525-0", "display": "Age"}]
    assert age["valueQuantity"] == {"value": 58, "unit": "years", "system": UCUM, "code": "a"}
    assert age["status"] == "preliminary"
    patient_url = next(
        e["fullUrl"] for e in json.loads(files.fhir or "")["entry"] if e["resource"] == back.fhir_patient
    )
    assert age["subject"] == {"reference": patient_url}


def test_an_age_derived_from_the_dates_is_coded_as_calculated_beside_the_birth_date(tmp_path: Path) -> None:
    film = study_image((REAL_FILMS / NEMA).read_bytes(), assumed_character_set="ISO_IR 100").dataset
    assert ("PatientAge" in film, film.PatientBirthDate, film.StudyDate) == (False, "19400305", "20040826")
    files = build_drafts(reading([film]), [film], settings=ReportingSettings(), revision=1, created_at=WHEN)
    back = read_back(files, tmp_path)
    assert back.sr_errors == []
    assert back.sr.PatientAge == "064Y"
    assert back.segment("PID")[7] == "19400305"
    [obx] = _oru_ages(back.hl7)
    assert obx[2:7] == ["NM", "29553-5^Age calculated^LN", "", "64", "a^years^UCUM"]
    [age] = _fhir_ages(files.fhir or "")
    assert age["code"]["coding"][0]["code"] == "29553-5"
    assert age["valueQuantity"]["value"] == 64
    assert age["effectiveDateTime"].startswith("2004-08-26")
    assert back.fhir_patient["birthDate"] == "1940-03-05"


def test_a_header_age_beside_a_birth_date_is_the_one_every_draft_carries(tmp_path: Path) -> None:
    # age_at_study: the header's Patient's Age wins over the dates (the console shows it too); 19670412 to the study
    # date 20250314 would be 57 years, the header says 18 months
    ds = _as_read(_with(source_study()[0], b"018M", born="19670412"))
    files = build_drafts(reading([ds]), [ds], settings=ReportingSettings(), revision=1, created_at=WHEN)
    back = read_back(files, tmp_path)
    assert back.sr_errors == []
    assert back.sr.PatientAge == "018M"
    assert back.segment("PID")[7] == "19670412"
    [obx] = _oru_ages(back.hl7)
    assert obx[2:7] == ["NM", "30525-0^Age^LN", "", "18", "mo^months^UCUM"]
    [age] = _fhir_ages(files.fhir or "")
    assert age["valueQuantity"] == {"value": 18, "unit": "months", "system": UCUM, "code": "mo"}


# 60 generated (about 0.1 s each: hl7apy STRICT builds and parses the ORU) beside the explicit edges: a heavy test
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(AGE_BYTES, st.none()), born=BIRTH_DATES)
@example(value=b"58", born=None)
@example(value=b"007m", born=None)
@example(value=b"000D", born=None)
@example(value=b"130Y", born=None)
@example(value=b"131Y", born=None)
@example(value=b"999Y", born=None)
@example(value=b"5|Y", born=None)
@example(value=b"5^Y", born=None)
@example(value=b"58\\60", born=None)
@example(value=b"-5Y", born=None)
@example(value=b"0001W", born=None)
@example(value=None, born="20250301")  # 13 days before the study: 013D, calculated
@example(value=b"abc", born="19400305")  # no age in the header: the dates' 085Y, calculated
@example(value=b"058Y", born="20250314")  # the header's age wins over the dates (0 days)
def test_property_any_patient_age_gives_the_srs_age_or_none_in_a_strict_oru_and_a_valid_bundle(
    value: bytes | None, born: str | None
) -> None:
    ds = _as_read(_with(SOURCE, value, born))
    # the one rule (the SR's Patient's Age, the console's age): test_drafts_patient_age, test_drafts_derived_age
    rule = age_at_study(ds.get("PatientAge"), born, str(ds.StudyDate))
    read = reading([ds], findings=[FINDING], reasoning=[STEP])  # a short message: hl7apy STRICT is slow per OBX
    oru = build_oru(read, ds, settings=ReportingSettings(), sr_sop_instance_uid="1.2.3", created_at=WHEN).text
    parse_message(oru, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    fhir = build_fhir_bundle(read, ds, settings=ReportingSettings(), revision=1, created_at=WHEN)  # validated there
    obx, ages = _oru_ages(oru), _fhir_ages(fhir)
    if rule.age is None:  # no age, malformed or absent, and no dates to derive one: none reaches a message
        assert (obx, ages) == ([], [])
        return
    number, (ucum, unit) = int(rule.age[:3]), UNITS[rule.age[3]]
    code = "29553-5^Age calculated^LN" if rule.derived else "30525-0^Age^LN"
    assert [s[2:7] for s in obx] == [["NM", code, "", str(number), f"{ucum}^{unit}^UCUM"]]
    assert [a["valueQuantity"] for a in ages] == [{"value": number, "unit": unit, "system": UCUM, "code": ucum}]
    assert [a["code"]["coding"][0]["code"] for a in ages] == [code.split("^")[0]]
    assert number * {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}[rule.age[3]] <= 130 * 365.25
