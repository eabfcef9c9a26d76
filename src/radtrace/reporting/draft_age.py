"""The patient's age at the study as the ORU and the FHIR Bundle carry it, beside the SR's Patient's Age (0010,1010).

HL7 v2.5.1 PID has no age field and a FHIR R4 Patient no age element: where a header gives an age but no birth date
(the NIH ChestX-ray14 copies), PID-7 and ``Patient.birthDate`` are empty and the age was in the SR only. Interfaces
carry it as an observation coded in LOINC (HL7's LOINCObservationActContextAgeType value set), its value a number of
UCUM units of time (FHIR's age-units value set, the FHIR ``Age`` datatype):

* the header's Patient's Age: ``30525-0`` "Age" (no implied method: the modality or RIS may have calculated it);
* an age radtrace calculated from Patient's Birth Date to Study Date: ``29553-5`` "Age calculated".

The value is the one every draft carries (:attr:`~radtrace.reporting.header.SourceHeader.age`, decided by
:func:`radtrace.dicom_age.age_at_study`, the review console's rule), so the SR, the ORU and FHIR never give two ages;
the unit is the AS's (``D``, ``W``, ``M``, ``Y``: ``d``, ``wk``, ``mo``, ``a``). An age that is not a written AS
(:func:`radtrace.dicom_age.age_quantity`) gives no observation: what a header held that is no age never reaches a
message.

The assessment ORU (the radiologist's decisions, :func:`radtrace.reporting.hl7.build_observation_oru`) is about the AI
SR's patient, read from the SR itself: the SR wrote the age as its Patient's Age, so read back it looks reported. Where
radtrace derived it, the SR's header notes (``RT-HDR``) say so in the first shown image's line (no image prefix):
:func:`draft_age` with ``recorded_in`` the SR gives that age as calculated, as the draft ORU and FHIR did.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataset import Dataset

from radtrace.dicom_age import DERIVED, AgeQuantity, age_quantity
from radtrace.reporting.codes import HEADER_NOTES, Code
from radtrace.reporting.header import HeaderNote, SourceHeader

__all__ = ["AGE", "AGE_CALCULATED", "UCUM_SYSTEM", "DraftAge", "age_noted_derived", "draft_age"]

_LOINC: Final = "LOINC (HL7 value set LOINCObservationActContextAgeType)"
AGE: Final = Code("30525-0", "LN", "Age", _LOINC)
AGE_CALCULATED: Final = Code("29553-5", "LN", "Age calculated", _LOINC)
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
#: How a header note about the first shown image's Patient's Age begins ("(0010,1010) PatientAge: "); other images'
#: notes begin with the image they are about.
_AGE_NOTE: Final = str(HeaderNote("PatientAge", ""))


@dataclass(frozen=True)
class DraftAge:
    """The age at the study a message carries: its LOINC code (reported or calculated) and its quantity."""

    code: Code
    quantity: AgeQuantity


def draft_age(header: SourceHeader, *, recorded_in: Dataset | None = None) -> DraftAge | None:
    """The age every draft carries about ``header``'s patient as an observation, or None when it has none.
    ``recorded_in``: the dataset ``header`` was read from, where that is a radtrace draft SR (the assessment ORU's
    source): its header notes say whether the age it wrote was derived."""
    quantity = age_quantity(header.age)
    if quantity is None:
        return None
    derived = header.age_derived or (recorded_in is not None and age_noted_derived(recorded_in))
    return DraftAge(AGE_CALCULATED if derived else AGE, quantity)


def age_noted_derived(sr: Dataset) -> bool:
    """Whether the SR ``sr``'s header notes (TEXT ``RT-HDR``, anywhere in its content tree) say that the Patient's
    Age it carries was derived from the birth and study dates of its first shown image. False for any other dataset
    (an image has no content tree)."""
    for text in _header_notes(sr.get("ContentSequence") or []):
        for line in text.splitlines():
            if line.startswith(_AGE_NOTE) and line.endswith(DERIVED):
                return True
    return False


def _header_notes(items: Any) -> Iterator[str]:
    for item in items:
        names = item.get("ConceptNameCodeSequence") or []
        code = names[0] if len(names) == 1 else None
        if (
            item.get("ValueType") == "TEXT"
            and code is not None
            and (code.get("CodeValue"), code.get("CodingSchemeDesignator")) == (HEADER_NOTES.value, HEADER_NOTES.scheme)
        ):
            yield str(item.get("TextValue", ""))
        yield from _header_notes(item.get("ContentSequence") or [])
