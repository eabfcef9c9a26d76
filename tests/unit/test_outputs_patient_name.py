"""A patient name written only in its ideographic or phonetic component group reaches the HL7 and FHIR drafts.

DICOM PN has three component groups (alphabetic = ideographic = phonetic, PS3.5 6.2.1.2); Japanese and Korean
sites may send ``=山田^太郎=やまだ^たろう`` with no alphabetic group. The ORU and the FHIR Patient read the
alphabetic group only, so such a patient went out with PID-5 ``""`` (HL7's explicit null: "delete the name" to
some receivers) under a header note saying the name was *too long*, and a FHIR Patient without a name. Now the
first group that holds a name is used; in HL7 its XPN.8 (Name Representation Code, HL7 table 4000) says which
(``I`` ideographic, ``P`` phonetic). A name with an alphabetic group is written as before.
"""

from __future__ import annotations

import copy
import json
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from radtrace.config import ReportingSettings
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.hl7 import unescape
from reporting_support import reading, source_study

pytestmark = pytest.mark.unit

SOURCES = source_study()
WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def _drafts(name: str) -> tuple[list[str], dict[str, Any], str]:
    sources = [copy.deepcopy(ds) for ds in SOURCES]
    with warnings.catch_warnings():  # pydicom warns about an over-long component: the test means it
        warnings.simplefilter("ignore")
        sources[0].PatientName = name
    files = build_drafts(reading(sources), sources, settings=ReportingSettings(), revision=1, created_at=WHEN)
    text = files.hl7.decode("utf-8")
    parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    [pid] = [segment.split("|") for segment in text.split("\r") if segment.startswith("PID|")]
    bundle = json.loads(files.fhir)
    [patient] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return pid, patient, text


@pytest.mark.parametrize(
    ("name", "family", "given", "representation"),
    [
        ("=山田^太郎=やまだ^たろう", "山田", "太郎", "I"),
        ("==やまだ^たろう", "やまだ", "たろう", "P"),
        ("=洪^吉洞=홍^길동", "洪", "吉洞", "I"),
    ],
)
def test_a_name_only_in_a_later_group_is_written_with_its_representation(
    name: str, family: str, given: str, representation: str
) -> None:
    pid, patient, text = _drafts(name)
    components = [unescape(part) for part in pid[5].split("^")]
    assert components[:2] == [family, given]
    assert components[7] == representation
    assert patient["name"] == [{"family": family, "given": [given]}]
    assert "too long for PID-5" not in text


@pytest.mark.parametrize(
    ("name", "pid5"),
    [("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada^Tarou"), ("Doe^John^^Dr^Jr", "Doe^John^^Jr^Dr")],
)
def test_a_name_with_an_alphabetic_group_is_written_as_before(name: str, pid5: str) -> None:
    pid, patient, _ = _drafts(name)
    assert pid[5] == pid5
    assert patient["name"][0]["family"] == pid5.split("^")[0]


@pytest.mark.parametrize("name", ["^^^^", "^", "==", " ^ "])
def test_a_name_of_only_delimiters_is_not_reported_as_too_long(name: str) -> None:
    """PID-5 is the null ``""`` (there is no name to write), and no header note claims a name was too long."""
    pid, patient, text = _drafts(name)
    assert pid[5] == '""'
    assert "too long for PID-5" not in text
    assert "name" not in patient


def test_a_name_too_long_for_pid5_is_still_noted() -> None:
    _, _, text = _drafts("A" * 60 + "^" + "B" * 3 + "=" + "山" * 200)
    assert "too long for PID-5" not in text  # 60 characters fit the XPN
    # the given name alone is far beyond hl7apy's limit, and a DICOM PN's: every draft carries the PN cut to 64 bytes
    pid, _, text = _drafts("=" + "山" * 21 + "^" + "太" * 200)
    assert pid[5] == "山" * 20 + "^^^^^^^I"
    assert "(0010,0010) PatientName: characters or lengths PN does not allow; normalised" in text
