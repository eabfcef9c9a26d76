"""A patient's age, one form on every console page: "64 y", and for infants "7 mo", "3 wk" or "5 d".

The worklist row keeps the age as a DICOM Age String (PS3.5 6.2, AS: three digits and D, W, M or Y): the header's
Patient's Age (0010,1010) when it is one, else the age from Patient's Birth Date to Study Date. The pages show it with
:func:`shown_age`, which reads a kept value again, so a row kept before (a raw "58", a hostile value) shows the same
form or nothing.

* A header value is read as AS after its padding spaces: ``nnnD/W/M/Y``, the unit in either case, one or two digits
  as well as three ("58Y"). Bare digits ("58", as the NIH ChestX-ray14 copies carry) are years. Anything else ("abc",
  "-5Y", a control character, several values) is no age, nor is one past :data:`MAX_YEARS` ("999Y"): never shown as
  written; the row's age then comes from the dates, if they give one.
* From the dates (both 8-digit calendar dates): none when the birth date is after the study date or after today (a
  clock's or a typist's error, not a newborn). Under 2 weeks in days, under 2 months in weeks, under 2 years in
  months, then in years, as paediatric charts write it.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Final

__all__ = ["MAX_YEARS", "age_from_dates", "dicom_age", "shown_age"]

#: The oldest age shown (years): past it, a value is an error (the oldest person recorded lived to 122).
MAX_YEARS: Final = 130
_AS: Final = re.compile(r"(\d{1,3})([DWMY]?)", re.ASCII | re.IGNORECASE)
_DAYS_PER: Final = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
_UNITS: Final = {"D": "d", "W": "wk", "M": "mo", "Y": "y"}
_DATE: Final = re.compile(r"\d{8}", re.ASCII)


def dicom_age(value: object) -> str | None:
    """``value`` (a header's Patient's Age, or a kept one) as a DICOM AS such as ``"064Y"``, or None when it is no
    age (see the module's rules)."""
    if not isinstance(value, str):
        return None
    match = _AS.fullmatch(value.strip(" "))
    if match is None:
        return None
    number, unit = int(match[1]), match[2].upper() or "Y"
    if number * _DAYS_PER[unit] > MAX_YEARS * 365.25:
        return None
    return f"{number:03d}{unit}"


def age_from_dates(born: object, seen: object, today: date | None = None) -> str | None:
    """The age (AS) on the study date ``seen`` of a patient born on ``born`` (both DICOM DA, ``YYYYMMDD``), or None
    when either is no date, the birth is after the study or after ``today`` (UTC today by default), or the age is
    past :data:`MAX_YEARS`."""
    birth, study = _date(born), _date(seen)
    if birth is None or study is None:
        return None
    if today is None:
        today = datetime.now(UTC).date()
    if birth > study or birth > today:
        return None
    days = (study - birth).days
    months = (study.year - birth.year) * 12 + study.month - birth.month - (study.day < birth.day)
    if days < 14:
        return f"{days:03d}D"
    if months < 2:
        return f"{days // 7:03d}W"
    if months < 24:
        return f"{months:03d}M"
    years = months // 12
    return f"{years:03d}Y" if years <= MAX_YEARS else None


def shown_age(value: object) -> str | None:
    """A kept age as the pages write it ("64 y", "7 mo", "3 wk", "5 d"), or None for no age (the page's "?")."""
    age = dicom_age(value)
    if age is None:
        return None
    return f"{int(age[:3])} {_UNITS[age[3]]}"


def _date(value: object) -> date | None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None
