"""Raw model output, as each profile's parser reads it, through every output: nothing a model writes fails a draft.

The other property tests put hostile text straight into a Reading's fields; here the text goes through the
profiles' parsers first (``<think>``/``<answer>`` tags, section headings, labels, boxes, hedges, ``\\boxed{}``),
so whatever the parsers extract (sections, evidence sentences, impression, differential) reaches the SR, the
companion, the ORU and the FHIR Bundle. Each must build; the SR and companion read back under strict pydicom; the
ORU parses with hl7apy STRICT, holds no raw control character in a field, and split on its raw delimiters keeps
every segment and OBX field in place; the FHIR Bundle is JSON; and the impression each output shows is the one
the parser extracted, made safe for that output (dicom_text, hl7_text, fhir_text).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom import config, dcmread

from radtrace.config import ReportingSettings
from radtrace.model.profiles import get_profile
from radtrace.model.reading import Reading
from radtrace.reporting import codes
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.hl7 import unescape
from radtrace.reporting.text import dicom_text, fhir_text, hl7_text
from reporting_support import SPECIAL_CHARACTERS, reading, shown, source_study

pytestmark = pytest.mark.unit

SOURCES = source_study()
IMAGES = shown(SOURCES)
WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
CONTROLS = {chr(code) for code in (*range(0x20), *range(0x7F, 0xA0))} - {"\r"}
PIECES = [
    "<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "}", "|", ", ", "[1, 2, 3, 4]", "[10, 20, 60, 90]",
    "Lungs:", "Heart:", "Devices:", "Summary:", "Impression:", "no ", "possible ", "effusion", "Cardiomegaly",
    "Support Devices", "endotracheal tube", "Pneumothorax", "Differential:", "\n", ". ", "\u3000", "\u2028", "\x85",
    "Please provide a frontal chest X-ray image.", "The answer is: ",
]  # fmt: skip
model_output = st.lists(
    st.one_of(st.sampled_from(PIECES), st.sampled_from(SPECIAL_CHARACTERS), st.text(max_size=8)), max_size=60
).map(lambda chars: "".join(chars).encode("utf-8", "replace").decode("utf-8"))  # decoded tokens: no surrogate


def _read(profile: str, text: str) -> Reading:
    parsed = get_profile(profile).parse(text, images=IMAGES)
    base = reading(SOURCES, raw_text=text)
    fields = ("reasoning", "findings", "answer_labels", "differential", "impression", "flags")
    return base.model_copy(update={name: getattr(parsed, name) for name in fields})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=model_output, profile=st.sampled_from(["nv-reason-cxr", "deepmedix-r1"]))
@example(  # an impression (the summary section) holding every kind of hostile text: the checks below see it
    text="<think>Lungs: clear.\nSummary: \\F\\ a|b^c \x00\x1b[2J\x85 胸水 😀 \u202e end \\</think>"
    "<answer>Edema</answer>",
    profile="nv-reason-cxr",
)
def test_whatever_a_model_writes_every_output_is_built_and_reads_back(text: str, profile: str) -> None:
    read = _read(profile, text)
    files = build_drafts(
        read, SOURCES, settings=ReportingSettings(gsps=True), revision=1, created_at=WHEN
    )  # raises on any output it cannot build
    with config.strict_reading():
        for data in (files.sr, files.companion, files.gsps):
            if data is not None:
                ds = dcmread(io.BytesIO(data))
                for element in ds.iterall():
                    _ = element.value
    impression = read.impression or ""
    sr = dcmread(io.BytesIO(files.sr))
    shown = [
        item.TextValue
        for item in sr.ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == codes.IMPRESSION.value
    ]
    assert shown == ([dicom_text(impression, "UT").text.rstrip()] if impression.strip() else [])
    message = files.hl7.decode("utf-8")
    assert not [char for char in message if char in CONTROLS]
    parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    # Split on the raw delimiters, as a receiver without an HL7 library would: no text shifts a field or a segment.
    segments = [segment.split("|") for segment in message.split("\r") if segment]
    assert {fields[0] for fields in segments} <= {"MSH", "PID", "PV1", "ORC", "OBR", "NTE", "OBX"}
    assert all(len(fields) <= 12 for fields in segments if fields[0] == "OBX")  # OBX-11 (status) is the last
    assert all(fields[11] == "P" for fields in segments if fields[0] == "OBX")
    hl7_impression = "".join(
        unescape(fields[5])
        for fields in segments
        if fields[0] == "OBX" and fields[3].startswith(codes.IMPRESSION.value + "^")
    )
    assert hl7_impression == (hl7_text(impression).text if impression.strip() else "")
    bundle = json.loads(files.fhir.decode("utf-8"))
    assert bundle["resourceType"] == "Bundle"
    [report] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    if impression:
        assert fhir_text(impression).text in report["conclusion"]
