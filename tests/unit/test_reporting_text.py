"""Text safety per output format (reporting/text.py), then every text that reaches an output, with hypothesis.

The text strategies mix arbitrary Unicode (surrogates included) with every C0/C1 control, the HL7 delimiters,
ESC and the stand-in the HL7 builder uses for hex escapes. What a user would notice, and what is asserted:

* the SR reads back with *strict* pydicom and its TEXT items hold exactly the text every draft carries
  (``draft_text``: controls other than LF and CR replaced by U+FFFD), DICOM-safe;
* the ORU parses with hl7apy (STRICT) and python-hl7, holds no raw control character inside any field, and
  its unescaped OBX-5 values are exactly that same text;
* the FHIR Bundle is UTF-8 JSON whose conclusion holds that same text;
* each output says ``text-sanitised`` exactly when it had to change the model's text;
* a multi-valued Patient ID comes out as PID-3 repetitions and FHIR identifiers, never as a Python list.

dciodvfy runs on a sample of these SRs in tests/integration/test_reporting_sr_validation.py.
"""

from __future__ import annotations

import copy
import io
import json
import re
import string
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config, dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from radtrace.config import ReportingSettings
from radtrace.model.evidence import finding_evidence
from radtrace.model.reading import Finding, FindingStatus, Reading, ReasoningStep
from radtrace.reporting import codes
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.hl7 import build_oru
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.reporting.text import (
    REPLACEMENT,
    TEXT_SANITISED,
    dicom_text,
    draft_text,
    fhir_text,
    fits_dicom,
    hl7_escape,
    hl7_text,
)
from reporting_support import SPECIAL_CHARACTERS, reading, source_study

pytestmark = pytest.mark.unit

SOURCES = source_study()
SR_UID = "1.2.826.0.1.3680043.8.498.4242"
WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
CONTROLS = [chr(code) for code in (*range(0x20), *range(0x7F, 0xA0))]
# python-hl7 decodes \Xhh..\ byte by byte as code points (Latin-1); the message is UTF-8 (MSH-18), so the
# multi-byte escapes radtrace writes (the C1 controls, and the HL7 builder's hex stand-in U+E000) are given to it as
# what they are, through its app_map. Everything else it decodes on its own.
C1_AS_UTF8 = {f"XC2{code:02X}": chr(code) for code in range(0x80, 0xA0)} | {"XEE8080": "\ue000"}

hostile_text = st.lists(st.one_of(st.sampled_from(SPECIAL_CHARACTERS), st.characters(codec=None)), max_size=300).map(
    "".join
)
HYPOTHESIS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- the text functions themselves ----


@pytest.mark.parametrize("vr", ["UT", "LT", "ST"])
def test_dicom_text_vrs_keep_lf_ff_cr_and_replace_every_other_control(vr: str) -> None:
    safe = dicom_text("a\nb\x0cc\rd" + "".join(CONTROLS), vr)  # type: ignore[arg-type]
    assert safe.changed
    assert "".join(char for char in safe.text if char != REPLACEMENT) == "a\nb\x0cc\rd" + " \n\x0c\r"  # TAB: space
    assert safe.text.count(REPLACEMENT) == len(CONTROLS) - 4
    assert not dicom_text("a\nb\x0cc\rd", vr).changed  # type: ignore[arg-type]


@pytest.mark.parametrize("vr", ["LO", "SH", "PN"])
def test_dicom_name_vrs_hold_no_control_at_all_not_even_esc(vr: str) -> None:
    safe = dicom_text("A\x1bB\tC", vr)  # type: ignore[arg-type]
    assert safe == type(safe)(f"A{REPLACEMENT}B{REPLACEMENT}C", True)


def test_dicom_lengths_are_capped_per_vr_and_identifiers_are_never_cut() -> None:
    assert dicom_text("x" * 80, "LO") == type(dicom_text("", "LO"))("x" * 64, True)
    assert len(dicom_text("x" * 20, "SH").text) == 16
    assert dicom_text("胸" * 30, "LO").text == "胸" * 21  # 63 of LO's 64 bytes: dciodvfy counts bytes
    assert len(dicom_text("x" * 2000, "ST").text) == 1024
    assert len(dicom_text("x" * 200_000, "UT").text) == 200_000  # UT has no practical limit
    assert dicom_text("a" * 70 + "^" + "b" * 3 + "=" + "c" * 70, "PN").text == "a" * 64 + "=" + "c" * 64
    assert dicom_text("a^b^c^d^e^f^g", "PN").text == "a^b^c^d^e"
    assert dicom_text("LO\\value", "LO").text == f"LO{REPLACEMENT}value"  # the value delimiter
    assert dicom_text("UT\\keeps", "UT").text == "UT\\keeps"
    assert fits_dicom("ACC0001", "SH")
    assert not fits_dicom("A" * 17, "SH")
    assert not fits_dicom("ID\\2", "LO")


def test_hl7_escape_writes_every_control_character_as_hex_of_its_utf8_bytes() -> None:
    assert hl7_escape("a\\b|c^d&e~f") == "a\\E\\b\\F\\c\\S\\d\\T\\e\\R\\f"
    assert hl7_escape("\r\n\x0b\x1c\x00\x7f") == "\\X0D\\\\X0A\\\\X0B\\\\X1C\\\\X00\\\\X7F\\"
    assert hl7_escape("\x85\x9f") == "\\XC285\\\\XC29F\\"
    assert hl7_escape("\ud800ok") == f"{REPLACEMENT}ok"
    assert hl7_escape("a\ue000b", hex_escape="\ue000") == "a\ue000XEE8080\ue000b"
    for control in CONTROLS:
        assert not set(hl7_escape(control)) & set(CONTROLS)


def test_fhir_text_drops_what_a_fhir_string_may_not_hold() -> None:
    assert fhir_text("a\tb\r\nc") == type(fhir_text(""))("a\tb\r\nc", False)
    assert fhir_text("a\x0bb\x00\ud800") == type(fhir_text(""))(f"a{REPLACEMENT}b{REPLACEMENT}{REPLACEMENT}", True)


@HYPOTHESIS
@given(text=hostile_text)
def test_every_safe_text_encodes_as_utf8_and_holds_only_what_its_format_allows(text: str) -> None:
    for vr in ("UT", "LO", "PN"):
        safe = dicom_text(text, vr)  # type: ignore[arg-type]
        safe.text.encode("utf-8")
        allowed = "\n\x0c\r" if vr == "UT" else ""
        assert not [char for char in safe.text if char in CONTROLS and char not in allowed]
        assert safe.changed or safe.text == text.strip(" ") or safe.text == text.rstrip(" ")
    escaped = hl7_escape(text)
    escaped.encode("utf-8")
    assert not set(escaped) & (set(CONTROLS) | set("|^&~"))
    message = hl7.parse(f"MSH|^~\\&|A\rOBX|1|TX|||{escaped}||P\r")  # python-hl7 reads back the safe text
    assert message.unescape(str(message.segment("OBX")[5]), app_map=C1_AS_UTF8) == hl7_text(text).text
    fhir_text(text).text.encode("utf-8")


# ---- whole outputs ----


def _reading(impression: str, reasoning: str, label: str = "Atelectasis") -> Reading:
    return reading(
        SOURCES,
        impression=impression,
        reasoning=(ReasoningStep(section="lungs", text=reasoning),),
        findings=[Finding(label=label, status=FindingStatus.PRESENT, confidence=0.5)],
    )


def _sr_texts(sr: Dataset) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                texts.setdefault(item.ConceptNameCodeSequence[0].CodeValue, []).append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return texts


def _strict_read(data: bytes) -> Dataset:
    with config.strict_reading():
        ds = dcmread(io.BytesIO(data))
        for element in ds.iterall():  # convert every raw element now, under strict validation
            _ = element.value
    return ds


def _flags(texts: dict[str, list[str]]) -> set[str]:
    return {flag.strip() for value in texts.get(codes.READING_FLAGS.value, []) for flag in value.split(",")}


@HYPOTHESIS
@given(impression=hostile_text, reasoning=hostile_text)
def test_sr_reads_back_strictly_with_the_dicom_safe_text_and_the_flag(impression: str, reasoning: str) -> None:
    sr = _strict_read(
        sr_bytes(build_sr(_reading(impression, reasoning), SOURCES, settings=ReportingSettings(), revision=1))
    )
    texts = _sr_texts(sr)
    changed = False
    for code, raw in ((codes.IMPRESSION.value, impression), (codes.reasoning_code("lungs").value, reasoning)):
        if raw.strip():
            drafted = draft_text(raw)  # the rule of every draft (the ORU's and FHIR's text too), then UT
            safe = dicom_text(drafted.text, "UT")
            changed |= safe.changed or drafted.changed
            assert texts[code] == [safe.text.rstrip()]
        else:
            assert code not in texts
    assert (TEXT_SANITISED in _flags(texts)) == changed


def _python_hl7(text: str) -> tuple[dict[tuple[str, str], str], hl7.Message]:
    message = hl7.parse(text)
    joined: dict[tuple[str, str], str] = {}
    for segment in message.segments("OBX"):
        if str(segment[2]) == "TX":
            key = (str(segment[3][0][0]), str(segment[4]))
            joined[key] = joined.get(key, "") + message.unescape(str(segment[5]), app_map=C1_AS_UTF8)
    return joined, message


def _reference_unescape(value: str) -> str:
    """HL7 v2.5.1 2.7.4/2.7.5, written here independently of radtrace: delimiters and UTF-8 hex."""
    delimiters = {"E": "\\", "F": "|", "S": "^", "T": "&", "R": "~"}

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        return bytes.fromhex(body[1:]).decode("utf-8") if body[0] == "X" else delimiters[body]

    return re.sub(r"\\([EFSTR]|X[0-9A-F]+)\\", one, value)


def _hl7apy_obx(element: Any) -> Iterator[Any]:
    for child in element.children:
        if child.name == "OBX":
            yield child
        elif child.classname == "Group":
            yield from _hl7apy_obx(child)


def _leaf(element: Any) -> str:
    while getattr(element, "children", None):
        element = element.children[0]
    value = element.value
    return str(getattr(value, "value", value))


def _hl7apy(text: str) -> dict[tuple[str, str], str]:
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()
    joined: dict[tuple[str, str], str] = {}
    for obx in _hl7apy_obx(message):
        if _leaf(obx.obx_2) == "TX":
            key = (_leaf(obx.obx_3), _leaf(obx.obx_4) if obx.obx_4.children else "")
            joined[key] = joined.get(key, "") + _reference_unescape(_leaf(obx.obx_5))
    return joined


def _assert_no_raw_control_in_a_field(text: str) -> None:
    assert text.endswith("\r")
    assert not [char for char in text.replace("\r", "") if char in CONTROLS]


@HYPOTHESIS
@given(impression=hostile_text, reasoning=hostile_text)
def test_hl7_parses_back_with_both_parsers_to_the_hl7_safe_text(impression: str, reasoning: str) -> None:
    oru = build_oru(
        _reading(impression, reasoning),
        SOURCES[0],
        settings=ReportingSettings(),
        sr_sop_instance_uid=SR_UID,
        created_at=WHEN,
    )
    _assert_no_raw_control_in_a_field(oru.text)
    by_python_hl7, message = _python_hl7(oru.text)
    assert _hl7apy(oru.text) == by_python_hl7
    expected = {}
    if impression.strip():
        expected[(codes.IMPRESSION.value, "")] = draft_text(impression).text
    if reasoning:
        expected[(codes.reasoning_code("lungs").value, "R1")] = draft_text(reasoning).text
    assert {key: by_python_hl7.get(key) for key in expected} == expected
    flags = by_python_hl7.get((codes.READING_FLAGS.value, ""), "")
    assert (TEXT_SANITISED in flags) == any(draft_text(text).changed for text in (impression, reasoning))
    assert len(message.segments("PID")) == 1


@HYPOTHESIS
@given(impression=hostile_text, evidence=hostile_text)
def test_fhir_bundle_is_utf8_json_with_the_fhir_safe_text(impression: str, evidence: str) -> None:
    read = reading(
        SOURCES,
        impression=impression,
        findings=[Finding(label="Atelectasis", status=FindingStatus.PRESENT, evidence=evidence or None)],
    )
    bundle = json.loads(
        build_fhir_bundle(read, SOURCES[0], settings=ReportingSettings(), revision=1, created_at=WHEN).encode("utf-8")
    )
    # the first resource of each type: the finding's Observation, not the age's after it (reporting.draft_age)
    resources = {entry["resource"]["resourceType"]: entry["resource"] for entry in bundle["entry"][::-1]}
    conclusion = resources["DiagnosticReport"]["conclusion"]
    if impression:
        assert draft_text(impression).text in conclusion
    # one note per evidence sentence the review console shows (the model's evidence first, then the reasoning's
    # sentences naming the finding: 500fbda), as every draft writes text; a blank one (U+3000 …) is no note, since a
    # FHIR string cannot be blank
    [finding] = read.findings
    shown = [draft_text(sentence).text for sentence in finding_evidence(read, finding)]
    notes = [{"text": text} for text in shown if text.strip()]
    assert resources["Observation"].get("note", []) == notes
    if draft_text(evidence).text.strip():
        assert notes[0]["text"].startswith(draft_text(evidence.strip()).text)
    assert (TEXT_SANITISED in conclusion) == (draft_text(impression).changed or draft_text(evidence).changed)


def test_a_100k_character_trace_of_every_hostile_character_reaches_all_three_outputs() -> None:
    trace = ("".join(SPECIAL_CHARACTERS) + "Pleural effusion, right. " * 3) * 400
    trace = (trace * (100_000 // len(trace) + 1))[:100_000]
    read = _reading("Impression\x0b\x1c with \ud800", trace)
    sr = _strict_read(sr_bytes(build_sr(read, SOURCES, settings=ReportingSettings(), revision=1)))
    assert _sr_texts(sr)[codes.reasoning_code("lungs").value] == [draft_text(trace).text.rstrip()]
    oru = build_oru(read, SOURCES[0], settings=ReportingSettings(), sr_sop_instance_uid=SR_UID, created_at=WHEN)
    _assert_no_raw_control_in_a_field(oru.text)
    by_python_hl7, message = _python_hl7(oru.text)
    assert by_python_hl7[(codes.reasoning_code("lungs").value, "R1")] == draft_text(trace).text  # the SR's text
    assert all(len(str(segment[5])) <= 199 for segment in message.segments("OBX"))
    bundle = build_fhir_bundle(read, SOURCES[0], settings=ReportingSettings(), revision=1, created_at=WHEN)
    assert json.loads(bundle.encode("utf-8"))["resourceType"] == "Bundle"


# ---- repeated DICOM values ----

patient_id = (
    st.text(alphabet=string.ascii_letters + string.digits + "-.|^&~ ", min_size=1, max_size=15)
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=10, deadline=None)
@given(ids=st.lists(patient_id, min_size=1, max_size=4, unique=True))
def test_patient_id_values_round_trip_as_pid3_repetitions_and_fhir_identifiers(ids: list[str]) -> None:
    sources = [copy.deepcopy(ds) for ds in SOURCES]  # Dataset.copy() shares its elements
    sources[0].PatientID = MultiValue(str, ids) if len(ids) > 1 else ids[0]
    read = reading(sources)
    oru = build_oru(read, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=SR_UID, created_at=WHEN)
    message = hl7.parse(oru.text)
    pid3 = message.segment("PID")[3]
    assert [message.unescape(str(repetition[0])) for repetition in pid3] == ids
    parsed = parse_message(oru.text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    pid = parsed.oru_r01_patient_result.oru_r01_patient.pid
    assert [_reference_unescape(_leaf(repetition)) for repetition in pid.pid_3] == ids
    assert "['" not in oru.text
    bundle = json.loads(build_fhir_bundle(read, sources[0], settings=ReportingSettings(), revision=1, created_at=WHEN))
    [patient] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert [identifier["value"] for identifier in patient["identifier"]] == ids
    sr = _strict_read(sr_bytes(build_sr(read, sources, settings=ReportingSettings(), revision=1)))
    if len(ids) == 1:
        assert sr.PatientID == ids[0]
    else:  # none of the values is chosen as *the* ID; each is kept
        assert sr.PatientID == ""
        assert [item.PatientID for item in sr.OtherPatientIDsSequence] == ids


@settings(max_examples=15, deadline=None)
@given(
    name=st.lists(st.one_of(st.sampled_from([*SPECIAL_CHARACTERS, "^", "=", "N" * 70]), st.characters()), max_size=40)
)
def test_any_patient_name_gives_all_three_drafts_without_a_warning(name: list[str]) -> None:
    sources = [copy.deepcopy(ds) for ds in SOURCES]  # Dataset.copy() shares its elements
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sources[0].PatientName = "".join(name).encode("utf-8", "replace").decode("utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither pydicom nor highdicom finds anything to warn about
        files = build_drafts(reading(sources), sources, settings=ReportingSettings(), revision=1, created_at=WHEN)
    _strict_read(files.sr)
    _assert_no_raw_control_in_a_field(files.hl7.decode("utf-8"))
    parse_message(files.hl7.decode("utf-8"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    assert json.loads(files.fhir)["resourceType"] == "Bundle"


@pytest.mark.parametrize("name", ["=\x01", "=山田", "Smith=山田", "=山田=やまだ"])
def test_a_name_with_only_an_ideographic_or_phonetic_group_is_still_a_family_name(name: str) -> None:
    """Found by the property test above: a name whose alphabetic group is empty had no caret anywhere."""
    sources = [copy.deepcopy(ds) for ds in SOURCES]
    sources[0].PatientName = name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files = build_drafts(reading(sources), sources, settings=ReportingSettings(), revision=1, created_at=WHEN)
    written = str(_strict_read(files.sr).PatientName)
    assert all(group.endswith("^") for group in written.split("=") if group)
