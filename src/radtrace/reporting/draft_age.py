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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from radtrace.dicom_age import AgeQuantity, age_quantity
from radtrace.reporting.codes import Code
from radtrace.reporting.header import SourceHeader

__all__ = ["AGE", "AGE_CALCULATED", "UCUM_SYSTEM", "DraftAge", "draft_age"]

_LOINC: Final = "LOINC (HL7 value set LOINCObservationActContextAgeType)"
AGE: Final = Code("30525-0", "LN", "Age", _LOINC)
AGE_CALCULATED: Final = Code("29553-5", "LN", "Age calculated", _LOINC)
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class DraftAge:
    """The age at the study a message carries: its LOINC code (reported or calculated) and its quantity."""

    code: Code
    quantity: AgeQuantity


def draft_age(header: SourceHeader) -> DraftAge | None:
    """The age every draft carries about ``header``'s patient as an observation, or None when it has none."""
    quantity = age_quantity(header.age)
    if quantity is None:
        return None
    return DraftAge(AGE_CALCULATED if header.age_derived else AGE, quantity)
