"""A patient's age, one form on every console page: "64 y", and for infants "7 mo", "3 wk" or "5 d".

The worklist row keeps the age as a DICOM Age String (PS3.5 6.2, AS: three digits and D, W, M or Y): the header's
Patient's Age (0010,1010) when it is one, else the age from Patient's Birth Date to Study Date. The pages show it with
:func:`shown_age`, which reads a kept value again, so a row kept before (a raw "58", a hostile value) shows the same
form or nothing.

A header value is read as every draft reads it (:mod:`radtrace.dicom_age`, which the drafts import too: the SR's
Patient's Age and the console's are always the same, or both absent): bare digits ("58", as the NIH ChestX-ray14
copies carry) are years; "abc", "-5Y", a control character, several values or one past
:data:`radtrace.dicom_age.MAX_YEARS` ("999Y") are no age, never shown as written; the row's age then comes from the
dates, if they give one
(:func:`radtrace.dicom_age.age_from_dates`: none when the birth date is after the study date or after today). The
drafts derive it the same way (:func:`radtrace.dicom_age.age_at_study`, one rule for the row and every draft).
"""

from __future__ import annotations

from typing import Final

from radtrace.dicom_age import dicom_age

__all__ = ["shown_age"]

_UNITS: Final = {"D": "d", "W": "wk", "M": "mo", "Y": "y"}


def shown_age(value: object) -> str | None:
    """A kept age as the pages write it ("64 y", "7 mo", "3 wk", "5 d"), or None for no age (the page's "?")."""
    age = dicom_age(value)
    if age is None:
        return None
    return f"{int(age[:3])} {_UNITS[age[3]]}"
