"""The HL7 ORU^R01 draft: parsed back by hl7apy (STRICT) and by python-hl7, both must read the same content."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from radtrace.config import ReportingSettings
from radtrace.errors import ReportError
from radtrace.model.reading import Reading
from radtrace.reporting import codes
from radtrace.reporting.hl7 import (
    MAX_OBX_VALUE,
    build_oru,
    control_id_for,
    escape,
    observation_texts,
    split_text,
    unescape,
)
from radtrace.reporting.sr import image_notes, reasoning_sha256
from reporting_support import STUDY, source_study, sr_cases

pytestmark = pytest.mark.unit

SR_UID = "1.2.826.0.1.3680043.8.498.4242"
WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
DELIMITERS = "a\\b|c^d&e~f"


def _build(name: str, settings: ReportingSettings | None = None) -> tuple[Reading, str]:
    reading, sources = sr_cases()[name]
    message = build_oru(
        reading, sources[0], settings=settings or ReportingSettings(), sr_sop_instance_uid=SR_UID, created_at=WHEN
    )
    return reading, message.text


def _leaf(element: Any) -> str:
    # hl7apy re-escapes on to_er7() (a backslash outside E/F/S/T/R/H/N sequences becomes \\E\\): read
    # the value as received, from the leaf.
    while getattr(element, "children", None):
        element = element.children[0]
    value = element.value
    return str(getattr(value, "value", value))


def _hl7apy_obx(element: Any) -> Iterator[Any]:
    for child in element.children:
        if child.name == "OBX":
            yield child
        elif child.classname == "Group":
            yield from _hl7apy_obx(child)


def _via_hl7apy(text: str) -> tuple[dict[tuple[str, str], str], list[str]]:
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()
    segments = list(_hl7apy_obx(message))
    triples = ((_leaf(o.obx_3), _leaf(o.obx_4) if o.obx_4.children else "", unescape(_leaf(o.obx_5))) for o in segments)
    return observation_texts(triples), [_leaf(o.obx_11) for o in segments]


def _via_python_hl7(text: str) -> tuple[dict[tuple[str, str], str], list[str], hl7.Message]:
    message = hl7.parse(text)
    segments = message.segments("OBX")
    triples = (
        (str(s[3][0][0]), str(s[4]), str(s[5][0][0]) if str(s[2]) == "CWE" else message.unescape(str(s[5])))
        for s in segments
    )
    return observation_texts(triples), [str(s[11]) for s in segments], message


def _expected(reading: Reading) -> dict[tuple[str, str], str]:
    expected = {(codes.reasoning_code(s.section).value, f"R{n}"): s.text for n, s in enumerate(reading.reasoning, 1)}
    if reading.impression:
        expected[(codes.IMPRESSION.value, "")] = reading.impression
    expected[(codes.REASONING_SHA256.value, "")] = reasoning_sha256(reading)
    expected[("RT-SR-UID", "")] = SR_UID
    if taken := image_notes(reading):
        expected[(codes.IMAGE_NOTES.value, "")] = taken
    for n, finding in enumerate(reading.findings, 1):
        presence = {"present": "52101004", "absent": "272519000", "uncertain": "82334004"}[finding.status]
        expected[(codes.finding_code(finding.label).code.value, str(n))] = presence
    return expected


@pytest.mark.parametrize("name", sorted(sr_cases()))
def test_message_parses_back_to_the_same_content_with_hl7apy_and_python_hl7(name: str) -> None:
    reading, text = _build(name)
    by_hl7apy, statuses_a = _via_hl7apy(text)
    by_python_hl7, statuses_b, message = _via_python_hl7(text)
    expected = _expected(reading)
    assert {key: by_python_hl7.get(key) for key in expected} == expected
    assert by_hl7apy == by_python_hl7
    assert set(statuses_a) == set(statuses_b) == {"P"}
    assert str(message.segment("MSH")[10]) == control_id_for(SR_UID)
    assert str(message.segment("OBR")[25]) == "P"
    assert str(message.segment("OBR")[18]) == str(message.segment("ORC")[3]) == STUDY.accession
    assert str(message.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert str(message.segment("MSH")[12]) == "2.5.1"
    assert all(len(str(s[5])) <= MAX_OBX_VALUE for s in message.segments("OBX"))
    [study_uid] = [str(s[5]) for s in message.segments("OBX") if str(s[3][0][0]) == "110180"]
    assert study_uid == STUDY.study_instance_uid


def test_long_trace_goes_as_many_tx_lines_none_over_the_cap() -> None:
    reading, text = _build("long-trace")
    assert len(reading.reasoning_text) >= 20_000
    _, _, message = _via_python_hl7(text)
    tx = [s for s in message.segments("OBX") if str(s[2]) == "TX"]
    assert len(tx) > 250
    assert max(len(str(s[5])) for s in tx) <= MAX_OBX_VALUE


def test_sending_and_receiving_parties_and_status_r_come_from_settings() -> None:
    settings = ReportingSettings(
        hl7_result_status="R",
        sending_application="RT|APP",
        sending_facility="SITE^A",
        receiving_application="RIS",
        receiving_facility="MAIN",
    )
    _, text = _build("typical", settings)
    _, statuses, message = _via_python_hl7(text)
    msh = message.segment("MSH")
    assert message.unescape(str(msh[3])) == "RT|APP"
    assert message.unescape(str(msh[4])) == "SITE^A"
    assert (str(msh[5]), str(msh[6])) == ("RIS", "MAIN")
    assert str(message.segment("OBR")[25]) == "R"
    assert set(statuses) == {"R"}


def test_final_status_is_never_sent() -> None:
    with pytest.raises(ValueError, match="final"):
        ReportingSettings(hl7_result_status="F")  # type: ignore[arg-type]
    forced = ReportingSettings.model_construct(hl7_result_status="F")  # bypassing validation must not help
    reading, sources = sr_cases()["typical"]
    with pytest.raises(ReportError, match="not allowed"):
        build_oru(reading, sources[0], settings=forced, sr_sop_instance_uid=SR_UID)


def test_delimiters_in_every_text_are_escaped_and_come_back() -> None:
    reading, sources = sr_cases()["typical"]
    tricky = reading.model_copy(update={"impression": f"Impression {DELIMITERS}\nsecond line"})
    patient = sources[0].copy()
    patient.PatientName = "O'Brien|X^Zoë&Ann"
    patient.AccessionNumber = "ACC~1"
    text = build_oru(tricky, patient, settings=ReportingSettings(), sr_sop_instance_uid=SR_UID).text
    assert "\n" not in text  # the line break is escaped, it cannot split a segment
    assert all(line[:3] in {"MSH", "PID", "PV1", "ORC", "OBR", "NTE", "OBX"} for line in text.rstrip("\r").split("\r"))
    texts, _, message = _via_python_hl7(text)
    assert texts[(codes.IMPRESSION.value, "")] == f"Impression {DELIMITERS}\nsecond line"
    pid = message.segment("PID")
    assert message.unescape(str(pid[5][0][0])) == "O'Brien|X"
    assert message.unescape(str(pid[5][0][1])) == "Zoë&Ann"
    assert message.unescape(str(message.segment("OBR")[18])) == "ACC~1"
    hl7apy_texts, _ = _via_hl7apy(text)
    assert hl7apy_texts[(codes.IMPRESSION.value, "")] == f"Impression {DELIMITERS}\nsecond line"


def test_non_ascii_patient_and_text_survive() -> None:
    sources = source_study(replace(STUDY, patient_name="Müller^Zoë"))
    reading, _ = sr_cases()["non-ascii"]
    reading = reading.model_copy(update={"images": sr_cases()["typical"][0].images})
    message = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=SR_UID)
    parsed = hl7.parse(message.encode().decode("utf-8"))
    assert str(parsed.segment("MSH")[18]) == "UNICODE UTF-8"
    assert str(parsed.segment("PID")[5]) == "Müller^Zoë"
    texts, _, _ = _via_python_hl7(message.text)
    assert texts[(codes.IMPRESSION.value, "")] == reading.impression


@pytest.mark.parametrize(
    "text",
    ["", "short", "word " * 200, "x" * 1000, "|" * 500, "line\n" * 90, "mixed ^&~\\| text\r\n" * 40 + "end"],
)
def test_split_text_reassembles_exactly_and_respects_the_cap(text: str) -> None:
    pieces = split_text(text)
    assert "".join(pieces) == text
    assert all(len(escape(p)) <= MAX_OBX_VALUE for p in pieces)
    assert all(0 < len(p) <= 80 for p in pieces)
    assert unescape(escape(text)) == text
