"""One rule for every header text that reaches a draft: the SR, the ORU and FHIR carry the same value, or all say
they left it out.

Before (977afda): a C1 control in the patient's name (``Doe\\x81^John``, a gateway that wrote a Windows-1252 byte
into a UTF-8 header) was U+FFFD in the SR's Patient Name, the hex escape ``\\XC281\\`` in PID-5 (the raw control once
a RIS unescapes it) and the raw U+0081 in the FHIR Patient's family name; only the SR said it had changed the name.
An Accession Number or Issuer with a control character was left out of the SR but sent in ORC-3 / CX.4 (and the
accession in FHIR), with nothing said in FHIR. Now :func:`radtrace.reporting.draft_header.draft_header` decides
once: identifiers exactly or left out of every draft with a note, names with what a DICOM PN cannot hold replaced by
U+FFFD in all three and a note (``header-normalised``) in all three (FHIR: its conclusion's header notes).

Source: the NIH ChestX-ray14 real film (tests/data/real-cxr); the C1 case is written as bytes and read as the worker
reads it. The property test puts arbitrary text (C0/C1 controls, lone surrogates, HL7 delimiters, the DICOM value
delimiter, bidi overrides, long values) in the header fields the drafts copy; every SR is checked by dciodvfy, every
ORU parsed by hl7apy STRICT.
"""

from __future__ import annotations

import io
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from drafts_readback_support import one_image_drafts, read_back
from radtrace.model.reading import Finding, FindingStatus
from radtrace.model.study import study_image
from radtrace.reporting import codes
from radtrace.reporting.header import name_group, values_of
from radtrace.reporting.hl7 import unescape
from reporting_support import IDENTITY, SPECIAL_CHARACTERS
from tests_support import dciodvfy_lines

pytestmark = pytest.mark.unit

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
WHEN = datetime(2026, 12, 6, 3, 30, tzinfo=UTC)
REPLACEMENT = "\ufffd"
CONTROLS = frozenset(chr(code) for code in (*range(0x20), *range(0x7F, 0xA0)))
BIDI = ["\u202e", "\u202d", "\u200f", "\u2066", "\u2069"]


def drafts_of(source: Dataset, tmp_path: Path) -> dict[str, Any]:
    """Every value the three drafts of ``source`` carry about the patient and the study, parsed back."""
    files = one_image_drafts(source, WHEN)
    drafts = read_back(files, tmp_path)
    sr, sr_texts, oru_texts = drafts.sr, drafts.sr_texts, drafts.oru_texts
    fields = {segment[0]: segment for segment in reversed(drafts.segments)}
    patient, report = drafts.fhir_patient, drafts.fhir_report

    def repetitions(value: str) -> list[list[str]]:
        return [] if value in ("", '""') else [[unescape(c) for c in rep.split("^")] for rep in value.split("~")]

    sr_ids = [str(sr.PatientID)] if sr.PatientID else [str(i.PatientID) for i in sr.get("OtherPatientIDsSequence", [])]
    (family, given, middle, _, _), _ = name_group(str(sr.PatientName))
    fhir_names = patient.get("name", [])
    acsn = [i["value"] for i in report["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "ACSN"]
    pid3 = repetitions(fields["PID"][3])
    return {
        "dciodvfy": drafts.sr_errors,
        "ids": {
            "sr": sr_ids,
            "oru": [rep[0] for rep in pid3],
            "fhir": [i["value"] for i in patient.get("identifier", [])],
        },
        "issuer": {
            "sr": str(sr.get("IssuerOfPatientID", "")),
            "oru": pid3[0][3] if pid3 and len(pid3[0]) > 3 else "",
            "fhir": patient.get("identifier", [{}])[0].get("assigner", {}).get("display", ""),
        },
        "accession": {
            "sr": str(sr.AccessionNumber),
            "oru": unescape(fields["ORC"][3]) if len(fields["ORC"]) > 3 else "",
            "fhir": acsn[0] if acsn else "",
        },
        "name": {
            "sr": [part.strip() for part in (family, given, middle)] if str(sr.PatientName) else [],
            "oru": (repetitions(fields["PID"][5])[:1] or [[]])[0][:3],
            "fhir": [fhir_names[0].get("family", ""), *fhir_names[0].get("given", [])] if fhir_names else [],
        },
        "notes": {
            "sr": sr_texts.get(codes.HEADER_NOTES.value, ""),
            "oru": oru_texts.get(codes.HEADER_NOTES.value, ""),
            "fhir": report["conclusion"],
        },
        "flags": {
            "sr": sr_texts.get(codes.READING_FLAGS.value, ""),
            "oru": oru_texts.get(codes.READING_FLAGS.value, ""),
            "fhir": report["conclusion"],
        },
        "sr": sr,
        "hl7": drafts.hl7,
        "fhir_patient": patient,
    }


def test_a_c1_control_in_the_patient_name_is_the_same_replacement_in_the_sr_the_oru_and_fhir(tmp_path: Path) -> None:
    ds = dcmread(FILM)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds[0x00100010] = DataElement(0x00100010, "PN", "Doe\x81^John".encode())  # U+0081 in UTF-8: C2 81
    path = tmp_path / "film.dcm"
    ds.save_as(path, enforce_file_format=True)
    source = study_image(path.read_bytes()).dataset
    assert str(source.PatientName) == "Doe\x81^John"  # read as sent
    drafts = drafts_of(source, tmp_path)
    assert drafts["dciodvfy"] == []
    assert str(drafts["sr"].PatientName) == f"Doe{REPLACEMENT}^John"
    assert "\\XC281\\" not in drafts["hl7"]
    assert drafts["name"]["oru"] == [f"Doe{REPLACEMENT}", "John"]
    assert drafts["fhir_patient"]["name"] == [{"family": f"Doe{REPLACEMENT}", "given": ["John"]}]
    for where in ("sr", "oru", "fhir"):
        assert "(0010,0010) PatientName: characters or lengths PN does not allow" in drafts["notes"][where], where
        assert "header-normalised" in drafts["flags"][where], where


def test_a_c1_control_in_the_model_text_is_the_same_replacement_in_the_sr_the_oru_and_fhir(tmp_path: Path) -> None:
    """Before: U+FFFD in the SR's impression, ``\\XC285\\`` (a raw NEL once unescaped) in the ORU and the raw
    character in FHIR; only the SR flagged ``text-sanitised``."""
    source = dcmread(FILM, stop_before_pixels=True)
    files = one_image_drafts(source, WHEN, impression="Small effusion\x85 right\tbase.")
    assert files.hl7 is not None
    assert files.fhir is not None
    carried = f"Small effusion{REPLACEMENT} right base."
    sr = dcmread(io.BytesIO(files.sr))
    [sr_impression] = [
        item.TextValue
        for item in sr.ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == codes.IMPRESSION.value
    ]
    hl7 = files.hl7.decode("utf-8")
    oru_impression = "".join(
        unescape(parts[5])
        for parts in (segment.split("|") for segment in hl7.split("\r"))
        if parts[0] == "OBX" and parts[3].split("^")[0] == codes.IMPRESSION.value
    )
    [report] = [
        entry["resource"]
        for entry in json.loads(files.fhir)["entry"]
        if entry["resource"]["resourceType"] == "DiagnosticReport"
    ]
    assert sr_impression == oru_impression == carried
    assert carried in report["conclusion"]
    assert "\\XC285\\" not in hl7
    assert b"text-sanitised" in files.sr  # the SR's flags item
    assert "text-sanitised" in hl7
    assert "text-sanitised" in report["conclusion"]


def test_a_model_name_with_controls_is_the_same_name_in_every_draft_and_the_sr_is_valid(tmp_path: Path) -> None:
    """Before: the SR's observer and algorithm TEXT items carried the model server's name raw (dciodvfy: 'Value
    invalid for this VR'), the ORU's NTE its hex escapes, FHIR's Device the raw controls."""
    source = dcmread(FILM, stop_before_pixels=True)
    identity = IDENTITY.model_copy(update={"model_name": "CXR\x85model\x01|^~&\\v2"})
    files = one_image_drafts(source, WHEN, identity=identity)
    assert files.hl7 is not None
    assert files.fhir is not None
    (tmp_path / "sr.dcm").write_bytes(files.sr)
    assert [line for line in dciodvfy_lines(tmp_path / "sr.dcm") if "Error" in line] == []
    named = f"CXR{REPLACEMENT}model{REPLACEMENT}|^~&{REPLACEMENT}v2"
    assert dcmread(io.BytesIO(files.sr)).ManufacturerModelName == named
    [nte] = [segment.split("|") for segment in files.hl7.decode("utf-8").split("\r") if segment.startswith("NTE|2|")]
    assert unescape(nte[3]).startswith(f"Model: {named} ")
    [device] = [e["resource"] for e in json.loads(files.fhir)["entry"] if e["resource"]["resourceType"] == "Device"]
    assert device["deviceName"] == [{"name": named, "type": "model-name"}]


@pytest.mark.parametrize("label", ["Nodule\x85", "Nodule\x01left", "N" * 70])
def test_a_model_label_that_had_to_change_is_flagged_in_every_draft(tmp_path: Path, label: str) -> None:
    """Before: only the SR flagged ``text-sanitised`` for a label with a control character or over 64 bytes (its
    Code Meaning, an LO, in all three drafts); the ORU flagged only lone surrogates, FHIR never."""
    source = dcmread(FILM, stop_before_pixels=True)
    findings = [Finding(label=label, status=FindingStatus.PRESENT, confidence=0.7)]
    files = one_image_drafts(source, WHEN, findings=findings, impression="Nodule.")
    assert files.hl7 is not None
    assert files.fhir is not None
    [report] = [
        entry["resource"]
        for entry in json.loads(files.fhir)["entry"]
        if entry["resource"]["resourceType"] == "DiagnosticReport"
    ]
    assert b"text-sanitised" in files.sr
    assert "text-sanitised" in files.hl7.decode("utf-8")
    assert "text-sanitised" in report["conclusion"]


def _hostile(max_size: int) -> st.SearchStrategy[str]:
    return st.lists(
        st.one_of(st.sampled_from([*SPECIAL_CHARACTERS, *BIDI]), st.characters(codec=None)), max_size=max_size
    ).map("".join)


hostile_text = st.one_of(_hostile(40), _hostile(8).map(lambda text: text * 40))  # very long: up to 320+ characters
FIELDS = {
    "PatientName": "PN",
    "PatientID": "LO",
    "IssuerOfPatientID": "LO",
    "AccessionNumber": "SH",
    "ReferringPhysicianName": "PN",
    "StudyDescription": "LO",
}


def _film_with(values: dict[str, str]) -> Dataset:
    """The real film's header with each field holding the given text as pydicom would hold it (a backslash splits
    values, as it does when read), UTF-8 declared. Lone surrogates cannot come from a file; they are set in memory."""
    ds = dcmread(FILM, stop_before_pixels=True)
    ds.SpecificCharacterSet = "ISO_IR 192"
    with warnings.catch_warnings():  # pydicom warns about each invalid value: that is the point
        warnings.simplefilter("ignore")
        for keyword, text in values.items():
            tag = tag_for_keyword(keyword)
            assert tag is not None
            ds[tag] = DataElement(tag, FIELDS[keyword], text)
    return ds


def _said(drafts: dict[str, Any], keyword: str) -> bool:
    return all(keyword in drafts["notes"][where] for where in ("sr", "oru", "fhir"))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    name=hostile_text,
    patient_id=hostile_text,
    issuer=hostile_text,
    accession=hostile_text,
    referring=hostile_text,
    description=hostile_text,
)
@example(
    name="Doe\x81^John", patient_id="MRN\x85", issuer="ISS\x9f", accession="A|^~\\&1", referring="", description=""
)
@example(  # an accession over 16 bytes whose escaped form ORC-3 cannot hold either (hypothesis found it)
    name="\x88\x9c\\\x00\udc00",
    patient_id="\\E\\\x00",
    issuer="",
    accession="\ue000" * 40,
    referring="",
    description="",
)
@example(
    name="\u202eeoD^nhoJ", patient_id="ID|^~&", issuer="H&S", accession="ACC-1", referring="R\x1b", description="\\"
)
def test_every_draft_carries_the_same_header_value_or_says_it_left_it_out(
    tmp_path: Path, name: str, patient_id: str, issuer: str, accession: str, referring: str, description: str
) -> None:
    values = {
        "PatientName": name,
        "PatientID": patient_id,
        "IssuerOfPatientID": issuer,
        "AccessionNumber": accession,
        "ReferringPhysicianName": referring,
        "StudyDescription": description,
    }
    source = _film_with(values)
    drafts = drafts_of(source, tmp_path)
    assert drafts["dciodvfy"] == []
    raw = {keyword: values_of(source, keyword) or () for keyword in values}

    ids = drafts["ids"]
    assert ids["sr"] == ids["oru"] == ids["fhir"]
    assert set(ids["sr"]) <= set(raw["PatientID"])  # carried exactly, never altered
    if len(ids["sr"]) < len(raw["PatientID"]):
        assert _said(drafts, "(0010,0020) PatientID")
        assert all("patient-id-omitted" in drafts["flags"][where] for where in ("sr", "oru", "fhir"))

    accession_carried = drafts["accession"]
    if accession_carried["oru"] != accession_carried["fhir"]:  # one whose escaped form ORC-3 cannot hold: said there
        assert accession_carried["oru"] == ""
        assert "(0008,0050) AccessionNumber: too long for ORC-3; omitted from the HL7" in drafts["notes"]["oru"]
    if accession_carried["sr"] != accession_carried["fhir"]:  # only an accession too long for a DICOM SH
        assert accession_carried["sr"] == ""
        assert len(accession_carried["fhir"].encode()) > 16
        assert _said(drafts, "(0008,0050) AccessionNumber: not a valid SH value (over 16 bytes)")
    if raw["AccessionNumber"] and not accession_carried["fhir"]:
        assert _said(drafts, "(0008,0050) AccessionNumber")
    elif raw["AccessionNumber"]:
        assert accession_carried["fhir"] == raw["AccessionNumber"][0]  # exactly, never altered

    issuer_carried = drafts["issuer"]
    if raw["IssuerOfPatientID"] and not issuer_carried["sr"]:
        assert _said(drafts, "(0010,0021) IssuerOfPatientID")
    elif issuer_carried["sr"]:
        assert issuer_carried["sr"] == raw["IssuerOfPatientID"][0]
    if ids["sr"]:  # the issuer is written with the identifiers
        assert issuer_carried["fhir"] == issuer_carried["sr"]
        # HL7 CX.4 (HD.1, IS) holds at most 20 characters: a longer issuer is left out of the ORU, which says so
        assert issuer_carried["oru"] == issuer_carried["sr"] or (
            not issuer_carried["oru"] and "IssuerOfPatientID: too long for PID-3 CX.4" in drafts["notes"]["oru"]
        )

    names = drafts["name"]
    sr_name = list(names["sr"])
    fhir_name = [names["fhir"][0] if names["fhir"] else "", *names["fhir"][1:]]
    assert names["oru"][:1] == sr_name[:1] or (not names["oru"] and not any(sr_name))
    assert [*names["oru"], "", ""][:3] == [*sr_name, "", ""][:3] or not any(sr_name)
    if any(sr_name):
        assert fhir_name[0] == sr_name[0]
        assert fhir_name[1:] == [part for part in sr_name[1:3] if part.strip()]
    for carried in (*sr_name, *names["oru"], *fhir_name):
        assert not set(carried) & CONTROLS
    first_name = raw["PatientName"][0] if raw["PatientName"] else ""
    if set(first_name) & (CONTROLS | set("\\")) or any("\ud800" <= char <= "\udfff" for char in first_name):
        assert _said(drafts, "(0010,0010) PatientName")
        assert all("header-normalised" in drafts["flags"][where] for where in ("sr", "oru", "fhir"))
