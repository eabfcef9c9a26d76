"""One rule for every header value that reaches a draft, and every shown image's notes: what the SR, the ORU and the
FHIR Bundle say about the patient and the study, decided once.

:func:`draft_header` is the one function the three builders call (with the same images, so they carry the same
values and the same notes). Its rule, per kind of value:

* **identifiers** (Patient ID, Issuer of Patient ID, Accession Number, Study ID) are carried exactly or left out,
  never altered: an ID with a character replaced or cut can name another patient or order. A value with a character
  a DICOM ``LO`` / ``SH`` cannot hold (PS3.5 6.2: a control character, a backslash), bytes not readable in the
  declared character set, or only whitespace (which FHIR cannot hold) is left out of every draft with a header note
  that never repeats it (``patient-id-omitted`` for a Patient ID). Such a value is also a valid HL7 ``ST`` (the
  delimiters ``|^~&`` are escaped) and a FHIR ``string``. Lengths: a Patient ID over 64 bytes is left out of every
  draft (no draft names the patient by an ID the SR cannot carry); an Accession Number over 16 bytes (a DICOM ``SH``)
  is left empty in the SR but carried whole by the ORU and FHIR, where the RIS matches the order by it, and every
  draft's notes say so; an issuer HL7's CX.4 (20 characters) cannot hold is left out of the ORU, which says so.
* **names** (Patient Name, Referring Physician's Name) and **texts** (Study Description) are carried with what a
  DICOM ``PN`` / ``LO`` cannot hold replaced visibly (U+FFFD for a C0 or C1 control, DEL, a lone surrogate or the
  value delimiter ``\\``) and cut to the VR's length, with a header note (``header-normalised``). The ORU and FHIR
  carry the name's components from that same value, so a C1 control is U+FFFD in all three, never ``\\XC281\\`` in
  PID-5 and the raw character in FHIR.

Notes: the first shown image's header is the one the drafts copy; each other image the model was shown is read too,
and what was dropped or normalised there (a lost Patient ID, an unreadable attribute) is a note naming the image
(:class:`~radtrace.reporting.header.HeaderNote` ``image``), deduplicated, in every draft.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from pydicom.dataset import Dataset

from radtrace.reporting.header import UNREADABLE, HeaderNote, SourceHeader, read_header
from radtrace.reporting.text import DICOM_MAX_BYTES, DicomTextVR, cut_utf8, dicom_text, fits_dicom

__all__ = [
    "HEADER_NORMALISED",
    "PATIENT_ID_LEFT_OUT",
    "PATIENT_ID_OMITTED",
    "DraftHeader",
    "draft_flags",
    "draft_header",
    "draft_identifier",
    "draft_patient_ids",
    "patient_id_flags",
    "person_name",
]

HEADER_NORMALISED: Final = "header-normalised"
#: The flag of a draft that left a value of the source's Patient ID out (:func:`draft_patient_ids`).
PATIENT_ID_OMITTED: Final = "patient-id-omitted"
#: The header note every draft carries when it did.
PATIENT_ID_LEFT_OUT: Final = HeaderNote(
    "PatientID",
    "holds what a DICOM LO cannot (a control character, or over 64 bytes), bytes not valid in the character set it "
    "was read in, or a value no reader can convert; left out of every draft (SR, HL7 PID-3, FHIR), never altered: the "
    "drafts name the study and accession only",
)


def _identifier_left_out(keyword: str, vr: DicomTextVR) -> HeaderNote:
    return HeaderNote(
        keyword,
        f"holds what a DICOM {vr} cannot (a control character, a backslash, over {DICOM_MAX_BYTES[vr]} bytes) or only "
        "whitespace; left out of every draft (SR, HL7, FHIR), never altered",
    )


@dataclass(frozen=True)
class DraftHeader:
    """The patient and study values every draft carries (the first shown image's, by :func:`draft_header`'s rule),
    and the notes every draft lists (that image's, then each other shown image's, naming it)."""

    source: SourceHeader
    patient_ids: tuple[str, ...]
    issuer_of_patient_id: str
    #: What the ORU and FHIR carry; :attr:`dicom_accession_number` is the SR's (a DICOM SH: at most 16 bytes).
    accession_number: str
    study_id: str
    patient_names: tuple[str, ...]
    referring_physician: str
    study_description: str
    notes: tuple[HeaderNote, ...]

    @property
    def dicom_accession_number(self) -> str:
        """The accession as the DICOM drafts carry it: exactly, or empty where an SH cannot hold it (noted)."""
        value = self.accession_number
        return value if fits_dicom(value, "SH") else ""


def draft_identifier(value: str, vr: DicomTextVR, *, lengths: bool = True) -> bool:
    """Whether the identifier ``value`` is carried (exactly) by the drafts: see the module's rule (``lengths``: the
    VR's maximum length counts too)."""
    if not value or _NOT_IDENTIFIER.search(value) or UNREADABLE in value or not value.strip():
        return False
    return fits_dicom(value, vr) if lengths else value == value.strip(" ")


_NOT_IDENTIFIER: Final = re.compile("[\x00-\x1f\x7f-\x9f\\\ud800-\udfff]")
_ACCESSION_TOO_LONG: Final = HeaderNote(
    "AccessionNumber",
    "not a valid SH value (over 16 bytes); left empty in the SR (never shortened), carried whole in the HL7 ORC-3 "
    "and OBR-3 and the FHIR report",
)


def draft_patient_ids(header: SourceHeader) -> tuple[tuple[str, ...], list[HeaderNote]]:
    """The values of the source's Patient ID that the drafts carry, and the note when any is left out: one rule for
    the SR, the ORU and FHIR, so they never disagree on the patient. A value is carried exactly when
    :func:`draft_identifier` says so (a DICOM LO holds it unchanged, which also makes it a valid HL7 ST and a FHIR
    string). Any other value is left out of every draft, never altered: an ID with a character taken out or replaced
    can name another patient, and one written with its control characters is an invalid SR that a strict PACS
    refuses. A value with bytes its character set could not read (pydicom reads U+FFFD in their place) is left out the
    same way, and so is one no reader could convert at all (``header.patient_id_unreadable``)."""
    carried = tuple(value for value in header.patient_ids if draft_identifier(value, "LO"))
    left_out = len(carried) < len(header.patient_ids) or header.patient_id_unreadable
    return carried, [PATIENT_ID_LEFT_OUT] if left_out else []


def patient_id_flags(notes: Sequence[HeaderNote]) -> list[str]:
    """``patient-id-omitted`` when ``notes`` say a Patient ID was left out, of any shown image (the flags item of
    every draft)."""
    return [PATIENT_ID_OMITTED] if any(replace(note, image="") == PATIENT_ID_LEFT_OUT for note in notes) else []


def draft_flags(notes: Sequence[HeaderNote]) -> list[str]:
    """The flags every draft lists for its header ``notes``: ``header-normalised``, and ``patient-id-omitted``."""
    return [HEADER_NORMALISED, *patient_id_flags(notes)] if notes else []


def person_name(value: str, keyword: str, notes: list[HeaderNote]) -> str:
    """``value`` as the PN every draft carries: characters PN allows (U+FFFD for the others), each group a family name
    at least, each component without surrounding whitespace, and the whole value at most 64 bytes. PS3.5 allows 64
    characters per component group, but dciodvfy (and receivers that size a column for a name) measure the value as a
    whole: later groups that do not fit are left out (phonetic before ideographic; never the only group that names the
    person), and what is left is cut. Each change is noted."""
    safe = dicom_text(value, "PN")
    changed = safe.changed
    # Whitespace around a component is no part of a name, and a FHIR string or HL7 reader would drop it (a family
    # name of only U+3000 would be a name in the SR and none in FHIR): stripped in every draft alike.
    stripped = "=".join("^".join(part.strip() for part in group.split("^")) for group in safe.text.split("="))
    changed |= stripped != "=".join("^".join(part.strip(" ") for part in g.split("^")) for g in safe.text.split("="))
    # A group of one component is the family name; the explicit caret says so (PS3.5 6.2.1.2) instead of
    # leaving readers to guess at the retired free-text form. Each group: a name may carry only an ideographic
    # or phonetic group ("=山田").
    groups = [group + "^" if group and "^" not in group else group for group in stripped.split("=")]
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


def _identifier(header: SourceHeader, keyword: str, vr: DicomTextVR, notes: list[HeaderNote]) -> str:
    value: str = getattr(header, _FIELDS[keyword])
    if not value or draft_identifier(value, vr):
        return value
    if keyword == "AccessionNumber" and draft_identifier(value, vr, lengths=False):
        notes.append(_ACCESSION_TOO_LONG)
        return value
    notes.append(_identifier_left_out(keyword, vr))
    return ""


_FIELDS: Final = {
    "IssuerOfPatientID": "issuer_of_patient_id",
    "AccessionNumber": "accession_number",
    "StudyID": "study_id",
}


def _image_notes(ds: Dataset) -> list[HeaderNote]:
    """What was dropped or normalised in one image's header as read (its Patient ID and identifiers by the drafts'
    rule too), for an image the model was shown whose header the drafts do not copy."""
    header = read_header(ds)
    notes = [*header.notes, *draft_patient_ids(header)[1]]
    for keyword, vr in (("IssuerOfPatientID", "LO"), ("AccessionNumber", "SH")):
        _identifier(header, keyword, vr, notes)  # type: ignore[arg-type]
    return notes


def draft_header(first: Dataset, others: Sequence[Dataset] = ()) -> DraftHeader:
    """The values every draft carries about the patient and study of ``first`` (the first image the model was shown)
    and the notes every draft lists: ``first``'s, then those of each of ``others`` (the other images the model was
    shown), each naming its image by position and SOP Instance UID, deduplicated. Never raises."""
    header = read_header(first)
    notes = list(header.notes)
    ids, left_out = draft_patient_ids(header)
    notes += left_out
    names = tuple(person_name(name, "PatientName", notes) for name in header.patient_names)
    referring = person_name(header.referring_physician, "ReferringPhysicianName", notes)
    description = dicom_text(header.study_description, "LO")
    if description.changed:
        notes.append(HeaderNote("StudyDescription", "characters or lengths LO does not allow; normalised"))
    draft = DraftHeader(
        source=header,
        patient_ids=ids,
        issuer_of_patient_id=_identifier(header, "IssuerOfPatientID", "LO", notes),
        accession_number=_identifier(header, "AccessionNumber", "SH", notes),
        study_id=_identifier(header, "StudyID", "SH", notes),
        patient_names=names,
        referring_physician=referring,
        study_description=description.text,
        notes=(),
    )
    for position, ds in enumerate(others, 2):
        image = f"shown image {position} (SOP Instance UID {ds.get('SOPInstanceUID', 'unknown')})"
        notes += [replace(note, image=image) for note in _image_notes(ds)]
    return replace(draft, notes=tuple(dict.fromkeys(notes)))
