"""The source image's header as plain, checked values: what every output copies about the patient and study.

Real headers hold what the IODs make optional, leave out, or get wrong: a Patient ID with a backslash
(two values), a Study Date written ``2025-03-14`` or ``1995.07.20``, no Series Instance UID, no Study ID,
no birth date, over-long values. :func:`read_header` reads each attribute once, never raises, and keeps
what is usable: dates and times in the old or ISO forms become dates and times, anything else unusable
is dropped, and each such decision becomes a :class:`HeaderNote` (tag, keyword, what was done — never
the value, so notes may be logged). The SR, the HL7 message and the FHIR Bundle are all rendered from
one :class:`SourceHeader`, each through its own text-safety function (:mod:`radtrace.reporting.text`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from datetime import date, time
from typing import Any, Final

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from radtrace.dicom_age import DERIVED, age_at_study
from radtrace.model.study import unparsable_keywords

__all__ = ["UNREADABLE", "HeaderNote", "SourceHeader", "is_uid", "name_group", "read_header", "values_of"]

_UID: Final = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_DATE_FORMS: Final = (
    re.compile(r"(\d{4})(\d{2})(\d{2})"),  # DA
    re.compile(r"(\d{4})[-.](\d{2})[-.](\d{2})"),  # ISO 8601, and ACR-NEMA's 1995.07.20
)
_TIME: Final = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?")
_SEX: Final = frozenset({"M", "F", "O"})
#: What pydicom reads in place of bytes the character set cannot decode (it warns, and carries on with them).
UNREADABLE: Final = "\ufffd"
#: Identifiers other than Patient ID (:func:`radtrace.reporting.sr_header.draft_patient_ids` rules on that one).
_IDENTIFIER_UNREADABLE: Final = (
    "bytes not valid in the character set it was read in; left out of every draft (SR, HL7, FHIR), never altered"
)
_TEXT_UNREADABLE: Final = "bytes not valid in the character set it was read in; carried with U+FFFD in their place"
#: An attribute left out as the image was read (:func:`radtrace.model.study.unparsable_keywords`).
_UNPARSABLE: Final = "a value no reader can convert (a wrong VR or length); left out of every draft"


@dataclass(frozen=True)
class HeaderNote:
    """One attribute of the source header that the outputs omit or normalise, and why (no values)."""

    keyword: str
    problem: str
    #: Which image's header, where the drafts do not copy it (another image the model was shown); '' for the one
    #: they copy (:func:`radtrace.reporting.draft_header.draft_header`).
    image: str = ""

    def __str__(self) -> str:
        tag = tag_for_keyword(self.keyword)
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) " if tag is not None else ""
        which = f"{self.image}: " if self.image else ""
        return f"{which}{where}{self.keyword}: {self.problem}"


@dataclass(frozen=True)
class SourceHeader:
    """Patient and study attributes of the first image the model was shown, as usable values."""

    study_instance_uid: str
    patient_ids: tuple[str, ...] = ()
    issuer_of_patient_id: str = ""
    patient_names: tuple[str, ...] = ()
    birth_date: date | None = None
    sex: str = ""
    #: The age at the study as an AS (:func:`radtrace.dicom_age.age_at_study`), '' when none.
    age: str = ""
    #: ``age`` is no header value but the age from Patient's Birth Date to Study Date (a calculated age).
    age_derived: bool = False
    study_date: date | None = None
    study_time: time | None = None
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician: str = ""
    timezone_offset: str = ""
    notes: tuple[HeaderNote, ...] = field(default=())
    #: The source has a Patient ID that could not be read at all (its value unconvertible): the drafts carry none,
    #: and say so (:func:`radtrace.reporting.sr_header.draft_patient_ids`).
    patient_id_unreadable: bool = False


_REPRESENTATIONS: Final = ("A", "I", "P")  # HL7 table 4000: alphabetic, ideographic, phonetic


def name_group(value: str) -> tuple[list[str], str]:
    """The components of the first component group of the PN ``value`` that holds a name (alphabetic, else
    ideographic, else phonetic: PS3.5 6.2.1.2), padded to five, and which group it is (HL7 table 4000 ``A``, ``I``,
    ``P``); ``([""] * 5, "A")`` when no group holds one. Where the alphabetic group is empty, the name is only in
    a later group (``=山田^太郎=やまだ^たろう``), and reading the first group alone would lose it."""
    for group, representation in zip(value.split("=")[:3], _REPRESENTATIONS, strict=False):
        components = (group.split("^") + [""] * 5)[:5]
        if any(component.strip() for component in components):
            return components, representation
    return [""] * 5, "A"


def is_uid(value: str) -> bool:
    """A valid UID (PS3.5 9.1): digits and dots, no leading zeros in a component, at most 64 characters."""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def values_of(ds: Dataset, keyword: str) -> tuple[str, ...] | None:
    """The attribute's values as text (empty: absent or empty); None when pydicom cannot read it."""
    try:
        with warnings.catch_warnings():  # pydicom warns about invalid values it still returns: judged here
            warnings.simplefilter("ignore")
            value: Any = ds.get(keyword)
    except Exception:  # a raw element pydicom cannot convert: unreadable, whatever the reason
        return None
    if value is None or value == "":
        return ()
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    texts = tuple(str(item).strip(" \x00") for item in items)
    return tuple(text for text in texts if text)


class _Reader:
    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.notes: list[HeaderNote] = []
        self.age_derived = False  # set by age()

    def note(self, keyword: str, problem: str) -> None:
        self.notes.append(HeaderNote(keyword, problem))

    def values(self, keyword: str) -> tuple[str, ...]:
        values = values_of(self.ds, keyword)
        if values is None:
            self.note(keyword, "unreadable; omitted")
            return ()
        return values

    def single(self, keyword: str) -> str:
        values = self.values(keyword)
        if len(values) > 1:
            self.note(keyword, f"{len(values)} values where one is allowed; the first kept")
        return values[0] if values else ""

    def identifier(self, keyword: str) -> str:
        """An identifier read exactly, or '' (noted) where some of its bytes could not be read: one with U+FFFD in
        their place would name an identifier the source never held."""
        text = self.single(keyword)
        if UNREADABLE in text:
            self.note(keyword, _IDENTIFIER_UNREADABLE)
            return ""
        return text

    def texts(self, keyword: str, values: tuple[str, ...]) -> tuple[str, ...]:
        """Names and texts are carried as read; where some bytes could not be read, the drafts say so."""
        if any(UNREADABLE in value for value in values):
            self.note(keyword, _TEXT_UNREADABLE)
        return values

    def date(self, keyword: str) -> date | None:
        text = self.single(keyword)
        if not text:
            return None
        for number, form in enumerate(_DATE_FORMS):
            match = form.fullmatch(text)
            if match:
                try:
                    parsed = date(*(int(part) for part in match.groups()))
                except ValueError:
                    break
                if number:
                    self.note(keyword, "not in DICOM DA form; read as a date")
                return parsed
        self.note(keyword, "not a valid date; omitted")
        return None

    def time(self, keyword: str) -> time | None:
        text = self.single(keyword)
        if not text:
            return None
        match = _TIME.fullmatch(text)
        if match:
            hour, minute, second, fraction = match.groups()
            try:
                parsed = time(
                    int(hour), int(minute or 0), min(int(second or 0), 59), int((fraction or "0").ljust(6, "0"))
                )
            except ValueError:
                parsed = None
            if parsed is not None:
                if ":" in text:
                    self.note(keyword, "not in DICOM TM form; read as a time")
                return parsed
        self.note(keyword, "not a valid time; omitted")
        return None

    def age(self) -> str:
        """The patient's age at the study as an AS, by the console's rule (:func:`radtrace.dicom_age.age_at_study`):
        Patient's Age read as the console reads it (bare digits are years, written "058Y" with a note saying so; no
        age, or several values, noted), else the age from the header's Patient's Birth Date to its Study Date (as DA
        values, as the console reads them), with a note saying it was derived; else none."""
        unreadable = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value: Any = self.ds.get("PatientAge")
        except Exception:  # a raw element pydicom cannot convert: unreadable, whatever the reason
            value, unreadable = None, True
        reading = age_at_study(value, self._da("PatientBirthDate"), self._da("StudyDate"))
        self.age_derived = reading.derived
        if unreadable:
            self.note("PatientAge", f"unreadable; {DERIVED}" if reading.derived else "unreadable; omitted")
        elif reading.problem:
            self.note("PatientAge", reading.problem)
        return reading.age or ""

    def _da(self, keyword: str) -> str | None:
        """The attribute's one value as written (no note: :meth:`date` notes what is wrong with it), or None."""
        values = values_of(self.ds, keyword)
        return values[0] if values is not None and len(values) == 1 else None

    def coded(self, keyword: str, allowed: frozenset[str] | re.Pattern[str]) -> str:
        text = self.single(keyword)
        valid = text in allowed if isinstance(allowed, frozenset) else allowed.fullmatch(text) is not None
        if text and not valid:
            self.note(keyword, "not a defined value; omitted")
            return ""
        return text


def read_header(ds: Dataset) -> SourceHeader:
    """Read the patient and study attributes of ``ds`` as checked values, noting what was omitted or read
    leniently. Never raises (the Study Instance UID is a key attribute the listener has checked)."""
    reader = _Reader(ds)
    unparsable = unparsable_keywords(ds)
    for keyword in unparsable:  # left out as read: every draft says so, whether or not it would have carried it
        if tag_for_keyword(keyword) is not None:
            reader.note(keyword, _UNPARSABLE)
    patient_id_unreadable = "PatientID" in unparsable or values_of(ds, "PatientID") is None
    patient_ids = reader.values("PatientID")
    if len(patient_ids) > 1:
        reader.note("PatientID", f"{len(patient_ids)} values where one is allowed; all kept as separate identifiers")
    names = reader.texts("PatientName", reader.values("PatientName"))
    if len(names) > 1:
        reader.note("PatientName", f"{len(names)} values where one is allowed")
    header = SourceHeader(
        study_instance_uid=str(ds.StudyInstanceUID),
        patient_ids=patient_ids,
        issuer_of_patient_id=reader.identifier("IssuerOfPatientID"),
        patient_names=names,
        birth_date=reader.date("PatientBirthDate"),
        sex=reader.coded("PatientSex", _SEX),
        age=reader.age(),
        age_derived=reader.age_derived,
        study_date=reader.date("StudyDate"),
        study_time=reader.time("StudyTime"),
        accession_number=reader.identifier("AccessionNumber"),
        study_id=reader.identifier("StudyID"),
        study_description=reader.texts("StudyDescription", (reader.single("StudyDescription"),))[0],
        referring_physician=reader.texts("ReferringPhysicianName", (reader.single("ReferringPhysicianName"),))[0],
        timezone_offset=reader.coded("TimezoneOffsetFromUTC", re.compile(r"[+-]\d{4}")),
        patient_id_unreadable=patient_id_unreadable,
    )
    return replace(header, notes=tuple(reader.notes))
