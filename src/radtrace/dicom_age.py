"""A patient's age read one way everywhere: the review console's worklist and every draft (SR, ORU, FHIR).

PS3.5 6.2 defines the Age String (AS) as four characters, ``nnnD``, ``nnnW``, ``nnnM`` or ``nnnY`` (a number of days,
weeks, months or years, ``"018M"``), from the characters 0-9, D, W, M and Y: no spaces, no sign, no other unit. Real
headers hold other forms: the NIH ChestX-ray14 copies carry bare years (``"58"``), others ``"58Y"`` or ``"058y"``.
:func:`read_age` reads a header's Patient's Age (0010,1010) leniently but never guesses beyond this:

* After any padding (spaces, other whitespace, NULs) at either end: ``\\d{1,3}`` and a unit D, W, M or Y in either
  case, or bare digits, which are years (as those copies mean them). The result is the AS ``"058Y"``, and where the
  value was not already one, :attr:`AgeReading.problem` says how it was read and what was written (never the value:
  header notes may be logged).
* Anything else is no age ("abc", "-5Y", "5.5Y", a control character inside, digits that are not ASCII), nor is one
  past :data:`MAX_YEARS` ("999Y"), nor are several values (``"58\\60"``): :attr:`AgeReading.problem` says it was
  omitted. No reader shows or writes it as it came.

:func:`age_from_dates` gives the age from Patient's Birth Date to the Study Date. :func:`age_at_study` is the one
rule of every reader: the header's Patient's Age where it is one, else the age from those dates (what a viewer shows,
and what PS3.3 C.7.2.2 means by Patient's Age: the age at the study), with :attr:`AgeReading.derived` set and a
:attr:`AgeReading.problem` saying where it came from. The drafts write it (the SR's Patient's Age; the ORU's and the
FHIR Bundle's notes say where it came from, beside the birth date they carry) and the console's worklist keeps it.

:func:`age_quantity` turns a written AS into the number and UCUM unit of time a message carries (the ORU's age OBX,
the FHIR Bundle's age Observation): ``D`` days ``d``, ``W`` weeks ``wk``, ``M`` months ``mo``, ``Y`` years ``a``, the
codes of FHIR's age-units value set (http://hl7.org/fhir/ValueSet/age-units).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

__all__ = [
    "DERIVED",
    "MAX_YEARS",
    "UCUM_AGE_UNITS",
    "AgeQuantity",
    "AgeReading",
    "age_at_study",
    "age_from_dates",
    "age_quantity",
    "dicom_age",
    "read_age",
]

#: The oldest age accepted (years): past it, a value is an error (the oldest person recorded lived to 122).
MAX_YEARS: Final = 130
_AS: Final = re.compile(r"(\d{1,3})([DWMY]?)", re.ASCII | re.IGNORECASE)
_DAYS_PER: Final = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
_UNIT_NAMES: Final = {"D": "days", "W": "weeks", "M": "months", "Y": "years"}
#: The UCUM code of each AS unit (FHIR's age-units value set: d, wk, mo, a; displayed as days, weeks, months, years).
UCUM_AGE_UNITS: Final = {"D": "d", "W": "wk", "M": "mo", "Y": "a"}
_WRITTEN_AS: Final = re.compile(r"\d{3}[DWMY]", re.ASCII)
_DATE: Final = re.compile(r"\d{8}", re.ASCII)
#: What surrounds a value without being part of it: every whitespace character (what ``str.strip()`` removes) and NUL,
#: so a value is read alike whether or not its reader stripped it first.
_PADDING: Final = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\x00"
)
_NO_AGE: Final = "not an age (PS3.5 AS: nnnD, nnnW, nnnM or nnnY, at most 130 years); omitted"
#: What a derived age's note says about where it came from (no values: header notes may be logged).
DERIVED: Final = (
    "written as the age from Patient's Birth Date (0010,0030) to Study Date (0008,0020), as the review console "
    "derives it"
)


@dataclass(frozen=True)
class AgeReading:
    """A header's Patient's Age as read: the AS, or None; and what a header note says about it ('' when nothing)."""

    age: str | None
    problem: str = ""
    #: The age is no header value but the age from the birth date to the study date (:func:`age_at_study`).
    derived: bool = False


def read_age(value: object) -> AgeReading:
    """``value`` (a header's Patient's Age as pydicom gives it: a string, several values, or None) read as a DICOM AS
    (see the module's rules)."""
    if value is None or value == "":
        return AgeReading(None)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        if len(value) <= 1:
            return read_age(value[0] if value else None)
        return AgeReading(None, f"{len(value)} values where one is allowed; omitted")
    if not isinstance(value, str):
        return AgeReading(None, _NO_AGE)
    text = value.strip(_PADDING)
    if not text:
        return AgeReading(None)
    match = _AS.fullmatch(text)
    if match is None:
        return AgeReading(None, _NO_AGE)
    number, unit = int(match[1]), match[2].upper() or "Y"
    if number * _DAYS_PER[unit] > MAX_YEARS * 365.25:
        return AgeReading(None, _NO_AGE)
    age = f"{number:03d}{unit}"
    if text == value and age == text:
        return AgeReading(age)
    how = []
    if not match[2]:
        how.append("a number without a unit, read as years")
    elif match[2] != unit:
        how.append(f"its unit in lower case, read as {_UNIT_NAMES[unit]}")
    if len(match[1]) != 3:
        how.append(f"{len(match[1])} digit{'s' if len(match[1]) > 1 else ''} where AS has 3")
    if text != value:
        how.append("padding around it")
    return AgeReading(age, f"not in PS3.5 AS form ({'; '.join(how)}); written as an AS of 3 digits and {unit}")


def dicom_age(value: object) -> str | None:
    """``value`` (a header's Patient's Age, or a kept one) as a DICOM AS such as ``"064Y"``, or None when it is no
    age (:func:`read_age`)."""
    return read_age(value).age


def age_from_dates(born: object, seen: object, today: date | None = None) -> str | None:
    """The age (AS) on the study date ``seen`` of a patient born on ``born`` (both DICOM DA, ``YYYYMMDD``), or None
    when either is no date, the birth is after the study or after ``today`` (UTC today by default), or the age is
    past :data:`MAX_YEARS`. Under 2 weeks in days, under 2 months in weeks, under 2 years in months, then in years,
    as paediatric charts write it."""
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


def age_at_study(value: object, born: object, seen: object, today: date | None = None) -> AgeReading:
    """The patient's age at the study, one rule for the console and every draft: Patient's Age ``value`` read as an AS
    (:func:`read_age`, its note kept); where it gives none (absent, or no age), the age from the birth date ``born``
    to the study date ``seen`` (DICOM DA: :func:`age_from_dates`), ``derived``, with a note that says so (and what was
    wrong with the header's value, if it had one); else no age."""
    reading = read_age(value)
    if reading.age is not None:
        return reading
    derived = age_from_dates(born, seen, today)
    if derived is None:
        return reading
    header = reading.problem.removesuffix("; omitted") if reading.problem else "absent from the header"
    return AgeReading(derived, f"{header}; {DERIVED}", derived=True)


@dataclass(frozen=True)
class AgeQuantity:
    """An age as a quantity: ``value`` units of time, ``ucum`` the unit's UCUM code, ``unit`` its name."""

    value: int
    ucum: str
    unit: str


def age_quantity(age: object) -> AgeQuantity | None:
    """The AS ``age`` as written by :func:`read_age` / :func:`age_at_study` (``"058Y"``) as a quantity (58, ``a``,
    years), or None for anything that is not exactly such an AS (three digits and an upper-case unit, at most
    :data:`MAX_YEARS`): a value read any other way never reaches a message."""
    if not isinstance(age, str) or _WRITTEN_AS.fullmatch(age) is None or read_age(age).age != age:
        return None
    unit = age[3]
    return AgeQuantity(int(age[:3]), UCUM_AGE_UNITS[unit], _UNIT_NAMES[unit])


def _date(value: object) -> date | None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None
