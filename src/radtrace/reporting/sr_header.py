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

from radtrace.reporting.header import UNREADABLE, HeaderNote, SourceHeader, is_uid, read_header, values_of
from radtrace.reporting.text import DICOM_MAX_BYTES, DicomTextVR, cut_utf8, dicom_text, fits_dicom

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

#: The flag of a draft that left a value of the source's Patient ID out (:func:`draft_patient_ids`).
PATIENT_ID_OMITTED: Final = "patient-id-omitted"
#: The header note every draft carries when it did.
PATIENT_ID_LEFT_OUT: Final = HeaderNote(
    "PatientID",
    "holds what a DICOM LO cannot (a control character, or over 64 bytes), bytes not valid in the character set it "
    "was read in, or a value no reader can convert; left out of every draft (SR, HL7 PID-3, FHIR), never altered: the "
    "drafts name the study and accession only",
)

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


def checked_references(first_shown: Dataset, sources: Sequence[Dataset]) -> tuple[dict[str, Dataset], list[HeaderNote]]:
    """What the SR (and the GSPS) may take from each source image: a minimal checked copy per image
    (:func:`_reference`), each with the patient and study attributes of ``first_shown`` as checked values,
    and the notes on what was omitted or normalised (one per attribute and problem)."""
    header = read_header(first_shown)
    notes = list(header.notes)
    images = {str(ds.SOPInstanceUID): _reference(ds, notes) for ds in sources}
    for ref in images.values():
        _patient_and_study(ref, header, notes)
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


def _identifier(ref: Dataset, keyword: str, value: str, vr: DicomTextVR, notes: list[HeaderNote]) -> None:
    """An identifier is copied exactly or left empty (Type 2), never cut or altered."""
    if fits_dicom(value, vr):
        setattr(ref, keyword, value)
    else:
        setattr(ref, keyword, "")
        notes.append(HeaderNote(keyword, f"not a valid {vr} value; left empty in the SR (never shortened)"))


def draft_patient_ids(header: SourceHeader) -> tuple[tuple[str, ...], list[HeaderNote]]:
    """The values of the source's Patient ID that the drafts carry, and the note when any is left out: one rule for
    the SR, the ORU and FHIR, so they never disagree on the patient. A value is carried exactly when a DICOM LO can
    hold it unchanged (PS3.5 6.2: no control character, no backslash, at most 64 bytes), which also makes it a valid
    HL7 ST (CX.1: printable characters only, so no ``\\Xhh\\`` of a control) and a FHIR string. Any other value is
    left out of every draft, never altered: an ID with a character taken out or replaced can name another patient,
    and one written with its control characters is an invalid SR that a strict PACS refuses. A value with bytes its
    character set could not read (pydicom reads U+FFFD in their place) is left out the same way, and so is one no
    reader could convert at all (``header.patient_id_unreadable``: the drafts carry no Patient ID, and say so)."""
    carried = tuple(value for value in header.patient_ids if fits_dicom(value, "LO") and UNREADABLE not in value)
    left_out = len(carried) < len(header.patient_ids) or header.patient_id_unreadable
    return carried, [PATIENT_ID_LEFT_OUT] if left_out else []


def patient_id_flags(notes: Sequence[HeaderNote]) -> list[str]:
    """``patient-id-omitted`` when ``notes`` say a Patient ID was left out (the flags item of every draft)."""
    return [PATIENT_ID_OMITTED] if PATIENT_ID_LEFT_OUT in notes else []


def person_name(value: str, keyword: str, notes: list[HeaderNote]) -> str:
    """``value`` as a PN the SR can carry: characters PN allows, each group a family name at least, and the whole
    value at most 64 bytes. PS3.5 allows 64 characters per component group, but dciodvfy (and receivers that size
    a column for a name) measure the value as a whole: later groups that do not fit are left out (phonetic before
    ideographic; never the only group that names the person), and what is left is cut. Each change is noted."""
    safe = dicom_text(value, "PN")
    changed = safe.changed
    # A group of one component is the family name; the explicit caret says so (PS3.5 6.2.1.2) instead of
    # leaving readers to guess at the retired free-text form. Each group: a name may carry only an ideographic
    # or phonetic group ("=山田").
    groups = [group + "^" if group and "^" not in group else group for group in safe.text.split("=")]
    limit = DICOM_MAX_BYTES["PN"]
    while len(groups) > 1 and (_pn_bytes(groups) > limit or not groups[-1]) and any(groups[:-1]):
        changed |= bool(groups.pop())
    if _pn_bytes(groups) > limit:
        last = groups.pop()
        room = limit - _pn_bytes(groups) - (1 if groups else 0)
        cut = cut_utf8(last, room)
        if "^" not in cut:  # the cut took the family name's caret: keep it
            cut = cut_utf8(last, room - 1).rstrip("^") + "^"
        groups.append(cut)
        changed = True
    if changed:
        notes.append(HeaderNote(keyword, "characters or lengths PN does not allow; normalised"))
    return "=".join(groups)


def _pn_bytes(groups: Sequence[str]) -> int:
    return len("=".join(groups).encode("utf-8"))


def _patient_and_study(ref: Dataset, header: SourceHeader, notes: list[HeaderNote]) -> None:
    """The Patient and General Study attributes the SR copies, from the checked header."""
    ref.PatientName = person_name(header.patient_names[0], "PatientName", notes) if header.patient_names else ""
    ids, left_out = draft_patient_ids(header)
    notes += left_out
    if len(header.patient_ids) == 1:
        ref.PatientID = ids[0] if ids else ""
    else:
        ref.PatientID = ""
        if ids:  # each value of a multi-valued Patient ID, none of them chosen as *the* ID
            ref.OtherPatientIDsSequence = [_other_id(value) for value in ids]
    if header.issuer_of_patient_id:
        _identifier(ref, "IssuerOfPatientID", header.issuer_of_patient_id, "LO", notes)
    ref.PatientBirthDate = header.birth_date.strftime("%Y%m%d") if header.birth_date else ""
    ref.PatientSex = header.sex
    if header.age:
        ref.PatientAge = header.age
    ref.StudyDate = header.study_date.strftime("%Y%m%d") if header.study_date else ""
    ref.StudyTime = header.study_time.strftime("%H%M%S") if header.study_time else ""
    _identifier(ref, "AccessionNumber", header.accession_number, "SH", notes)
    _identifier(ref, "StudyID", header.study_id, "SH", notes)
    if header.study_description:
        ref.StudyDescription = dicom_text(header.study_description, "LO").text
    ref.ReferringPhysicianName = person_name(header.referring_physician, "ReferringPhysicianName", notes)


def _other_id(value: str) -> Dataset:
    item = Dataset()
    item.PatientID = value
    item.TypeOfPatientID = "TEXT"
    return item
