"""The drafts' "Model output flags" (RT-FLAGS) name a suspected negative and a polarity header contradiction.

A RIS or a PACS rule that reads only the flags item of the SR or the ORU (or FHIR's conclusion) missed both: they
were said only in the image notes (RT-IMG). The flags are now the worklist's (``suspected-negative``,
``polarity-contradiction``), from the same reader of the inversion step; a film read the right way round has
neither.
"""

from __future__ import annotations

import copy
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import config, dcmread
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.console.worklist import reading_flags
from radtrace.model.image import display_values
from radtrace.model.polarity import POLARITY_CONTRADICTION, SUSPECTED_NEGATIVE
from radtrace.model.reading import Reading, ReadingFlag
from radtrace.reporting import codes
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.hl7 import build_oru, observation_texts, unescape
from radtrace.reporting.sr import build_sr, sr_bytes
from reporting_support import reading, shown, source_study
from tests_support import sr_dciodvfy

pytestmark = pytest.mark.unit

SETTINGS = ReportingSettings()
WHEN = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
SOURCES = source_study()
POLARITY_FLAGS = {SUSPECTED_NEGATIVE, POLARITY_CONTRADICTION}


def _header(case: str) -> dict[str, str]:
    """The frontal film's header for ``case``: as made, a negative (the other Photometric Interpretation and the
    shape restating it, as a vendor writing the wrong one writes both), or a shape contradicting it."""
    photometric = SOURCES[0].PhotometricInterpretation
    if case == "negative":
        if photometric == "MONOCHROME1":
            return {"PhotometricInterpretation": "MONOCHROME2", "PresentationLUTShape": "IDENTITY"}
        return {"PhotometricInterpretation": "MONOCHROME1", "PresentationLUTShape": "INVERSE"}
    if case == "contradiction":
        return {"PresentationLUTShape": "IDENTITY" if photometric == "MONOCHROME1" else "INVERSE"}
    return {}


def _reading(case: str, flags: frozenset[ReadingFlag] = frozenset()) -> Reading:
    """The factory PA film read with the preparation the real chain records for ``case``."""
    changed = copy.deepcopy(SOURCES[0])
    for keyword, value in _header(case).items():
        setattr(changed, keyword, value)
    [image] = shown(SOURCES)
    image = image.model_copy(update={"preparation": tuple(display_values(changed)[1]), "role": "frontal"})
    return reading(SOURCES, images=(image,), flags=flags)


def _split(value: str) -> set[str]:
    return {flag.strip() for flag in value.split(",") if flag.strip()}


def _sr_flags(sr: Dataset) -> set[str]:
    """The flags of the SR's RT-FLAGS TEXT items, the SR read back with strict pydicom."""
    with config.strict_reading():
        ds = dcmread(io.BytesIO(sr_bytes(sr)))
        for element in ds.iterall():
            _ = element.value
    found: set[str] = set()

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == codes.READING_FLAGS.value:
                found.update(_split(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return found


def _leaf(element: Any) -> str:
    while getattr(element, "children", None):
        element = element.children[0]
    value = element.value
    return str(getattr(value, "value", value))


def _oru_flags(text: str) -> set[str]:
    """The flags of the ORU's RT-FLAGS OBX, parsed by hl7apy (STRICT, validated) and by python-hl7 alike."""
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()
    segments: list[Any] = []

    def walk(element: Any) -> None:
        for child in element.children:
            if child.name == "OBX":
                segments.append(child)
            elif child.classname == "Group":
                walk(child)

    walk(message)
    strict = observation_texts(
        (_leaf(o.obx_3), _leaf(o.obx_4) if o.obx_4.children else "", unescape(_leaf(o.obx_5))) for o in segments
    )
    parsed = hl7.parse(text)
    loose = observation_texts(
        (str(s[3][0][0]), str(s[4]), parsed.unescape(str(s[5]))) for s in parsed.segments("OBX") if str(s[2]) == "TX"
    )
    key = (codes.READING_FLAGS.value, "")
    assert strict.get(key) == loose.get(key)
    return _split(strict.get(key, ""))


def _fhir_flags(read: Reading) -> set[str]:
    bundle = json.loads(build_fhir_bundle(read, SOURCES[0], settings=SETTINGS, revision=1, created_at=WHEN))
    [report] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    lines = [line for line in report["conclusion"].split("\n") if line.startswith("Model output flags: ")]
    return _split(lines[0].removeprefix("Model output flags: ")) if lines else set()


@pytest.mark.parametrize(
    ("case", "expected"),
    [("as made", set()), ("negative", {SUSPECTED_NEGATIVE}), ("contradiction", {POLARITY_CONTRADICTION})],
)
def test_the_flags_item_of_every_draft_names_what_the_polarity_check_found(
    case: str, expected: set[str], tmp_path: Path
) -> None:
    read = _reading(case)
    sr = build_sr(read, SOURCES, settings=SETTINGS, revision=1, content_datetime=WHEN)
    errors, warnings = sr_dciodvfy(sr, tmp_path / "sr.dcm")
    assert errors == []
    assert warnings == []
    assert _sr_flags(sr) & POLARITY_FLAGS == expected
    oru = build_oru(read, SOURCES[0], settings=SETTINGS, sr_sop_instance_uid=str(sr.SOPInstanceUID), created_at=WHEN)
    assert _oru_flags(oru.text) & POLARITY_FLAGS == expected
    assert _fhir_flags(read) & POLARITY_FLAGS == expected
    # The worklist raises the same flags for the recorded reading (inference_completed's JSON).
    assert set(reading_flags(json.loads(read.model_dump_json()), None)) & POLARITY_FLAGS == expected


def test_a_normal_film_has_no_flags_item_and_a_negative_is_listed_among_the_models_own_flags(tmp_path: Path) -> None:
    normal = _reading("as made")
    sr = build_sr(normal, SOURCES, settings=SETTINGS, revision=1, content_datetime=WHEN)
    assert _sr_flags(sr) == set()  # no RT-FLAGS item at all: nothing to flag
    oru = build_oru(normal, SOURCES[0], settings=SETTINGS, sr_sop_instance_uid=str(sr.SOPInstanceUID), created_at=WHEN)
    assert _oru_flags(oru.text) == set()
    truncated = _reading("negative", flags=frozenset({ReadingFlag.TRUNCATED}))
    sr = build_sr(truncated, SOURCES, settings=SETTINGS, revision=1, content_datetime=WHEN)
    errors, warnings = sr_dciodvfy(sr, tmp_path / "truncated.dcm")
    assert (errors, warnings) == ([], [])
    assert _sr_flags(sr) == {SUSPECTED_NEGATIVE, "truncated"}
    oru = build_oru(truncated, SOURCES[0], settings=SETTINGS, sr_sop_instance_uid=str(sr.SOPInstanceUID),
                    created_at=WHEN)  # fmt: skip
    assert _oru_flags(oru.text) == {SUSPECTED_NEGATIVE, "truncated"}
