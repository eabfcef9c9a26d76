"""Header values whose bytes are not valid in the character set they are read in: identifiers are left out of every
draft, never carried altered; names and texts are carried and the header notes say they were damaged.

Before: a film declaring ``ISO_IR 192`` with a Patient ID of bytes ``ID\\xff1`` (a gateway writing Latin-1 into a
UTF-8 header, or a truncated multi-byte character) was read by pydicom with U+FFFD in place of the bad byte, and
every draft carried ``ID\\ufffd1``: the SR's Patient ID, PID-3 and the FHIR identifier named an identifier the source
never held, without a note or flag (found sending such a film through ``radtrace serve`` with dcmtk's storescu).
The accession (ORC-3, OBR-3, the SR) and the issuer went out altered the same way, and the damaged patient name with
nothing said. Now an identifier read with a replacement character follows the rule of one a DICOM ``LO`` cannot
hold (left out of all drafts, ``patient-id-omitted``, a header note that never repeats it), and a damaged name is
carried with a header note on it (``header-normalised``).

Source: the NIH ChestX-ray14 real film with raw bytes put in its header, read as the worker reads it; the SR checked
by dciodvfy, the ORU parsed by hl7apy STRICT.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement

from drafts_readback_support import one_image_drafts, read_back
from radtrace.model.study import study_image
from radtrace.reporting import codes

# pydicom warns and reads the bad bytes as U+FFFD, as in the service; the suite's warnings-as-errors would make the
# read fail instead (and the value vanish without a note), which is not what a running worker does
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:Failed to decode byte string:UserWarning")]

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
WHEN = datetime(2026, 12, 6, 0, 30, tzinfo=UTC)
REPLACEMENT = "\ufffd"


def _drafts(tmp_path: Path, **raw: tuple[str, bytes]) -> dict[str, Any]:
    """Drafts of the film declaring ISO_IR 192 with each ``keyword=(vr, bytes)`` written as those bytes."""
    ds = dcmread(FILM)
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, (vr, value) in raw.items():
        tag = ds.data_element(keyword).tag if keyword in ds else DataElement(keyword, vr, "").tag
        ds[tag] = DataElement(tag, vr, value)
    path = tmp_path / "film.dcm"
    ds.save_as(path, enforce_file_format=True)
    source = study_image(path.read_bytes()).dataset
    files = one_image_drafts(source, WHEN)
    assert files.companion is not None
    drafts = read_back(files, tmp_path)
    sr, texts, oru_texts = drafts.sr, drafts.sr_texts, drafts.oru_texts
    fields = {segment[0]: segment for segment in reversed(drafts.segments)}
    patient, report = drafts.fhir_patient, drafts.fhir_report
    companion = dcmread(io.BytesIO(files.companion))
    return {
        "sr_errors": drafts.sr_errors,
        "sr": sr,
        "companion": companion,
        "pid": fields["PID"],
        "orc": fields["ORC"],
        "obr": fields["OBR"],
        "fhir_patient": patient,
        "fhir_report": report,
        "sr_flags": texts.get(codes.READING_FLAGS.value, ""),
        "oru_flags": oru_texts.get(codes.READING_FLAGS.value, ""),
        "sr_notes": texts.get(codes.HEADER_NOTES.value, ""),
        "oru_notes": oru_texts.get(codes.HEADER_NOTES.value, ""),
        "hl7": drafts.hl7,
        "fhir": files.fhir.decode("utf-8"),
    }


def test_identifiers_with_bytes_the_declared_set_cannot_read_are_left_out_of_every_draft(tmp_path: Path) -> None:
    drafts = _drafts(
        tmp_path,
        PatientID=("LO", b"ID\xff1"),
        IssuerOfPatientID=("LO", b"ISS\xc3"),
        AccessionNumber=("SH", b"A\xe2\x80"),
        StudyID=("SH", b"S\xfe"),
    )
    assert drafts["sr_errors"] == []
    sr, companion = drafts["sr"], drafts["companion"]
    for document in (sr, companion):
        assert document.PatientID == ""
        assert document.AccessionNumber == ""
        assert document.get("IssuerOfPatientID", "") == ""
        assert "OtherPatientIDsSequence" not in document
    assert sr.StudyID == ""
    assert drafts["pid"][3] == '""'
    assert drafts["orc"][3:4] in ([], [""])
    assert drafts["obr"][3] == ""
    assert "identifier" not in drafts["fhir_patient"]
    assert not any("A\ufffd" in str(value) for value in drafts["fhir_report"].get("identifier", []))
    for where in ("sr", "hl7", "fhir"):  # no draft carries a replacement character anywhere
        carried = drafts[where].to_json() if where == "sr" else drafts[where]
        assert REPLACEMENT not in carried, where
        assert "\\ufffd" not in carried.lower(), where
    for flags in ("sr_flags", "oru_flags"):
        assert "patient-id-omitted" in drafts[flags], flags
        assert "header-normalised" in drafts[flags], flags
    assert "patient-id-omitted" in drafts["fhir_report"]["conclusion"]
    for notes in ("sr_notes", "oru_notes"):
        assert "(0010,0020) PatientID: " in drafts[notes], notes
        for keyword in ("(0010,0021) IssuerOfPatientID: ", "(0008,0050) AccessionNumber: ", "(0020,0010) StudyID: "):
            assert keyword in drafts[notes], (notes, keyword)
        assert "character set" in drafts[notes]


def test_a_name_with_bytes_the_declared_set_cannot_read_is_carried_and_said_to_be_damaged(tmp_path: Path) -> None:
    drafts = _drafts(tmp_path, PatientName=("PN", b"M\xfcller^Hans"), PatientID=("LO", b"MRN-7"))
    assert drafts["sr_errors"] == []
    assert str(drafts["sr"].PatientName) == f"M{REPLACEMENT}ller^Hans"  # what was read, not made up
    assert drafts["sr"].PatientID == "MRN-7"
    assert drafts["pid"][3] == "MRN-7"
    for flags in ("sr_flags", "oru_flags"):
        assert "header-normalised" in drafts[flags], flags
        assert "patient-id-omitted" not in drafts[flags], flags
    for notes in ("sr_notes", "oru_notes"):
        assert "(0010,0010) PatientName: " in drafts[notes], notes
        assert "character set" in drafts[notes], notes
