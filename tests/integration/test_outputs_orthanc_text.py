"""Hostile text through a real PACS: SRs and companions sent to Orthanc by radtrace's C-STORE client, read back.

Orthanc decodes each instance by the Specific Character Set it declares and answers its tags as UTF-8 JSON, as a
viewer built on it would show them. For model text (CJK, emoji, right-to-left, combining marks, controls, HL7
escape sequences, backslashes) and header text (a person name in three component groups, an identifier with HL7
delimiters), what Orthanc shows is exactly the DICOM-safe text radtrace meant to write.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom import dcmread

from orthanc_support import Orthanc, running_orthanc
from radtrace.config import DicomDestination, ReportingSettings
from radtrace.model.reading import Finding, FindingStatus, ReasoningStep
from radtrace.reporting import codes
from radtrace.reporting.dispatch.cstore import store_instance
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.text import dicom_text
from radtrace.testing.studies import StudySpec
from reporting_support import reading, source_study

pytestmark = pytest.mark.integration

TEXTS = {
    "cjk-emoji": "右下肺野に浸潤影。胸水少量 😀🫁 — 心拡大なし",
    "rtl-combining": "תסנין בבסיס הימני; e\u0301de\u0300me pulmonaire; \u202eevil\u202c",
    "controls": "line one\r\nline two\x00\x1b[2J\x85\x0b end\ttab",
    "hl7-escapes": "a|b^c~d\\e&f \\F\\ \\S\\ \\E\\ \\X0D\\ \\.br\\ end",
    "long": ("Pleural effusion, right. 胸水。" * 400),
}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def _texts(tags: Any) -> dict[str, list[str]]:
    """TEXT content items of Orthanc's simplified JSON, by concept name code value."""
    found: dict[str, list[str]] = {}

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            if item.get("ValueType") == "TEXT":
                code = item["ConceptNameCodeSequence"][0]["CodeValue"]
                found.setdefault(code, []).append(item["TextValue"])
            walk(item.get("ContentSequence", []))

    walk(tags.get("ContentSequence", []))
    return found


def _stored_tags(orthanc: Orthanc, payload: bytes, sop_instance_uid: str) -> dict[str, Any]:
    """Orthanc's JSON of the instance once stored; values Orthanc's REST API leaves out for their length (it answers
    null above 256 bytes) are taken from the file Orthanc stored, read with pydicom."""
    pacs = DicomDestination(ae_title=orthanc.ae_title, host="127.0.0.1", port=orthanc.dicom_port)
    assert store_instance(payload, pacs, calling_ae_title="RADTRACE").status == 0
    [instance] = orthanc.find_instance(sop_instance_uid)
    tags = orthanc.get(f"/instances/{instance}/simplified-tags")
    assert isinstance(tags, dict)
    stored = orthanc.dataset(instance)

    def fill(items: list[dict[str, Any]], datasets: Any) -> None:
        for item, ds in zip(items, datasets, strict=True):
            if item.get("ValueType") == "TEXT" and item["TextValue"] is None:
                item["TextValue"] = ds.TextValue
            fill(item.get("ContentSequence", []), ds.get("ContentSequence", []))

    fill(tags.get("ContentSequence", []), stored.ContentSequence)
    return tags


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_model_text_reads_back_from_orthanc_as_radtrace_wrote_it(orthanc: Orthanc, name: str) -> None:
    text = TEXTS[name]
    sources = source_study(StudySpec(seed=100 + sorted(TEXTS).index(name)))  # a study (and SR UIDs) of its own
    sources[0].PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    sources[0].PatientID = "ID|1^2&3~4"
    read = reading(
        sources,
        impression=text,
        reasoning=(ReasoningStep(section="lungs", text=text),),
        findings=[Finding(label="Atelectasis", status=FindingStatus.PRESENT, evidence=text)],
    )
    files = build_drafts(read, sources, settings=ReportingSettings(), revision=1)
    safe = dicom_text(text, "UT").text.rstrip()

    tags = _stored_tags(orthanc, files.sr, files.sr_sop_instance_uid)
    assert tags["SpecificCharacterSet"] == "ISO_IR 192"
    assert tags["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert tags["PatientID"] == "ID|1^2&3~4"
    texts = _texts(tags)
    assert texts[codes.IMPRESSION.value] == [safe]
    assert texts[codes.reasoning_code("lungs").value] == [safe]

    assert files.companion is not None
    companion_uid = str(dcmread(io.BytesIO(files.companion)).SOPInstanceUID)
    companion = _stored_tags(orthanc, files.companion, companion_uid)
    assert companion["PatientName"] == tags["PatientName"]
    shown = [value for values in _texts(companion).values() for value in values]
    assert safe in shown  # the impression, as the companion's viewers show it


def test_orthanc_holds_every_sr_in_its_source_study(orthanc: Orthanc) -> None:
    """Guards the test above: the SRs it sent are where a viewer looks for them (the study of the source)."""
    sources = source_study(StudySpec(seed=99))
    files = build_drafts(reading(sources), sources, settings=ReportingSettings(), revision=1)
    tags = _stored_tags(orthanc, files.sr, files.sr_sop_instance_uid)
    assert tags["StudyInstanceUID"] == str(sources[0].StudyInstanceUID)
