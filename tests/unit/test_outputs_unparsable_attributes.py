"""An attribute whose value no reader can convert is never gone from the drafts silently.

Before: a film in Explicit VR LE whose Patient ID (0010,0020) was written as ``US`` with 3 bytes (or ``FD``), which
the listener accepts with a recorded deviation, was read by the worker with that element deleted (a debug log line
only): the SR's Patient ID was empty, PID-3 ``""``, FHIR named no identifier, and no draft had a header note or the
``patient-id-omitted`` flag, so a reader could not tell an ID-less film from one whose ID was lost. The same held for
every other attribute a draft carries (name, birth date, accession, study date, description, view...). Now what was
left out as read is kept with the dataset (:func:`radtrace.model.study.unparsable_keywords`) through the worker's
header copy, each is a header note in the SR and the ORU (``header-normalised`` in FHIR), a Patient ID so lost is
``patient-id-omitted`` everywhere, and the preparation record of the image names them.

Source: the NIH ChestX-ray14 real film written in Explicit VR LE, each attribute's own bytes then re-encoded on
the wire with a VR whose length they cannot have (the first 3 bytes of the real value, or 1 of a 2-byte one, as
``US`` or ``FD``), read as the worker reads a spooled instance; the SR checked by dciodvfy, the ORU parsed by hl7apy
STRICT, FHIR parsed. CI runs every attribute at once; ``RADTRACE_FULL_ABLATION=1`` each alone as well (23 cases).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import ExplicitVRLittleEndian

from drafts_readback_support import one_image_drafts, read_back
from radtrace.model.study import StudyInput, prepare_study, spooled_image, study_image, unparsable_keywords
from radtrace.reporting import codes
from radtrace.worker.drafting import headers_only

pytestmark = pytest.mark.unit

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
WHEN = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
NOTE = "a value no reader can convert"
#: Every attribute of the source header that reaches a draft (patient, study, equipment, view), with a valid value
#: where the real film has none (its own values are kept).
CARRIED: dict[str, str] = {
    "PatientID": "1",
    "IssuerOfPatientID": "NIHCC",
    "PatientName": "Chest^Nih",
    "PatientBirthDate": "19600101",
    "PatientSex": "M",
    "PatientAge": "058Y",
    "StudyDate": "20170101",
    "StudyTime": "101500",
    "AccessionNumber": "ACC0001",
    "StudyID": "S1",
    "StudyDescription": "CHEST PA",
    "ReferringPhysicianName": "Ward^Jane",
    "TimezoneOffsetFromUTC": "+0000",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.1",
    "Manufacturer": "NIH",
    "InstitutionName": "NIH Clinical Center",
    "StationName": "CXR1",
    "SoftwareVersions": "1.0",
    "PatientOrientation": "L\\F",
    "ImagerPixelSpacing": "0.143\\0.143",
    "ViewPosition": "PA",
    "ImageLaterality": "U",
    "BodyPartExamined": "CHEST",
}


def _explicit_film() -> bytes:
    ds = dcmread(FILM)
    for keyword, value in CARRIED.items():
        if keyword not in ds:
            setattr(ds, keyword, value.split("\\") if "\\" in value else value)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


FILM_BYTES = _explicit_film()


def _unconvertible(data: bytes, keyword: str, vr: bytes) -> bytes:
    """``data`` with ``keyword``'s element re-encoded as ``vr`` holding the first 3 bytes of its own value (1 of a
    2-byte value)."""
    tag = tag_for_keyword(keyword)
    assert tag is not None
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + dictionary_VR(tag).encode()
    at = data.index(head)
    (length,) = struct.unpack("<H", data[at + 6 : at + 8])
    kept = 3 if length >= 3 else 1  # an odd length: no US or FD value has one
    return data[:at] + head[:4] + vr + struct.pack("<H", kept) + data[at + 8 : at + 8 + kept] + data[at + 8 + length :]


def _drafts(tmp_path: Path, data: bytes, *, spooled: bool = True) -> dict[str, Any]:
    """The drafts of the instance ``data`` read as the worker reads it (spooled header, the draft process's copy)
    or, ``spooled=False``, as the CLI does."""
    path = tmp_path / "film.dcm"
    path.write_bytes(data)
    source = headers_only(spooled_image(path, "0" * 64).dataset) if spooled else study_image(data).dataset
    files = one_image_drafts(source, WHEN)
    drafts = read_back(files, tmp_path)
    sr, texts, oru_texts = drafts.sr, drafts.sr_texts, drafts.oru_texts
    pid, patient, report = drafts.segment("PID"), drafts.fhir_patient, drafts.fhir_report
    return {
        "sr_errors": drafts.sr_errors,
        "sr": sr,
        "pid": pid,
        "fhir_patient": patient,
        "fhir_conclusion": report.get("conclusion", ""),
        "sr_flags": texts.get(codes.READING_FLAGS.value, ""),
        "oru_flags": oru_texts.get(codes.READING_FLAGS.value, ""),
        "sr_notes": texts.get(codes.HEADER_NOTES.value, ""),
        "oru_notes": oru_texts.get(codes.HEADER_NOTES.value, ""),
    }


def _note(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}: {NOTE}"


def test_the_untouched_film_has_no_such_note(tmp_path: Path) -> None:
    drafts = _drafts(tmp_path, FILM_BYTES)
    assert drafts["sr_errors"] == []
    assert drafts["sr"].PatientID == "1"
    assert drafts["pid"][3].split("^")[0] == "1"
    assert NOTE not in drafts["sr_notes"] + drafts["oru_notes"]


def test_every_attribute_no_reader_can_convert_is_noted_in_every_draft(tmp_path: Path) -> None:
    data = FILM_BYTES
    for keyword in CARRIED:
        data = _unconvertible(data, keyword, b"US")
    drafts = _drafts(tmp_path, data)
    assert drafts["sr_errors"] == []
    for keyword in CARRIED:
        for notes in ("sr_notes", "oru_notes"):
            assert _note(keyword) in drafts[notes], (notes, keyword)
    for flags in ("sr_flags", "oru_flags", "fhir_conclusion"):
        assert "header-normalised" in drafts[flags], flags
        assert "patient-id-omitted" in drafts[flags], flags


@pytest.mark.skipif(os.environ.get("RADTRACE_FULL_ABLATION") != "1", reason="set RADTRACE_FULL_ABLATION=1")
@pytest.mark.parametrize("keyword", list(CARRIED))
def test_each_attribute_no_reader_can_convert_alone_is_noted_in_every_draft(tmp_path: Path, keyword: str) -> None:
    drafts = _drafts(tmp_path, _unconvertible(FILM_BYTES, keyword, b"US"))
    assert drafts["sr_errors"] == []
    for notes in ("sr_notes", "oru_notes"):
        assert _note(keyword) in drafts[notes], notes
    for flags in ("sr_flags", "oru_flags"):
        assert "header-normalised" in drafts[flags], flags
    assert "header-normalised" in drafts["fhir_conclusion"]
    if keyword != "PatientID":  # only the one attribute is lost: the patient is still named
        assert drafts["sr"].PatientID == "1"
        assert drafts["pid"][3].split("^")[0] == "1"
        assert "patient-id-omitted" not in drafts["sr_flags"] + drafts["oru_flags"] + drafts["fhir_conclusion"]


@pytest.mark.parametrize(("vr", "spooled"), [(b"US", True), (b"FD", True), (b"US", False)])
def test_a_patient_id_no_reader_can_convert_is_flagged_omitted_everywhere(
    tmp_path: Path, vr: bytes, spooled: bool
) -> None:
    drafts = _drafts(tmp_path, _unconvertible(FILM_BYTES, "PatientID", vr), spooled=spooled)
    assert drafts["sr_errors"] == []
    assert drafts["sr"].PatientID == ""
    assert drafts["pid"][3] == '""'
    assert "identifier" not in drafts["fhir_patient"]
    for flags in ("sr_flags", "oru_flags", "fhir_conclusion"):
        assert "patient-id-omitted" in drafts[flags], flags
    for notes in ("sr_notes", "oru_notes"):
        assert "(0010,0020) PatientID: " in drafts[notes], notes
        assert "1" not in drafts[notes].split("PatientID: ")[1][:1]


def test_the_preparation_record_names_what_was_left_out(tmp_path: Path) -> None:
    data = _unconvertible(_unconvertible(FILM_BYTES, "PatientID", b"US"), "StudyDescription", b"FD")
    path = tmp_path / "film.dcm"
    path.write_bytes(data)
    image = spooled_image(path, hashlib.sha256(data).hexdigest())
    assert unparsable_keywords(image.dataset) == ("StudyDescription", "PatientID")
    prepared = prepare_study([image], min_pixels=64 * 64, max_pixels=256 * 256)
    assert isinstance(prepared, StudyInput)
    [header] = [step for step in prepared.sources[0].preparation if isinstance(step, dict) and step["step"] == "header"]
    assert header["unparsable"] == ["StudyDescription", "PatientID"]
