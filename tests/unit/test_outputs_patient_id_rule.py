"""Every draft follows one rule for the source's Patient ID: carried exactly where a DICOM LO can hold it, else left
out of all of them, noted and flagged.

Before: a Patient ID holding a control character ('MRN\\x0112\\t34', as a broken interface writes it) was left out
of the SR (LO allows no control character) but carried by the ORU (PID-3 ``MRN\\X01\\12\\X09\\34``), so the SR and
the ORU named different patients, and only the SR said so. A value carried with its control characters makes an
invalid SR (dciodvfy: "Character invalid for this VR") and an HL7 ST with non-printable characters; one with them
taken out or replaced can name another patient. Now SR, ORU and FHIR carry the same values (the SR's Patient ID or
Other Patient IDs, PID-3's repetitions, the Patient's identifiers); a value left out is said in the header notes of
the SR and the ORU and flagged ``patient-id-omitted`` in the flags of all three.

Source: the NIH ChestX-ray14 real film (tests/data/real-cxr) with its Patient ID replaced, read as the worker reads
it; every SR checked by dciodvfy and strict pydicom, every ORU parsed by hl7apy STRICT and validated.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom import config, dcmread
from pydicom.multival import MultiValue

from drafts_readback_support import one_image_drafts, read_back
from radtrace.model.study import study_image
from radtrace.reporting import codes
from radtrace.reporting.hl7 import unescape

pytestmark = pytest.mark.unit

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
WHEN = datetime(2026, 12, 5, 11, 30, tzinfo=UTC)
PATIENT_ID_OMITTED = "patient-id-omitted"  # the flag a RIS or PACS rule reads


def _drafts(patient_id: str, tmp_path: Path) -> dict[str, Any]:
    ds = dcmread(FILM)
    ds.PatientID = patient_id
    path = tmp_path / "film.dcm"
    ds.save_as(path, enforce_file_format=True)
    source = study_image(path.read_bytes()).dataset
    sent = source.PatientID
    assert ("\\".join(sent) if isinstance(sent, MultiValue) else sent) == patient_id  # read as sent
    files = one_image_drafts(source, WHEN)
    assert files.companion is not None
    drafts = read_back(files, tmp_path)
    errors, texts, oru_texts = drafts.sr_errors, drafts.sr_texts, drafts.oru_texts
    with config.strict_reading():
        sr = dcmread(io.BytesIO(files.sr))
        for element in sr.iterall():
            _ = element.value
    pid3 = drafts.segment("PID")[3]
    oru_ids = [] if pid3 == '""' else [unescape(rep.split("^")[0]) for rep in pid3.split("~")]
    patient, report = drafts.fhir_patient, drafts.fhir_report
    fhir_flags = next(
        (line.removeprefix("Model output flags: ") for line in report["conclusion"].split("\n") if "flags:" in line), ""
    )
    companion = dcmread(io.BytesIO(files.companion))
    sr_ids = [sr.PatientID] if sr.PatientID else [item.PatientID for item in sr.get("OtherPatientIDsSequence", [])]
    return {
        "sr_errors": errors,
        "sr_ids": sr_ids,
        "companion_id": companion.PatientID,
        "sr_id": sr.PatientID,
        "oru_ids": oru_ids,
        "fhir_ids": [identifier["value"] for identifier in patient.get("identifier", [])],
        "sr_flags": {f.strip() for f in texts.get(codes.READING_FLAGS.value, "").split(",")},
        "oru_flags": {f.strip() for f in oru_texts.get(codes.READING_FLAGS.value, "").split(",")},
        "fhir_flags": {f.strip() for f in fhir_flags.split(",")},
        "sr_notes": texts.get(codes.HEADER_NOTES.value, ""),
        "oru_notes": oru_texts.get(codes.HEADER_NOTES.value, ""),
    }


@pytest.mark.parametrize(
    ("patient_id", "carried"),
    [
        ("MRN\x0112\t34", []),  # C0 controls inside
        ("12345\r", []),  # a CR left by an interface at the end
        ("MRN\x85", []),  # a C1 control (NEL)
        ("A7\\B\x028", ["A7"]),  # two values: the good one is carried by all, the other by none
    ],
    ids=["controls-inside", "trailing-cr", "c1-control", "two-values-one-bad"],
)
def test_a_patient_id_no_draft_can_hold_is_left_out_of_all_of_them_and_flagged(
    patient_id: str, carried: list[str], tmp_path: Path
) -> None:
    drafts = _drafts(patient_id, tmp_path)
    assert drafts["sr_errors"] == []
    assert drafts["sr_ids"] == drafts["oru_ids"] == drafts["fhir_ids"] == carried
    assert drafts["companion_id"] == drafts["sr_id"]
    for flags in ("sr_flags", "oru_flags", "fhir_flags"):
        assert PATIENT_ID_OMITTED in drafts[flags], flags
    for notes in ("sr_notes", "oru_notes"):
        assert "(0010,0020) PatientID: holds what a DICOM LO cannot" in drafts[notes], notes
        assert not any(char in drafts[notes] for char in "\x01\x02\r\t\x85")  # the ID itself is never repeated


def test_a_valid_patient_id_is_carried_exactly_by_every_draft_and_not_flagged(tmp_path: Path) -> None:
    drafts = _drafts("MRN-0042/ß", tmp_path)
    assert drafts["sr_errors"] == []
    assert drafts["sr_ids"] == drafts["oru_ids"] == drafts["fhir_ids"] == ["MRN-0042/ß"]
    assert drafts["companion_id"] == "MRN-0042/ß"
    assert not any(PATIENT_ID_OMITTED in drafts[flags] for flags in ("sr_flags", "oru_flags", "fhir_flags"))
