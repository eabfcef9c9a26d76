"""What a draft takes from its source images' headers, checked: the image references, the patient and study
attributes, person names and LO values.

highdicom (SR, GSPS) and the companion document are handed these checked copies, never a source image itself, so
a missing Type 3 attribute or a malformed optional one cannot fail a draft; identifiers are copied exactly or left
empty, names and texts are made valid, and every change is a :class:`~radtrace.reporting.header.HeaderNote`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radtrace.reporting.draft_header import (
    PATIENT_ID_LEFT_OUT,
    PATIENT_ID_OMITTED,
    DraftHeader,
    draft_header,
    draft_patient_ids,
    patient_id_flags,
    person_name,
)
from radtrace.reporting.header import HeaderNote, is_uid, values_of
from radtrace.reporting.text import DicomTextVR, dicom_text

__all__ = [
    "PATIENT_ID_LEFT_OUT",
    "PATIENT_ID_OMITTED",
    "STUDY_KEYWORDS",
    "checked_references",
    "draft_patient_ids",
    "lo_value",
    "patient_id_flags",
    "person_name",
    "with_checked_header",
]

_PROJECTION: Final = frozenset({"CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA"})  # highdicom's TID 1603 set
_ORIENTATION: Final = re.compile(r"[AFHLPR]{1,16}")
_PIXEL_DATA: Final = 0x7FE00010
# General Study and Patient Study attributes outside group 0010 (which is the Patient module's).
STUDY_KEYWORDS: Final = frozenset(
    {
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "IssuerOfAccessionNumberSequence",
        "ReferringPhysicianName",
        "ReferringPhysicianIdentificationSequence",
        "StudyDescription",
        "StudyID",
        "PhysiciansOfRecord",
        "NameOfPhysiciansReadingStudy",
        "ReferencedStudySequence",
        "ProcedureCodeSequence",
        "RequestingService",
        "ConsultingPhysicianName",
    }
)
_EQUIPMENT: Final[dict[str, DicomTextVR]] = {
    "Manufacturer": "LO",
    "ManufacturerModelName": "LO",
    "DeviceSerialNumber": "LO",
    "InstitutionName": "LO",
    "InstitutionalDepartmentName": "LO",
    "StationName": "SH",
}


def lo_value(value: str) -> str | None:
    """A configured or model-given name (institution, model) as an LO value: characters LO allows, at most 64
    bytes, no value delimiter (a backslash would make two values); None when nothing is left."""
    return dicom_text(value, "LO").text or None


def _first(ds: Dataset, keyword: str) -> str:
    values = values_of(ds, keyword)
    return values[0] if values else ""


def _reference(ds: Dataset, notes: list[HeaderNote]) -> Dataset:
    """What the SR needs of one source image, checked: highdicom is handed this, never the image itself,
    so a missing Type 3 attribute or a malformed optional one cannot fail the draft."""
    ref = Dataset()
    ref.SOPClassUID = str(ds.SOPClassUID)
    ref.SOPInstanceUID = str(ds.SOPInstanceUID)
    ref.StudyInstanceUID = str(ds.StudyInstanceUID)
    series = values_of(ds, "SeriesInstanceUID") or ()
    if len(series) == 1 and is_uid(series[0]):
        ref.SeriesInstanceUID = series[0]
    else:
        # The evidence needs a series (Type 1); the image is listed under one derived from its own UIDs.
        ref.SeriesInstanceUID = str(
            generate_uid(entropy_srcs=["radtrace-unknown-series", ref.StudyInstanceUID, ref.SOPInstanceUID])
        )
        notes.append(HeaderNote("SeriesInstanceUID", "missing or not a valid UID; evidence lists a derived one"))
    ref.Rows, ref.Columns = int(ds.Rows), int(ds.Columns)
    frame = values_of(ds, "FrameOfReferenceUID") or ()
    if len(frame) == 1 and is_uid(frame[0]):
        ref.FrameOfReferenceUID = frame[0]
    elif frame:
        notes.append(HeaderNote("FrameOfReferenceUID", "not a valid UID; omitted from the image library"))
    # TID 1603 projection descriptors only when the image has both (each is Type 3 in the CR IOD).
    # highdicom decides on them by Modality, which it reads nowhere else that reaches the SR (the image
    # library codes the modality from the SOP Class): without both, it is handed "OT" to skip them.
    orientation = values_of(ds, "PatientOrientation") or ()
    spacing = values_of(ds, "ImagerPixelSpacing") or ()
    modality = _first(ds, "Modality")
    described = (
        len(orientation) == 2
        and all(_ORIENTATION.fullmatch(value) for value in orientation)
        and len(spacing) == 2
        and all(_positive_decimal(value) for value in spacing)
    )
    if modality in _PROJECTION and described:
        ref.PatientOrientation = list(orientation)
        ref.ImagerPixelSpacing = list(spacing)
    ref.Modality = modality if modality in _PROJECTION and described else "OT"
    for keyword, vr in _EQUIPMENT.items():
        text = dicom_text(_first(ds, keyword), vr).text
        if text:
            setattr(ref, keyword, text)
    versions = [dicom_text(value, "LO").text for value in values_of(ds, "SoftwareVersions") or ()]
    if any(versions):
        ref.SoftwareVersions = [value for value in versions if value]
    return ref


def checked_references(
    first_shown: Dataset, sources: Sequence[Dataset], others: Sequence[Dataset] = ()
) -> tuple[dict[str, Dataset], list[HeaderNote]]:
    """What the SR (and the GSPS) may take from each source image: a minimal checked copy per image
    (:func:`_reference`), each with the patient and study attributes of ``first_shown`` as every draft carries them
    (:func:`~radtrace.reporting.draft_header.draft_header`, with ``others``: the other images the model was shown),
    and the notes on what was omitted or normalised (one per attribute, problem and image)."""
    draft = draft_header(first_shown, others)
    notes = list(draft.notes)
    images = {str(ds.SOPInstanceUID): _reference(ds, notes) for ds in sources}
    for ref in images.values():
        _patient_and_study(ref, draft)
    return images, list(dict.fromkeys(notes))


def with_checked_header(ds: Dataset, reference: Dataset) -> Dataset:
    """``ds`` (pixel data left out) with its Patient and General Study attributes and Series Instance UID
    replaced by those of its checked ``reference``: for builders that need the image's pixel description
    and LUTs as well (GSPS). Raw elements are carried over unread."""
    replaced = {
        element.tag for element in reference if element.tag.group == 0x0010 or element.keyword in STUDY_KEYWORDS
    }
    copy = Dataset()
    for element in ds.elements():
        keyword = keyword_for_tag(element.tag)
        if element.tag.group == 0x0010 or keyword in STUDY_KEYWORDS or element.tag == _PIXEL_DATA:
            continue
        copy[element.tag] = element
    for tag in replaced | {reference["SeriesInstanceUID"].tag}:
        copy[tag] = reference[tag]
    return copy


def _positive_decimal(value: str) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    return 0 < number < 1e6 and len(value) <= 16


def _patient_and_study(ref: Dataset, draft: DraftHeader) -> None:
    """The Patient and General Study attributes the SR copies: the values every draft carries."""
    header = draft.source
    ref.PatientName = draft.patient_names[0] if draft.patient_names else ""
    ids = draft.patient_ids
    if len(header.patient_ids) == 1:
        ref.PatientID = ids[0] if ids else ""
    else:
        ref.PatientID = ""
        if ids:  # each value of a multi-valued Patient ID, none of them chosen as *the* ID
            ref.OtherPatientIDsSequence = [_other_id(value) for value in ids]
    if draft.issuer_of_patient_id:
        ref.IssuerOfPatientID = draft.issuer_of_patient_id
    ref.PatientBirthDate = header.birth_date.strftime("%Y%m%d") if header.birth_date else ""
    ref.PatientSex = header.sex
    if header.age:
        ref.PatientAge = header.age
    ref.StudyDate = header.study_date.strftime("%Y%m%d") if header.study_date else ""
    ref.StudyTime = header.study_time.strftime("%H%M%S") if header.study_time else ""
    ref.AccessionNumber = draft.dicom_accession_number
    ref.StudyID = draft.study_id
    if draft.study_description:
        ref.StudyDescription = draft.study_description
    ref.ReferringPhysicianName = draft.referring_physician


def _other_id(value: str) -> Dataset:
    item = Dataset()
    item.PatientID = value
    item.TypeOfPatientID = "TEXT"
    return item
