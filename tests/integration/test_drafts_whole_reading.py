"""Any reading, rebuilt from its stored JSON (Reading.from_json: what the worker re-reports, what the audit holds),
gives drafts a receiver accepts: every field of the whole Reading drawn at once (its texts, findings, boxes, images and
their preparation records, view flags, model identity, token counts and timings), not field by field as the text, age,
identity and image-notes properties do. The SR, the companion document and the GSPS (built where a finding present or
uncertain has a box) pass dciodvfy with no error, the ORU hl7apy STRICT, the Bundle fhir.resources (build_fhir_bundle
validates it), and no output holds a control character in its text (C0 but TAB, LF and CR; DEL; C1): the DICOM
documents' values, the ORU's text (CR ends segments, every other control is escaped) and every string of the Bundle."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.model.reading import (
    REASONING_SECTIONS,
    BoundingBox,
    Finding,
    FindingStatus,
    ModelIdentity,
    Reading,
    ReadingFlag,
    ReasoningStep,
    SourceImage,
    Timings,
    TokenCounts,
)
from radtrace.reporting import codes
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.sr import draft_identity
from reporting_support import IDENTITY, SPECIAL_CHARACTERS, reading, real_film
from tests_support import dciodvfy_lines

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 12, 6, 3, 30, tzinfo=UTC)
FILM = real_film("nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm")
SOP = str(FILM.SOPInstanceUID)
#: A control character in text: C0 but TAB, LF and CR, DEL, C1.
CONTROL = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]")
HL7_CONTROL = re.compile("[\x00-\x0c\x0e-\x1f\x7f-\x9f]")  # the ORU's bytes: CR ends segments, nothing else raw

text = st.lists(
    st.one_of(st.sampled_from([*SPECIAL_CHARACTERS, "x" * 70, "Nodule", "\n"]), st.characters()), max_size=24
).map(
    lambda chars: "".join(chars).encode("utf-8", "replace").decode("utf-8")  # stored JSON holds no lone surrogate
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
#: Preparation steps as the worker records them, their values any JSON: the polarity, image marks and character-set
#: rules read these keys.
STEP_KEYS = (
    "step", "photometric", "presentation_lut_shape", "polarity_check", "suspected_inversion", "contradiction", "lossy",
    "lossless_not_verified", "burned_in_annotation", "header_voi_not_applied", "character_set",
)  # fmt: skip
step = st.builds(
    lambda name, values: {"step": name, **values},
    st.sampled_from(["inversion", "source", "voi", "header", "resize"]) | text,
    st.dictionaries(st.sampled_from(STEP_KEYS[1:]) | text, json_value, max_size=4),
)
finite = st.floats(allow_nan=False, allow_infinity=False)
#: A box's corners anywhere: the model's boxes are clipped to their image (radtrace.model.image.to_source_pixels), a
#: stored reading's need not be. Before sr_groups.box_outline, a negative corner made the GSPS raise highdicom's
#: ValueError ("Graphic data must be non-negative") and one past float32's range put infinity in the SR's SCOORD.
columns = finite | st.floats(0, float(FILM.Columns), width=32)
rows = finite | st.floats(0, float(FILM.Rows), width=32)


@st.composite
def boxes(draw: st.DrawFn) -> BoundingBox:
    xs, ys = sorted([draw(columns), draw(columns)]), sorted([draw(rows), draw(rows)])
    return BoundingBox(sop_instance_uid=SOP, x_min=xs[0], x_max=xs[1], y_min=ys[0], y_max=ys[1])


findings = st.builds(
    Finding,
    label=text.filter(bool) | st.sampled_from(["Atelectasis", "Support Devices", "No Finding", "Pleural Effusion"]),
    status=st.sampled_from(FindingStatus),
    confidence=st.none() | st.floats(0.0, 1.0),
    boxes=st.lists(boxes(), max_size=2).map(tuple),
    evidence=st.none() | text,
)
images = st.builds(
    SourceImage,
    sop_instance_uid=st.just(SOP),
    sop_class_uid=text,
    sha256=text,
    view=st.none() | text | st.sampled_from(["PA", "AP", "LL"]),
    rows=st.integers(1, 2**31),
    columns=st.integers(1, 2**31),
    model_rows=st.integers(1, 2**31),
    model_columns=st.integers(1, 2**31),
    preparation=st.lists(step, max_size=3).map(tuple),
    role=st.sampled_from([None, "frontal", "lateral"]),
    view_flags=st.lists(text | st.sampled_from(["ap", "portable", "view-unknown"]), max_size=3).map(tuple),
)
identities = st.builds(
    ModelIdentity,
    profile=text,
    profile_version=text,
    backend=st.sampled_from(["transformers", "vllm", "onnxruntime", "demo"]),
    model_name=text,
    source=text,
    revision=st.none() | text,
    weights_sha256=st.none() | text,
    dtype=text,
    device=text,
    prompt=text,
    generation=st.dictionaries(text, json_value, max_size=3),
)
readings = st.builds(
    Reading,
    reasoning=st.lists(
        st.builds(ReasoningStep, section=st.sampled_from(REASONING_SECTIONS), text=text), max_size=4
    ).map(tuple),
    findings=st.lists(findings, max_size=4).map(tuple),
    answer_labels=st.lists(text, max_size=3).map(tuple),
    differential=st.lists(text, max_size=3).map(tuple),
    impression=st.none() | text,
    raw_text=text,
    flags=st.frozensets(st.sampled_from(ReadingFlag)),
    images=st.tuples(images),
    identity=identities,
    tokens=st.builds(TokenCounts, prompt=st.integers(0, 2**40), image=st.integers(0, 2**40), generated=st.integers(0)),
    timings=st.builds(
        Timings,
        prepare_s=st.floats(0, 1e9),
        generate_s=st.floats(0, 1e9),
        parse_s=st.floats(0, 1e9),
        batch_size=st.integers(1, 2**31),
    ),
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _dicom_strings(ds: Dataset) -> Iterator[tuple[str, str]]:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                yield from _dicom_strings(item)
        elif isinstance(element.value, str):
            yield element.keyword, element.value
        elif isinstance(element.value, list | tuple):
            yield from ((element.keyword, str(v)) for v in element.value if isinstance(v, str))
        elif element.VR == "PN":
            yield element.keyword, str(element.value)


def _dciodvfy_errors(data: bytes, path: Path) -> list[str]:
    path.write_bytes(data)
    return [line for line in dciodvfy_lines(path) if "Error" in line]


def test_a_weights_digest_with_control_characters_is_carried_lo_safe_in_the_gsps(tmp_path: Path) -> None:
    # Found by the property: the SR and FHIR carried the digest LO-safe (bf5c741), the GSPS' Device Serial Number raw
    # (dciodvfy: "Character invalid for this VR").
    identity = IDENTITY.model_copy(update={"weights_sha256": "ab\x05cd\x00ef"})
    read = reading([FILM], identity=identity)  # its Atelectasis, present, has a box on FILM
    files = build_drafts(read, [FILM], settings=ReportingSettings(gsps=True), revision=1, created_at=WHEN)
    assert files.gsps is not None
    assert _dciodvfy_errors(files.gsps, tmp_path / "gsps.dcm") == []
    gsps = dcmread(io.BytesIO(files.gsps))
    assert gsps.DeviceSerialNumber == draft_identity(identity).weights_sha256 == "ab\ufffdcd\ufffdef"


def test_an_unknown_label_is_named_in_the_companion_and_the_gsps_as_the_sr_names_it(tmp_path: Path) -> None:
    # Found by the property: the companion's finding line and the GSPS' box label said the model's label raw (a form
    # feed, which a UT holds, reached the companion's text) while the SR, the ORU and FHIR name it LO-safe.
    box = BoundingBox(sop_instance_uid=SOP, x_min=10, y_min=20, x_max=30, y_max=40)
    finding = Finding(label="Nod\x0cule\x1b", status=FindingStatus.PRESENT, confidence=0.5, boxes=(box,))
    read = reading([FILM], findings=[finding])
    files = build_drafts(read, [FILM], settings=ReportingSettings(gsps=True), revision=1, created_at=WHEN)
    assert files.companion is not None
    assert files.gsps is not None
    companion, gsps = dcmread(io.BytesIO(files.companion)), dcmread(io.BytesIO(files.gsps))
    lines = [v for k, v in _dicom_strings(companion) if k == "TextValue" and v.startswith("Nod")]
    assert lines == ["Nod\ufffdule\ufffd: present (model confidence 0.50; 1 box in the structured report)"]
    [label] = [v for k, v in _dicom_strings(gsps) if k == "UnformattedTextValue"]
    assert label == "Nod\ufffdule\ufffd (AI draft)"
    assert codes.finding_code(finding.label).code.meaning == "Nod\ufffdule\ufffd"  # the SR's, ORU's and FHIR's name


def test_a_stored_box_off_its_image_is_drawn_on_the_image_in_the_sr_and_the_gsps(tmp_path: Path) -> None:
    # A box the model path would have clipped (radtrace.model.image.to_source_pixels): a corner below 0 made the GSPS
    # raise highdicom's ValueError, not a ReportError; one past float32's range put infinity in the SR's SCOORD.
    box = BoundingBox(sop_instance_uid=SOP, x_min=-50.0, y_min=-1e39, x_max=1e39, y_max=float(FILM.Rows) + 7)
    finding = Finding(label="Atelectasis", status=FindingStatus.PRESENT, confidence=0.5, boxes=(box,))
    read = Reading.from_json(reading([FILM], findings=[finding]).to_json())
    files = build_drafts(read, [FILM], settings=ReportingSettings(gsps=True), revision=1, created_at=WHEN)
    assert files.gsps is not None
    on_image = [0.0, 0.0, float(FILM.Columns), 0.0, float(FILM.Columns), float(FILM.Rows), 0.0, float(FILM.Rows)]
    for name, data, keyword in (("sr", files.sr, "GraphicData"), ("gsps", files.gsps, "GraphicData")):
        assert _dciodvfy_errors(data, tmp_path / f"{name}.dcm") == [], name
        [outline] = [list(e.value) for e in _elements(dcmread(io.BytesIO(data))) if e.keyword == keyword]
        assert outline == [*on_image, 0.0, 0.0], name  # closed, every corner on the image


def _elements(ds: Dataset) -> Iterator[Any]:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                yield from _elements(item)
        else:
            yield element


# No shrinking: each example runs dciodvfy three times; the falsifying example is printed as generated.
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(drawn=readings)
def test_property_any_stored_reading_gives_valid_drafts_without_control_characters(
    tmp_path: Path, drawn: Reading
) -> None:
    read = Reading.from_json(drawn.to_json())  # as stored and read back
    config = ReportingSettings(gsps=True, companion_document=True)
    files = build_drafts(read, [FILM], settings=config, revision=1, created_at=WHEN)  # FHIR validated there
    assert files.companion is not None
    drawn_boxes = any(f.boxes for f in read.findings if f.status is not FindingStatus.ABSENT)
    assert (files.gsps is not None) == drawn_boxes  # the GSPS draws the boxes of what may be there
    for name, data in (("sr", files.sr), ("companion", files.companion), ("gsps", files.gsps)):
        if data is None:
            continue
        (tmp_path / f"{name}.dcm").write_bytes(data)
        errors = [line for line in dciodvfy_lines(tmp_path / f"{name}.dcm") if "Error" in line]
        assert errors == [], name
        raw = [(k, v) for k, v in _dicom_strings(dcmread(io.BytesIO(data))) if CONTROL.search(v)]
        assert raw == [], name
    assert files.hl7 is not None
    assert files.fhir is not None
    hl7 = files.hl7.decode("utf-8")
    parse_message(hl7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    assert HL7_CONTROL.findall(hl7) == []
    assert [s for s in _strings(json.loads(files.fhir)) if CONTROL.search(s)] == []
