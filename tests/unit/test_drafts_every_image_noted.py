"""What was dropped from any image the model was shown is said in every draft, naming the image, not only the first
image's.

Before (977afda): the drafts read the header notes of the first image the model was shown only (``read_header`` of
that one image in the SR, the ORU and FHIR). A PA + lateral study whose lateral's Patient ID no reader could convert
went out with drafts that said nothing of it (no header note, no ``patient-id-omitted``): only the audit's
preparation record of the lateral named it; the same for a lateral whose Accession Number or Study Date was lost. Now
:func:`radtrace.reporting.draft_header.draft_header` reads each shown image, and every draft lists the other images'
notes (deduplicated) naming the image by position and SOP Instance UID. (In the worker a lateral whose Patient ID was
lost makes the study an identity conflict, skipped before any draft: asserted here too; the drafts' builders say it
all the same when handed such images.)

Source: the NIH ChestX-ray14 PA film and the canine lateral film (tests/data/real-cxr) made one study, written in
Explicit VR LE, the lateral's Patient ID re-encoded on the wire as ``US`` holding 3 of its bytes (as
test_outputs_unparsable_attributes does to the real film), both read as the worker reads spooled instances and
prepared by the real ``prepare_study`` (PA and lateral); the SR checked by dciodvfy, the ORU parsed by hl7apy STRICT.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from drafts_readback_support import read_back
from radtrace.config import ReportingSettings
from radtrace.model.reading import SourceImage
from radtrace.model.study import IdentityConflict, StudyInput, prepare_study, spooled_image, unparsable_keywords
from radtrace.reporting import codes
from radtrace.reporting.drafts import build_drafts
from radtrace.worker.drafting import headers_only
from reporting_support import reading

pytestmark = pytest.mark.unit

FILMS = Path(__file__).parents[1] / "data" / "real-cxr"
PA = FILMS / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
LATERAL = FILMS / "canine-dx-thorax-lateral-mono1-small.dcm"
WHEN = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
STUDY_UID = str(generate_uid(entropy_srcs=["radtrace-test-two-image-study"]))


def _film(path: Path, *, view: str) -> bytes:
    """The real film as one image of the two-image study (same patient and study), in Explicit VR LE."""
    ds = dcmread(path)
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = str(generate_uid(entropy_srcs=[STUDY_UID, view]))
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "NIH-1", "Chest^Nih", "ACC0001"
    ds.ViewPosition, ds.BodyPartExamined, ds.StudyDate = view, "CHEST", "20180101"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _unconvertible(data: bytes, tag: int, vr: bytes) -> bytes:
    """``data`` with the element ``tag`` (of VR ``vr``) re-encoded as ``US`` holding the first 3 bytes of its value
    (no US value has 3)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    at = data.index(head)
    (length,) = struct.unpack("<H", data[at + 6 : at + 8])
    return data[:at] + head[:4] + b"US" + struct.pack("<H", 3) + data[at + 8 : at + 11] + data[at + 8 + length :]


DAMAGES: dict[str, list[tuple[int, bytes]]] = {
    "none": [],
    "patient-id": [(0x00100020, b"LO")],
    "accession-and-date": [(0x00080050, b"SH"), (0x00080020, b"DA")],
}


def _as_shown(ds: Any) -> SourceImage:
    """The lateral as a shown image (what prepare_study records of it, had the identity check let it through)."""
    return SourceImage(
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        sha256="2" * 64,
        view="LL",
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        model_rows=64,
        model_columns=64,
        role="lateral",
    )


def _drafts(tmp_path: Path, damage: str) -> dict[str, Any]:
    images = []
    for name, data in (
        ("pa.dcm", _film(PA, view="PA")),
        ("lateral.dcm", _film(LATERAL, view="LL")),
    ):
        for tag, vr in DAMAGES[damage] if name == "lateral.dcm" else []:
            data = _unconvertible(data, tag, vr)
        path = tmp_path / name
        path.write_bytes(data)
        images.append(spooled_image(path, hashlib.sha256(data).hexdigest()))
    prepared = prepare_study(images, min_pixels=64 * 64, max_pixels=256 * 256, want_lateral=True)
    if damage == "patient-id":  # the worker never drafts it: the images no longer name one patient
        assert isinstance(prepared, IdentityConflict)
        prepared = prepare_study(images[:1], min_pixels=64 * 64, max_pixels=256 * 256)
        assert isinstance(prepared, StudyInput)
        prepared = replace(prepared, sources=(prepared.sources[0], _as_shown(images[1].dataset)))
    assert isinstance(prepared, StudyInput)
    assert [source.role for source in prepared.sources] == ["frontal", "lateral"]  # the model was shown both
    shown: tuple[SourceImage, ...] = prepared.sources
    sources = [headers_only(image.dataset) for image in images]  # what the worker hands the drafts
    files = build_drafts(
        reading(sources, images=shown), sources, settings=ReportingSettings(), revision=1, created_at=WHEN
    )
    drafts = read_back(files, tmp_path)
    sr, texts, oru_texts, report = drafts.sr, drafts.sr_texts, drafts.oru_texts, drafts.fhir_report
    return {
        "dciodvfy": drafts.sr_errors,
        "lateral": (str(images[1].dataset.SOPInstanceUID), unparsable_keywords(images[1].dataset), shown[1]),
        "sr": sr,
        "notes": {
            "sr": texts.get(codes.HEADER_NOTES.value, ""),
            "oru": oru_texts.get(codes.HEADER_NOTES.value, ""),
            "fhir": report["conclusion"],
        },
        "flags": {
            "sr": texts.get(codes.READING_FLAGS.value, ""),
            "oru": oru_texts.get(codes.READING_FLAGS.value, ""),
            "fhir": report["conclusion"],
        },
    }


def test_a_lateral_whose_accession_and_date_were_lost_is_noted_in_every_draft_naming_the_image(tmp_path: Path) -> None:
    drafts = _drafts(tmp_path, "accession-and-date")
    assert drafts["dciodvfy"] == []
    lateral_uid, unparsable, lateral = drafts["lateral"]
    assert set(unparsable) == {"AccessionNumber", "StudyDate"}
    # the audit's preparation record of the lateral names them (as before): the drafts now say it too
    [header_step] = [step for step in lateral.preparation if isinstance(step, dict) and step["step"] == "header"]
    assert set(header_step["unparsable"]) == {"AccessionNumber", "StudyDate"}
    assert (drafts["sr"].AccessionNumber, drafts["sr"].StudyDate) == ("ACC0001", "20180101")  # the PA's, whole
    image = f"shown image 2 (SOP Instance UID {lateral_uid}): "
    for where in ("sr", "oru", "fhir"):
        notes = drafts["notes"][where]
        assert image + "(0008,0050) AccessionNumber: a value no reader can convert" in notes, where
        assert image + "(0008,0020) StudyDate: a value no reader can convert" in notes, where
        assert notes.count(image) == 2, where  # each once, and nothing of the PA's repeated for it
        assert "header-normalised" in drafts["flags"][where], where
        assert "patient-id-omitted" not in drafts["flags"][where], where


def test_a_lateral_whose_patient_id_was_lost_is_noted_in_every_draft_naming_the_image(tmp_path: Path) -> None:
    drafts = _drafts(tmp_path, "patient-id")
    assert drafts["dciodvfy"] == []
    lateral_uid, unparsable, _ = drafts["lateral"]
    assert unparsable == ("PatientID",)
    assert drafts["sr"].PatientID == "NIH-1"  # the PA's, which the drafts copy, is whole
    image = f"shown image 2 (SOP Instance UID {lateral_uid}): (0010,0020) PatientID: "
    for where in ("sr", "oru", "fhir"):
        notes = drafts["notes"][where]
        assert image + "a value no reader can convert" in notes, where
        assert image + "holds what a DICOM LO cannot" in notes, where
        assert notes.count(image) == 2, where  # each problem once (deduplicated), never the PA's
        assert "NIH-1" not in notes, where
        assert "header-normalised" in drafts["flags"][where], where
        assert "patient-id-omitted" in drafts["flags"][where], where


def test_two_whole_images_give_no_header_note(tmp_path: Path) -> None:
    drafts = _drafts(tmp_path, "none")
    assert drafts["dciodvfy"] == []
    for where in ("sr", "oru", "fhir"):
        assert "shown image 2" not in drafts["notes"][where], where
        assert "patient-id-omitted" not in drafts["flags"][where], where
